//! The command line as clap sees it: raw values only.
//!
//! Turning these into a validated configuration is `config::Config::resolve`'s job; running them
//! is `run`'s. Nothing here reads files or the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Compile a creator's chat history into a persona and answer fans in their voice.
#[derive(Debug, Parser)]
#[command(name = "persona", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: `persona.toml` in the working directory, if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Embed every creator turn, build the HNSW index and write one artifact file.
    Compile(CompileArgs),
    /// Print an artifact's manifest.
    Inspect(InspectArgs),
    /// Check the installation: assets, ONNX Runtime, the embedding model, the configuration.
    Doctor(DoctorArgs),
}

/// `persona compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The conversations (JSON list in the training-data format).
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,
    /// Where to write the artifact.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "artifacts/persona.bin"
    )]
    pub output: PathBuf,
    /// Share of conversations held out for eval (0 allowed).
    #[arg(long, value_name = "FRACTION")]
    pub holdout: Option<f64>,
    /// ONNX Runtime threads for embedding (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Neither read nor write the embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// `persona inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The artifact file.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `persona doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}
