//! `persona check`: the topic filter on its own, for people, scripts and the labelled set.
//!
//! Builds the filter from an artifact (its compiled configuration and example vectors) or from
//! `persona.toml` / the defaults (with `--safety`, the safety categories' check instead), then checks arguments, JSON lines from stdin, or a labelled set
//! (precision, recall, false positives, and the semantic-threshold sweep). Scoring itself is in
//! `filter_eval`.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::artifact;
use crate::cli::CheckArgs;
use crate::config::Config;
use crate::embed::{Embedder, FastEmbedder, Startup};
use crate::filter::figures;
use crate::filter::{Filter, Stage, Verdict};
use crate::paths::Assets;

/// Runs `persona check`.
pub fn run(config: &Config, args: &CheckArgs) -> Result<()> {
    let (mut filter, mut embedder) = load(config, args)?;
    let mut out = std::io::stdout().lock();
    if let Some(path) = &args.labelled {
        return labelled(&mut filter, embedder.as_mut(), path, args, &mut out);
    }
    if args.jsonl {
        if !args.texts.is_empty() {
            bail!("give texts either as arguments or on stdin with --jsonl, not both");
        }
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let value = serde_json::from_str::<serde_json::Value>(&line).ok();
            let text = value
                .as_ref()
                .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
                .with_context(|| {
                    format!(
                        "stdin line {}: expected a JSON object with a `text` string (and optionally `fan_message`), got `{}`",
                        n + 1,
                        snippet(&line)
                    )
                })?;
            let fan = value
                .as_ref()
                .and_then(|v| v.get("fan_message"))
                .and_then(|f| f.as_str());
            let verdict =
                filter.check_in_context(&text, fan, embedder.as_mut().map(|e| e as &mut dyn Embedder))?;
            serde_json::to_writer(&mut out, &line_json(&text, &verdict))?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if args.texts.is_empty() {
        bail!("nothing to check: give texts as arguments, or JSON lines on stdin with --jsonl");
    }
    for text in &args.texts {
        let verdict = filter.check(text, embedder.as_mut().map(|e| e as &mut dyn Embedder))?;
        if args.json {
            serde_json::to_writer(&mut out, &line_json(text, &verdict))?;
            writeln!(out)?;
        } else {
            match &verdict.category {
                Some(c) => writeln!(out, "blocked: {c} ({})", verdict.reason)?,
                None => writeln!(out, "clean")?,
            }
        }
    }
    Ok(())
}

fn line_json(text: &str, v: &Verdict) -> serde_json::Value {
    json!({"text": text, "blocked": v.blocked, "category": v.category, "reason": v.reason})
}

fn load(config: &Config, args: &CheckArgs) -> Result<(Filter, Option<FastEmbedder>)> {
    let (settings, examples, learned) = match (&args.artifact, args.safety) {
        (Some(path), false) => {
            let a = artifact::read(path)?;
            let dims = a.manifest.embedding.dims;
            let learned = (!a.filter.learned.categories.is_empty()).then_some((a.filter.learned, dims));
            (a.settings.filter, Some(a.filter.examples), learned)
        }
        (Some(path), true) => {
            let a = artifact::read(path)?;
            let dims = a.manifest.embedding.dims;
            let learned = (!a.filter.safety.categories.is_empty()).then_some((a.filter.safety, dims));
            (a.settings.safety.filter_settings(), None, learned)
        }
        (None, false) => (config.filter.clone(), None, None),
        (None, true) => (config.safety.filter_settings(), None, None),
    };
    let (settings, examples, learned) = match (&args.artifact, args.mood) {
        (Some(path), true) => {
            let a = artifact::read(path)?;
            if a.filter.mood.categories.is_empty() {
                bail!(
                    "`{}` has no mood classifier; compile it with `[context] mood = true`",
                    path.display()
                );
            }
            let dims = a.manifest.embedding.dims;
            (
                crate::safety::mood::filter_settings(),
                None,
                Some((a.filter.mood, dims)),
            )
        }
        (None, true) => bail!("--mood needs --artifact: the mood classifier is trained at compile"),
        _ => (settings, examples, learned),
    };
    let semantic = (settings.semantic || learned.is_some()) && !args.lexical_only;
    let mut filter = Filter::new(settings)?;
    if !semantic {
        return Ok((filter, None));
    }
    // A labelled set or a stream of lines embeds many texts; a few texts on the command line are
    // over before a full optimization would pay for itself.
    let startup = if args.labelled.is_some() || args.jsonl {
        Startup::Throughput
    } else {
        Startup::Quick
    };
    let mut embedder = FastEmbedder::load(
        &Assets::locate(),
        config.embedding.effective_threads(),
        32,
        startup,
    )
    .context("the semantic stage needs the embedding model; install it or pass --lexical-only")?;
    match examples {
        Some(e) => filter = filter.with_examples(e)?,
        None => filter.embed_examples(&mut embedder)?,
    }
    if let Some((learned, dims)) = learned {
        filter = filter.with_learned(learned, dims)?;
    }
    Ok((filter, Some(embedder)))
}

/// The fan messages of `--in-context`: the `text` of each JSON line of `path`, at least one.
fn fan_messages(path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Line {
        text: String,
    }
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("reading the fan messages of --in-context `{}`", path.display()))?;
    let shape = "{\"text\": string} (one fan message per line)";
    let pool: Vec<String> = crate::jsonl::parse::<Line>(&path.display().to_string(), &content, shape)?
        .into_iter()
        .map(|(_, line)| line.text)
        .filter(|text| !text.trim().is_empty())
        .collect();
    if pool.is_empty() {
        bail!(
            "`{}` holds no fan message; --in-context needs JSON lines with a non-empty \"text\"",
            path.display()
        );
    }
    Ok(pool)
}

fn labelled(
    filter: &mut Filter,
    mut embedder: Option<&mut FastEmbedder>,
    path: &Path,
    args: &CheckArgs,
    out: &mut impl Write,
) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the labelled set `{}`", path.display()))?;
    let name = path.display().to_string();
    // The same reader compile trains from: an unknown category or an empty text is an error
    // naming the line, not a category the figures silently never see.
    let mut items = if args.mood {
        crate::safety::mood::parse(&name, &text)?
    } else {
        let categories: Vec<String> = filter
            .settings()
            .categories
            .iter()
            .map(|c| c.name.clone())
            .collect();
        crate::filter::train::parse_labelled(&name, &text, &categories)?
    };
    if let Some(fans) = &args.in_context {
        let pool = fan_messages(fans)?;
        for item in items.iter_mut().filter(|i| i.fan_message.is_none()) {
            let pick = xxhash_rust::xxh3::xxh3_64(item.text.as_bytes()) % pool.len() as u64;
            item.fan_message = pool.get(pick as usize).cloned();
        }
    }
    let labels: Vec<Option<String>> = items.iter().map(|i| i.category.clone()).collect();
    let mut predictions = Vec::new();
    let mut stages = Vec::new();
    let mut lexical = Vec::new();
    let mut semantic = Vec::new();
    for item in &items {
        let verdict = filter.check_in_context(
            &item.text,
            item.fan_message.as_deref(),
            embedder.as_deref_mut().map(|e| e as &mut dyn Embedder),
        )?;
        predictions.push(verdict.category.clone());
        stages.push(verdict.stage);
        if args.calibrate {
            lexical.push(filter.check_lexical(&item.text).blocked);
            let e = embedder
                .as_deref_mut()
                .context("--calibrate needs the semantic stage; drop --lexical-only")?;
            semantic.push(filter.semantic_score(&item.text, e)?);
        }
    }
    let report = figures::score(&labels, &predictions);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{} labelled texts from `{}`\n", items.len(), path.display())?;
        if args.mood {
            let exact = labels.iter().zip(&predictions).filter(|(l, p)| l == p).count();
            writeln!(
                out,
                "accuracy, the exact mood (neutral included): {exact}/{} = {:.3}\n",
                items.len(),
                exact as f64 / items.len().max(1) as f64
            )?;
        }
        write!(out, "{}", figures::to_markdown(&report))?;
        if let Some(learned) = filter.learned() {
            writeln!(
                out,
                "\nlearned stage, cross-validated on its training data at compile:\n"
            )?;
            writeln!(out, "| category | recall | false positive rate | precision | threshold |\n|---|---:|---:|---:|---:|")?;
            for c in &learned.categories {
                let cv = &c.model.cv;
                writeln!(
                    out,
                    "| {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                    c.name, cv.recall, cv.false_positive_rate, cv.precision, c.model.threshold
                )?;
            }
        }
    }
    if !args.json {
        write!(out, "{}", stage_table(&labels, &predictions, &stages))?;
        if let (Some(path), false, false) = (&args.artifact, args.safety, args.mood) {
            let (blocked, total) = creator_replies_blocked(filter, embedder, path)?;
            writeln!(
                out,
                "\nthe creator's own replies in `{}`: {blocked} of {total} blocked ({:.2}%)",
                path.display(),
                100.0 * blocked as f64 / total.max(1) as f64
            )?;
        }
    }
    if args.show_errors {
        writeln!(out, "\nerrors:")?;
        for ((item, label), prediction) in items.iter().zip(&labels).zip(&predictions) {
            if label.is_some() != prediction.is_some() {
                writeln!(out, "  labelled {:?}, got {:?}: {}", label, prediction, item.text)?;
            }
        }
    }
    if args.calibrate {
        let rows = figures::sweep(&labels, &lexical, &semantic);
        writeln!(
            out,
            "\n| threshold | min recall | false positive rate |\n|---:|---:|---:|"
        )?;
        for r in rows.iter().step_by(5) {
            writeln!(
                out,
                "| {:.2} | {:.3} | {:.3} |",
                r.threshold, r.min_recall, r.false_positive_rate
            )?;
        }
        match figures::best_threshold(&rows, 0.02) {
            Some(r) => writeln!(
                out,
                "\nlowest threshold with at most 2% false positives: {:.2} (min recall {:.3}, false positives {:.3})",
                r.threshold, r.min_recall, r.false_positive_rate
            )?,
            None => writeln!(out, "\nno threshold keeps false positives within 2%")?,
        }
    }
    Ok(())
}

/// Which stage caught each hit: per labelled category (and the benign texts' false positives),
/// how many blocks each stage made.
fn stage_table(
    labels: &[Option<String>],
    predictions: &[Option<String>],
    stages: &[Option<Stage>],
) -> String {
    use std::collections::BTreeMap;
    let order = [
        Stage::Lexicon,
        Stage::Pattern,
        Stage::Detector,
        Stage::Learned,
        Stage::Semantic,
    ];
    let mut rows: BTreeMap<String, BTreeMap<Stage, usize>> = BTreeMap::new();
    for ((label, prediction), stage) in labels.iter().zip(predictions).zip(stages) {
        if let (Some(_), Some(stage)) = (prediction, stage) {
            let row = label.clone().unwrap_or_else(|| "benign (false positives)".into());
            *rows.entry(row).or_default().entry(*stage).or_default() += 1;
        }
    }
    let mut out = String::from("\nwhich stage blocked:\n\n| labelled | ");
    out.push_str(&order.iter().map(|s| s.name()).collect::<Vec<_>>().join(" | "));
    out.push_str(" |\n|---|");
    out.push_str(&"---:|".repeat(order.len()));
    out.push('\n');
    for (row, counts) in &rows {
        let cells: Vec<String> = order
            .iter()
            .map(|s| counts.get(s).copied().unwrap_or(0).to_string())
            .collect();
        out.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
    }
    out
}

/// The creator's own replies in the artifact's conversations (each once, with the fan message it
/// answered) that the filter blocks, and how many there are.
fn creator_replies_blocked(
    filter: &Filter,
    mut embedder: Option<&mut FastEmbedder>,
    path: &Path,
) -> Result<(usize, usize)> {
    let a = artifact::read(path)?;
    let mut seen = std::collections::HashSet::new();
    let (mut blocked, mut total) = (0, 0);
    for i in 0..a.conversations.len() {
        let c = a.conversations.get(i)?;
        let mut fan: Option<String> = None;
        for m in &c.messages {
            if !m.from_creator {
                fan = Some(m.content.clone());
                continue;
            }
            if !seen.insert(m.content.clone()) {
                continue;
            }
            total += 1;
            let v = filter.check_in_context(
                &m.content,
                fan.as_deref(),
                embedder.as_deref_mut().map(|e| e as &mut dyn Embedder),
            )?;
            blocked += usize::from(v.blocked);
        }
    }
    Ok((blocked, total))
}

fn snippet(line: &str) -> String {
    line.chars().take(60).collect()
}
