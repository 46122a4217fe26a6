//! Runs one parsed command line: resolves the configuration and hands off to the pipeline.
//!
//! Owns what goes to stdout (answers and `--json`) versus stderr (everything else) and the exit
//! code of each command. The pipelines themselves live in their own modules.

pub mod ask;
pub mod check;
pub mod compile;
pub mod doctor;
pub mod eval;
pub mod fans;
pub mod inspect;
pub mod serve;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{
    AskArgs, CheckArgs, Cli, Command, CompileArgs, DoctorArgs, InspectArgs, LlmArgs, ServeArgs,
};
use crate::config::{Config, Overrides};
use crate::embed::cache::EmbedCache;
use crate::embed::{Embedder, FastEmbedder, Startup};
use crate::paths::{self, Assets};

use crate::artifact;

/// Runs the command and returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let base = Overrides {
        config: cli.config.clone(),
        ..Overrides::default()
    };
    match cli.command {
        Command::Compile(args) => run_compile(base, args),
        Command::Inspect(args) => run_inspect(args),
        Command::Ask(args) => run_ask(base, args),
        Command::Check(args) => run_check(base, args),
        Command::Eval(args) => eval::run(base, args),
        Command::Serve(args) => run_serve(base, args),
        Command::Doctor(args) => run_doctor(base, args),
        Command::Fans(args) => {
            let config = Config::resolve(&base)?;
            fans::run(&config, &args).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn run_compile(base: Overrides, args: CompileArgs) -> Result<ExitCode> {
    let config = Config::resolve(&Overrides {
        holdout: args.holdout,
        threads: args.threads,
        ..base
    })?;
    let mut embedder = FastEmbedder::load(
        &Assets::locate(),
        config.embedding.effective_threads(),
        config.embedding.batch_size,
        Startup::Throughput,
    )?;
    let mut cache = if args.no_cache {
        EmbedCache::disabled(embedder.info())
    } else {
        EmbedCache::open(&paths::cache_dir().join("embeddings"), embedder.info())
    };
    let summary = compile::run(&config, &args.dataset, &args.output, &mut embedder, &mut cache)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "compiled {} examples from {} conversations ({} held out) into {} in {:.1}s: {} embedded, {} from cache",
            summary.examples,
            summary.conversations,
            summary.heldout_conversations,
            summary.artifact.display(),
            summary.seconds,
            summary.embedded,
            summary.cached
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_ask(base: Overrides, args: AskArgs) -> Result<ExitCode> {
    let overrides = Overrides {
        k: args.k,
        ..llm_overrides(base, &args.llm)
    };
    let config = Config::resolve(&overrides)?;
    ask::run(&config, &args)?;
    Ok(ExitCode::SUCCESS)
}

fn run_serve(base: Overrides, args: ServeArgs) -> Result<ExitCode> {
    let config = Config::resolve(&llm_overrides(base, &args.llm))?;
    serve::run(&config, &args)?;
    Ok(ExitCode::SUCCESS)
}

fn llm_overrides(base: Overrides, l: &LlmArgs) -> Overrides {
    Overrides {
        llm_preset: l.llm_preset.clone(),
        llm_url: l.llm_url.clone(),
        llm_model: l.llm_model.clone(),
        temperature: l.temperature,
        max_tokens: l.max_tokens,
        timeout_secs: l.timeout,
        seed: l.seed,
        ..base
    }
}

fn run_check(base: Overrides, args: CheckArgs) -> Result<ExitCode> {
    let config = Config::resolve(&base)?;
    check::run(&config, &args)?;
    Ok(ExitCode::SUCCESS)
}

fn run_inspect(args: InspectArgs) -> Result<ExitCode> {
    let artifact = artifact::read(&args.artifact)?;
    if args.verify {
        artifact.verify_all()?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &inspect::to_json(&artifact))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", inspect::to_text(&artifact))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_doctor(base: Overrides, args: DoctorArgs) -> Result<ExitCode> {
    let findings = doctor::run(&base);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &findings)?;
        writeln!(out)?;
    } else {
        for f in &findings {
            let status = match (f.ok, f.required) {
                (true, _) => "ok  ",
                (false, true) => "FAIL",
                (false, false) => "warn",
            };
            writeln!(out, "{status} {:<32} {}", f.check, f.detail)?;
            if let Some(fix) = &f.fix {
                writeln!(out, "     fix: {fix}")?;
            }
        }
    }
    Ok(if findings.iter().all(|f| f.ok || !f.required) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
