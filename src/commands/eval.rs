//! `persona eval`: runs the systems on the held-out turns, builds the report and applies the gate.
//!
//! The metrics, the systems and the validity check are in [`crate::eval`]; the report's layout is
//! in [`crate::eval::report`]. This module only wires them to the command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::answer::{Persona, Sampling};
use crate::cli::EvalArgs;
use crate::commands::compile::progress_bar;
use crate::config::{Config, Overrides};
use crate::embed::Startup;
use crate::eval::report::{self, Report};
use crate::eval::{
    difference, generate, items, read_responses, score, validity, ItemScore, Reference, Reply, System,
    TrainingReplies,
};

/// Runs `persona eval`: the report on stdout (and in `--report DIR`); with `--gate`, exit 1 when a
/// gate condition fails, otherwise the failures are printed as warnings and the exit code is 0.
pub fn run(base: Overrides, args: EvalArgs) -> Result<ExitCode> {
    let mut overrides = super::llm_overrides(base, &args.llm);
    overrides.temperature = Some(args.llm.temperature.unwrap_or(0.0));
    overrides.seed = Some(args.llm.seed.unwrap_or(7));
    let config = Config::resolve(&overrides)?;
    if let Some(set) = &args.injection {
        return injection(&config, &args, set);
    }
    if args.retrieval {
        return retrieval(&config, &args);
    }
    let systems = args
        .systems
        .iter()
        .map(|s| System::parse(s.trim()))
        .collect::<Result<Vec<_>>>()?;
    let contrast = args.contrast.clone().unwrap_or_else(|| {
        let local = std::path::PathBuf::from("eval/contrast.jsonl");
        if local.exists() {
            local
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("eval")
                .join("contrast.jsonl")
        }
    });
    let options = Options {
        artifact: args.artifact.clone(),
        heldout: args.heldout.clone(),
        responses: args.responses.clone(),
        limit: args.limit,
        systems,
        contrast,
        min_validity: args.min_validity,
        min_other_validity: args.min_other_validity,
        seed: config.llm.seed.unwrap_or(7),
    };
    let report = evaluate(&config, &options)?;
    if let Some(dir) = &args.report {
        report::write_dir(&report, dir)?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::markdown(&report))?;
    }
    let failures = gate_failures(&report, args.gate);
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let label = if args.gate { "eval gate" } else { "warning" };
    for f in &failures {
        eprintln!("{label}: {f}");
    }
    Ok(if args.gate {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `persona eval --injection FILE`: every attack through the real pipeline, then the tally.
fn injection(config: &Config, args: &EvalArgs, set: &std::path::Path) -> Result<ExitCode> {
    let content = std::fs::read_to_string(set)
        .with_context(|| format!("reading the injection set `{}`", set.display()))?;
    let name = set.display().to_string();
    let cases = crate::eval::injection::parse(&name, &content)?;
    let persona = Persona::open(&args.artifact, config, Startup::Throughput)?;
    let client = crate::llm::LlmClient::new(config.llm.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bar = progress_bar(cases.len() as u64, "injection");
    let mut tick = || bar.inc(1);
    let report = rt.block_on(crate::eval::injection::run(
        &persona,
        &client,
        &name,
        &cases,
        config.llm.prefill,
        jiff::Timestamp::now(),
        &mut tick,
    ))?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", crate::eval::injection::markdown(&report))?;
    }
    let t = &report.total;
    let failed = t.prompt_text + t.violations + t.other_fans_data;
    if failed > 0 {
        let label = if args.gate { "injection gate" } else { "warning" };
        eprintln!(
            "{label}: {} replies carried prompt text, {} violated a category, {} named another fan's data",
            t.prompt_text, t.violations, t.other_fans_data
        );
        if args.gate {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `persona eval` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The artifact.
    pub artifact: PathBuf,
    /// A held-out set instead of the artifact's.
    pub heldout: Option<PathBuf>,
    /// Replies to score instead of generating.
    pub responses: Option<PathBuf>,
    /// Score only the first N turns.
    pub limit: Option<usize>,
    /// LLM systems to run.
    pub systems: Vec<System>,
    /// The contrast set for validity.
    pub contrast: PathBuf,
    /// Validity floor against the assistant replies.
    pub min_validity: f64,
    /// Validity floor against another creator's replies.
    pub min_other_validity: f64,
    /// Seed for random demos and the bootstrap.
    pub seed: u64,
}

/// Runs the evaluation and builds the report. Nothing is written here, so a failure midway never
/// leaves a partial report.
pub fn evaluate(config: &Config, options: &Options) -> Result<Report> {
    let persona = Persona::open(&options.artifact, config, Startup::Throughput)?;
    let profile = persona.profile().clone();

    let mut items = items(&persona, options.heldout.as_deref())?;
    if let Some(limit) = options.limit {
        items.truncate(limit.max(1));
    }
    let training = TrainingReplies::of(&persona)?;
    let validity = validity(
        &persona,
        &profile,
        &options.contrast,
        options.min_validity,
        options.min_other_validity,
        &training,
    )?;
    let reals: Vec<&str> = items.iter().map(|i| i.real.as_str()).collect();
    let real_vectors = persona.embed(&reals)?;

    let mut runs: Vec<(System, Vec<Reply>)> = Vec::new();
    if let Some(path) = &options.responses {
        runs.push((System::Responses, read_responses(path, items.len())?));
    } else {
        let client = crate::llm::LlmClient::new(config.llm.clone())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let bar = progress_bar((items.len() * options.systems.len()) as u64, "eval");
        let sampling = Sampling::new(3, config.llm.temperature, Some(options.seed))?;
        for &system in &options.systems {
            let mut tick = || bar.inc(1);
            let prefill = config.llm.prefill;
            let generated = generate(&persona, &client, system, &items, prefill, sampling, &mut tick);
            runs.extend(rt.block_on(generated)?);
        }
        bar.finish_and_clear();
    }

    let mut systems = BTreeMap::new();
    let mut all_items = Vec::new();
    let mut by_system: BTreeMap<System, Vec<ItemScore>> = BTreeMap::new();
    let reference = Reference {
        items: &items,
        real_vectors: &real_vectors,
        training: &training,
    };
    for (system, replies) in &runs {
        let (summary, scores) = score(&persona, &profile, *system, &reference, replies, options.seed)?;
        systems.insert(system.name(), summary);
        by_system.insert(*system, scores.clone());
        all_items.extend(scores);
    }
    let mut differences = BTreeMap::new();
    if let (Some(knn), Some(zero)) = (by_system.get(&System::Knn), by_system.get(&System::ZeroShot)) {
        let mut d = BTreeMap::new();
        d.insert("style", difference(knn, zero, |s| s.style, options.seed));
        d.insert(
            "voice_fidelity",
            difference(knn, zero, |s| s.voice_fidelity, options.seed),
        );
        d.insert("semantic", difference(knn, zero, |s| s.semantic, options.seed));
        differences.insert("knn - zero_shot".to_string(), d);
    }
    if let (Some(best), Some(first)) = (by_system.get(&System::BestOf3), by_system.get(&System::Sampled1)) {
        let mut d = BTreeMap::new();
        d.insert("style", difference(best, first, |s| s.style, options.seed));
        d.insert(
            "voice_fidelity",
            difference(best, first, |s| s.voice_fidelity, options.seed),
        );
        differences.insert("best_of_3 - sampled_1".to_string(), d);
    }
    let settings = serde_json::json!({
        "artifact": options.artifact,
        "model": config.llm.model,
        "base_url": config.llm.base_url,
        "temperature": config.llm.temperature,
        "seed": options.seed,
        "k": persona.k(),
        "heldout": options.heldout.as_ref().map_or("artifact".to_string(), |p| p.display().to_string()),
        "responses": options.responses,
    });
    Ok(Report {
        settings,
        turns: items.len(),
        systems,
        differences,
        validity,
        items: all_items,
        turn_texts: items
            .iter()
            .map(|i| crate::eval::report::TurnText {
                conversation: i.conversation.clone(),
                fan: i
                    .history
                    .iter()
                    .rev()
                    .find(|m| !m.from_creator)
                    .map(|m| m.content.clone())
                    .unwrap_or_default(),
                real: i.real.clone(),
            })
            .collect(),
    })
}

/// The reasons a report fails the CI gate, if any.
pub fn gate_failures(report: &Report, require_knn_beats_zero_shot: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let v = &report.validity;
    if v.style < v.floor || v.voice_fidelity < v.floor {
        failures.push(format!(
            "the metric cannot tell the creator's voice from an assistant's well enough: style {:.3}, voice_fidelity {:.3}, floor {:.2}",
            v.style, v.voice_fidelity, v.floor
        ));
    }
    if let Some(o) = &v.other_creator {
        if o.style < o.floor || o.voice_fidelity < o.floor {
            failures.push(format!(
                "the metric cannot tell the creator from another creator well enough: style {:.3}, voice_fidelity {:.3}, floor {:.2}",
                o.style, o.voice_fidelity, o.floor
            ));
        }
    }
    for (name, s) in &report.systems {
        if s.violations.final_ > 0.0 {
            failures.push(format!(
                "{name}: {:.1}% of final replies violate the filter",
                100.0 * s.violations.final_
            ));
        }
    }
    if require_knn_beats_zero_shot {
        match (report.systems.get("knn"), report.systems.get("zero_shot")) {
            (Some(k), Some(z)) if k.style.mean > z.style.mean => {}
            (Some(k), Some(z)) => failures.push(format!(
                "knn does not beat zero_shot on style ({:.3} vs {:.3})",
                k.style.mean, z.style.mean
            )),
            _ => failures.push("the gate needs both knn and zero_shot in --systems".into()),
        }
    }
    failures
}

/// `persona eval --retrieval`: the retrievers compared on every held-out turn, no LLM.
fn retrieval(config: &Config, args: &EvalArgs) -> Result<ExitCode> {
    let persona = Persona::open(&args.artifact, config, Startup::Throughput)?;
    let mut all = items(&persona, args.heldout.as_deref())?;
    if let Some(n) = args.limit {
        all.truncate(n);
    }
    let report = crate::eval::retrieval::run(&persona, &all, config.llm.seed.unwrap_or(7))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", crate::eval::retrieval::markdown(&report))?;
    }
    let failures = crate::eval::retrieval::gate_failures(&report);
    let label = if args.gate { "eval gate" } else { "warning" };
    for f in &failures {
        eprintln!("{label}: {f}");
    }
    Ok(if args.gate && !failures.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
