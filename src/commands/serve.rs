//! `persona serve`: checks the command line, loads the creators and the history store, and
//! starts the service in [`crate::serve`].
//!
//! Owns the translation of flags and configuration into [`crate::serve::ServeOptions`] and the
//! start-up errors a user sees (a bad address, an unset token variable, an artifact that does not
//! load, a history database that cannot be opened).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::answer::persona::{shared_embedder, SharedEmbedder};
use crate::answer::Persona;
use crate::cli::ServeArgs;
use crate::config::{Config, RuntimeSettings};
use crate::history::{self, HistoryStore};
use crate::llm::LlmClient;
use crate::paths::Assets;
use crate::serve::{self, AppState, Creators, Loader, ServeOptions, Source};

/// Runs `persona serve`.
pub fn run(config: &Config, args: &ServeArgs) -> Result<()> {
    let addr: std::net::SocketAddr = args
        .addr
        .parse()
        .with_context(|| format!("--addr `{}` is not an address such as 127.0.0.1:7878", args.addr))?;
    let token = match &args.token_env {
        Some(var) => Some(crate::config::env(var).with_context(|| {
            format!("--token-env names `{var}`, but that environment variable is empty or unset; export the token first")
        })?),
        None => None,
    };
    anyhow::ensure!(
        !args.console || token.is_some(),
        "--console needs --token-env: the console's calls change histories and must carry a token; export one (e.g. `export PERSONA_TOKEN=$(openssl rand -hex 16)`) and add `--token-env PERSONA_TOKEN`"
    );
    anyhow::ensure!(args.rate_per_minute > 0, "--rate-per-minute must be at least 1");
    anyhow::ensure!(
        args.client_rate_per_minute > 0,
        "--client-rate-per-minute must be at least 1"
    );
    let source = match (&args.artifacts, args.artifact.as_slice()) {
        (Some(dir), _) => Source::Dir(dir.clone()),
        (None, []) => Source::Files(vec![PathBuf::from("artifacts/persona.bin")]),
        (None, files) => Source::Files(files.to_vec()),
    };
    // One embedding model serves every creator.
    let embedder = shared_embedder(&Assets::locate(), config.embedding.effective_threads())?;
    let creators = Creators::load(source, loader(embedder, config.runtime.clone()))?;
    let client = LlmClient::new(config.llm.clone())?;
    let location = history::Location::resolve(args.history.as_deref(), config.history.location()?.as_deref());
    let mut store = history::open(&location)?;
    adopt_old_histories(&mut store, &creators)?;
    let llm = &config.llm;
    // One candidate's worst case: every attempt (and the judge) with every retry timing out.
    let per_candidate =
        llm.timeout * (llm.retries + 1) * (config.filter.attempts + 1) * 2 + Duration::from_secs(10);
    let options = ServeOptions {
        addr,
        token,
        body_limit: args.body_limit,
        rate_per_minute: args.rate_per_minute,
        client_rate_per_minute: args.client_rate_per_minute,
        max_queue: args.max_queue,
        llm_concurrency: args.llm_concurrency,
        prefill: llm.prefill,
        temperature: llm.temperature,
        seed: llm.seed,
        llm_base_url: Some(llm.base_url.clone()),
        request_timeout: per_candidate,
        reload_every: (args.reload_every > 0).then(|| Duration::from_secs(args.reload_every)),
        review: args.review,
        console: args.console,
    };
    serve::run(AppState::new(creators, client, store, options))
}

fn loader(embedder: SharedEmbedder, runtime: RuntimeSettings) -> Loader {
    Box::new(move |path| Persona::load_sharing(path, &embedder, &runtime))
}

/// Histories stored before they were kept per creator belong to the creator when there is only
/// one; with several, they wait for `persona fans` and a warning says so.
fn adopt_old_histories(store: &mut HistoryStore, creators: &Creators) -> Result<()> {
    let all = creators.all();
    if let [only] = all.as_slice() {
        let n = store.claim_unassigned(only.creator())?;
        if n > 0 {
            eprintln!(
                "persona serve: {n} fan(s) stored before histories were kept per creator now belong to {}",
                only.creator()
            );
        }
    } else {
        let n = store.unassigned()?;
        if n > 0 {
            eprintln!(
                "persona serve: warning: {n} fan(s) in `{}` were stored before histories were kept per creator and belong to none of the {} creators served; serve their creator alone once to assign them",
                store.describe(),
                all.len()
            );
        }
    }
    Ok(())
}
