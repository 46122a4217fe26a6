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
    /// Answer a fan in the creator's voice (a chat loop when no message is given).
    Ask(AskArgs),
    /// Check texts with the topic filter, or score the filter on a labelled set.
    Check(CheckArgs),
    /// Score voice fidelity on held-out turns for zero-shot, random-k and KNN few-shot.
    Eval(EvalArgs),
    /// Serve the persona over HTTP (OpenAI-compatible chat completions and a native reply API).
    Serve(ServeArgs),
    /// Check the installation: assets, ONNX Runtime, the embedding model, the configuration.
    Doctor(DoctorArgs),
    /// List the fans in the history database and clear handoffs to a human.
    Fans(FansArgs),
}

/// `persona fans`.
#[derive(Debug, Args)]
pub struct FansArgs {
    /// The history: an SQLite file or a postgres:// URL (default: `[history]` in persona.toml,
    /// else history.sqlite3 in the per-user data directory).
    #[arg(long, global = true, value_name = "FILE|URL")]
    pub history: Option<String>,
    /// Only the fans of this creator (the name in the artifact, as `persona inspect` shows it).
    #[arg(long, global = true, value_name = "NAME")]
    pub creator: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: FansCommand,
}

/// The `persona fans` subcommands.
#[derive(Debug, Subcommand)]
pub enum FansCommand {
    /// Every fan, most recent first, with open handoffs marked.
    List {
        /// Only fans with an open handoff.
        #[arg(long)]
        handoff: bool,
        /// One JSON object per fan.
        #[arg(long)]
        json: bool,
    },
    /// Close a fan's open handoffs: a human has taken over and the persona may answer again.
    /// With several creators in the database, name the fan's with --creator.
    ClearHandoff {
        /// The fan id.
        #[arg(value_name = "ID")]
        fan: String,
    },
}

/// `persona ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The fan's message; without it, an interactive chat starts.
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,
    /// The compiled artifact.
    #[arg(long, value_name = "FILE", default_value = "artifacts/persona.bin")]
    pub artifact: PathBuf,
    /// Keep this fan's conversation in the history database and continue it.
    #[arg(long, value_name = "ID")]
    pub fan: Option<String>,
    /// The moment of the answer (RFC 3339), instead of the clock.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Demos per answer (default: the artifact's).
    #[arg(long, value_name = "N")]
    pub k: Option<usize>,
    /// Print the prompt and the demos without calling the LLM.
    #[arg(long)]
    pub dry_run: bool,
    /// Best-of-N in voice: generate N candidates and reply with the one closest to the creator's style.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub candidates: u32,
    /// Print the prompt to stderr before the answer.
    #[arg(long)]
    pub show_prompt: bool,
    /// Print `{reply, demos, context, attempts}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// The history: an SQLite file or a postgres:// URL (default: `[history]` in persona.toml,
    /// else history.sqlite3 in the per-user data directory).
    #[arg(long, value_name = "FILE|URL")]
    pub history: Option<String>,
    /// LLM settings.
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// Flags that override the `[llm]` settings.
#[derive(Debug, Args, Default)]
pub struct LlmArgs {
    /// Provider preset: local, together, openai or ollama.
    #[arg(long, value_name = "NAME")]
    pub llm_preset: Option<String>,
    /// Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1.
    #[arg(long, value_name = "URL")]
    pub llm_url: Option<String>,
    /// Model name.
    #[arg(long, value_name = "NAME")]
    pub llm_model: Option<String>,
    /// Sampling temperature.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Tokens to generate at most.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    /// Seconds to wait for the LLM per request.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Sampling seed, where the provider supports it.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// `persona compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The conversations (JSON list in the training-data format).
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,
    /// Where to write the artifact.
    #[arg(short, long, value_name = "FILE", default_value = "artifacts/persona.bin")]
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

/// `persona check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Texts to check.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Read lines of `{"text": ...}` on stdin and write one JSON verdict per line.
    #[arg(long)]
    pub jsonl: bool,
    /// Print verdicts for TEXT arguments as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Use this artifact's compiled filter (default: persona.toml or the defaults).
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// Skip the semantic stage (no embedding model needed).
    #[arg(long)]
    pub lexical_only: bool,
    /// Score the filter on a labelled JSON-lines set (`{"text", "category"}` per line).
    #[arg(long, value_name = "FILE")]
    pub labelled: Option<PathBuf>,
    /// With --labelled: sweep the semantic threshold and print the calibration table.
    #[arg(long, requires = "labelled")]
    pub calibrate: bool,
    /// With --labelled: list the texts the filter gets wrong.
    #[arg(long, requires = "labelled")]
    pub show_errors: bool,
    /// With --labelled: judge each text that has no fan message as the answer to one of this
    /// file's fan messages (JSON lines with "text", e.g. eval/mood_labelled.jsonl), chosen by a
    /// hash of the text, the way every reply is judged at run time.
    #[arg(long, value_name = "FILE", requires = "labelled", conflicts_with = "mood")]
    pub in_context: Option<PathBuf>,
    /// Check fan messages with the safety categories (minor, crisis) instead of the topic filter.
    #[arg(long)]
    pub safety: bool,
    /// Read fan messages' mood with the artifact's mood classifier instead (with --labelled: a
    /// `{"text", "mood"}` set, `neutral` for none).
    #[arg(long, conflicts_with = "safety", requires = "artifact")]
    pub mood: bool,
}

/// `persona eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The compiled artifact.
    #[arg(long, value_name = "FILE", default_value = "artifacts/persona.bin")]
    pub artifact: PathBuf,
    /// Held-out conversations in the training-data schema (default: the artifact's held-out set).
    #[arg(long, value_name = "FILE")]
    pub heldout: Option<PathBuf>,
    /// Score these replies (`{"index", "response"}` per line) as system `responses`, without an LLM.
    #[arg(long, value_name = "FILE")]
    pub responses: Option<PathBuf>,
    /// Run a prompt-injection set (`{"text", "attack"}` per line, e.g. eval/injection.jsonl)
    /// through the pipeline instead, and count replies carrying prompt text, violations and
    /// other fans' data; with --gate, any such reply fails.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["responses", "heldout"])]
    pub injection: Option<PathBuf>,
    /// Score only the retrieval, with no LLM: how close each retriever's demos (knn, random_k,
    /// bm25, oracle) come to the real reply, on every held-out turn. With --gate, knn must beat
    /// random_k.
    #[arg(long, conflicts_with_all = ["responses", "injection"])]
    pub retrieval: bool,
    /// Score only the first N held-out turns.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Systems to run, comma-separated: zero_shot, random_k, knn, best_of_3 (which also reports sampled_1).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "zero_shot,random_k,knn",
        value_delimiter = ','
    )]
    pub systems: Vec<String>,
    /// The contrast set that checks the metric itself.
    #[arg(long, value_name = "FILE")]
    pub contrast: Option<PathBuf>,
    /// Pairwise accuracy the metric must reach on the contrast set.
    #[arg(long, value_name = "A", default_value_t = 0.85)]
    pub min_validity: f64,
    /// Pairwise accuracy the metric must reach against another creator's replies (the contrast
    /// set's optional `other` field).
    #[arg(long, value_name = "A", default_value_t = 0.75)]
    pub min_other_validity: f64,
    /// Write report.md, report.json and report.svg here.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Exit 1 unless knn beats zero_shot on style, no final reply violates the filter, and validity holds.
    #[arg(long)]
    pub gate: bool,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// LLM settings (eval runs at temperature 0 with seed 7 unless told otherwise).
    #[command(flatten)]
    pub llm: LlmArgs,
}

/// `persona serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A compiled artifact; repeat it to speak as several creators (default:
    /// artifacts/persona.bin). A request's `model` (or `creator`) picks one by name.
    #[arg(long, value_name = "FILE", conflicts_with = "artifacts")]
    pub artifact: Vec<PathBuf>,
    /// Serve every `*.bin` artifact in this directory, one creator each; files added, replaced or
    /// removed later are picked up.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Seconds between checks for replaced artifact files (0: reload only on SIGHUP).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub reload_every: u64,
    /// Review mode: `/v1/reply` and chat completions answer `202` with a draft that a person
    /// approves (optionally edited), regenerates or rejects through `/v1/drafts`; only approved
    /// text enters the history.
    #[arg(long)]
    pub review: bool,
    /// Serve the chatters' console, a web page at `/` (needs --token-env: the page's calls carry
    /// the token).
    #[arg(long)]
    pub console: bool,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// Environment variable holding the bearer token clients must send (no token: no auth).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// The history: an SQLite file or a postgres:// URL (default: `[history]` in persona.toml,
    /// else history.sqlite3 in the per-user data directory).
    #[arg(long, value_name = "FILE|URL")]
    pub history: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Messages per fan per minute.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rate_per_minute: usize,
    /// Requests per client address per minute, on every /v1 route.
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub client_rate_per_minute: usize,
    /// Requests worked on at once (waiting for their fan's turn, the store or the LLM); more are
    /// refused at once with 503 and Retry-After.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_queue: usize,
    /// Requests that talk to the LLM at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub llm_concurrency: usize,
    /// LLM settings.
    #[command(flatten)]
    pub llm: LlmArgs,
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
    /// Also verify every byte now: opening checks the small sections and leaves the vectors and
    /// conversations to be verified block by block as they are read.
    #[arg(long)]
    pub verify: bool,
}

/// `persona doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}
