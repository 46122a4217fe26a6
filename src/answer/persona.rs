//! The loaded persona: the artifact with its index, filter and style profile, an embedder and the
//! runtime settings, ready to answer.
//!
//! Owns loading (the artifact and the embedding model in parallel, then every cross-check) and
//! the small services the pipeline stages share: embedding, filtering and timing. The pipeline
//! itself is in [`crate::answer`]. Every method takes `&self`, so one loaded persona serves
//! concurrent requests; the embedding model is a shared service that batches their texts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::artifact::{self, Artifact};
use crate::config::RuntimeSettings;
use crate::embed::service::{EmbedService, EmbedStats};
use crate::embed::{dot, Embedder, FastEmbedder, Startup};
use crate::eval::style::StyleProfile;
use crate::filter::{Filter, Verdict};
use crate::index::Index;
use crate::paths::Assets;
use crate::safety::mood::MoodReader;
use crate::safety::{Handoff, Safety};

/// An embedding model several personas can share (a server with many creators loads it once);
/// concurrent requests share its model calls.
pub type SharedEmbedder = Arc<EmbedService>;

/// Texts per shared model call.
const EMBED_BATCH: usize = 32;

/// Loads the embedding model to share between personas.
pub fn shared_embedder(assets: &Assets, threads: usize) -> Result<SharedEmbedder> {
    let embedder: Box<dyn Embedder + Send> = Box::new(FastEmbedder::load(
        assets,
        threads,
        EMBED_BATCH,
        Startup::Throughput,
    )?);
    Ok(Arc::new(EmbedService::start(embedder, EMBED_BATCH)?))
}

/// A compiled persona, ready to answer.
pub struct Persona {
    /// The artifact.
    pub artifact: Artifact,
    pub(super) index: Index,
    embedder: SharedEmbedder,
    filter: Filter,
    safety: Safety,
    mood: Option<MoodReader>,
    pub(super) tz: TimeZone,
    pub(super) tz_name: String,
    pub(super) k: usize,
    timings: Mutex<Vec<(&'static str, Duration)>>,
}

impl Persona {
    /// [`Persona::load`] with the installed assets and the configuration's embedding threads and
    /// runtime settings: what every command that answers from one artifact does (`ask` with
    /// [`Startup::Quick`], `eval`, which embeds every held-out turn, with
    /// [`Startup::Throughput`]).
    pub fn open(path: &Path, config: &crate::config::Config, startup: Startup) -> Result<Self> {
        Self::load(
            path,
            &Assets::locate(),
            (config.embedding.effective_threads(), startup),
            &config.runtime,
        )
    }

    /// Loads and verifies an artifact and the embedding model (with `threads` and `startup`),
    /// then applies the runtime settings.
    pub fn load(
        path: &Path,
        assets: &Assets,
        (threads, startup): (usize, Startup),
        runtime: &RuntimeSettings,
    ) -> Result<Self> {
        // The artifact and the embedding model load in parallel: neither needs the other until
        // the model check in `from_parts`.
        let started = Instant::now();
        let (artifact, embedder) = std::thread::scope(|scope| {
            let model = scope.spawn(|| {
                let t = Instant::now();
                FastEmbedder::load(assets, threads, 32, startup).map(|e| (e, t.elapsed()))
            });
            let t = Instant::now();
            let artifact = artifact::read(path).map(|a| (a, t.elapsed()));
            let model = model
                .join()
                .unwrap_or_else(|_| Err(anyhow!("loading the embedding model panicked")));
            (artifact, model)
        });
        let (artifact, artifact_time) = artifact?;
        let (embedder, model_time) = embedder?;
        let mut timings = vec![
            ("artifact read + verify", artifact_time),
            ("embedding model load (in parallel)", model_time),
        ];
        timings.extend_from_slice(embedder.load_timings());
        timings.push(("artifact and model, wall", started.elapsed()));
        let persona = Self::from_parts(artifact, Box::new(embedder), runtime)
            .with_context(|| format!("loading `{}`", path.display()))?;
        if let Ok(mut t) = persona.timings.lock() {
            timings.append(&mut t);
            *t = timings;
        }
        Ok(persona)
    }

    /// Loads and verifies an artifact that answers with an embedding model already loaded.
    pub fn load_sharing(path: &Path, embedder: &SharedEmbedder, runtime: &RuntimeSettings) -> Result<Self> {
        let t = Instant::now();
        let artifact = artifact::read(path)?;
        let read = t.elapsed();
        let persona = Self::from_shared(artifact, embedder.clone(), runtime)
            .with_context(|| format!("loading `{}`", path.display()))?;
        if let Ok(mut t) = persona.timings.lock() {
            t.insert(0, ("artifact read + verify", read));
        }
        Ok(persona)
    }

    /// A persona from an artifact already in memory and any embedder: what `load` does after
    /// reading, and what unit tests use with a fake embedder.
    pub fn from_parts(
        artifact: Artifact,
        embedder: Box<dyn Embedder + Send>,
        runtime: &RuntimeSettings,
    ) -> Result<Self> {
        Self::from_shared(
            artifact,
            Arc::new(EmbedService::start(embedder, EMBED_BATCH)?),
            runtime,
        )
    }

    fn from_shared(artifact: Artifact, embedder: SharedEmbedder, runtime: &RuntimeSettings) -> Result<Self> {
        let t = Instant::now();
        artifact.check_model(embedder.handle().info())?;
        let mut params = artifact.manifest.hnsw;
        if let Some(ef) = runtime.ef_search {
            params.ef_search = ef;
        }
        let index = artifact.index(params).context("loading the index")?;
        let index_time = t.elapsed();
        let t = Instant::now();
        let tz_name = runtime
            .timezone
            .clone()
            .unwrap_or_else(|| artifact.settings.creator.timezone.clone());
        let tz = TimeZone::get(&tz_name).with_context(|| {
            format!("the creator timezone `{tz_name}` is unknown on this machine; set a valid `[creator] timezone`")
        })?;
        let mut filter = Filter::new(artifact.settings.filter.clone())
            .and_then(|f| f.with_examples(artifact.filter.examples.clone()))
            .context("loading the filter")?;
        if !artifact.filter.learned.categories.is_empty() {
            let dims = artifact.manifest.embedding.dims;
            filter = filter
                .with_learned(artifact.filter.learned.clone(), dims)
                .context("loading the learned filter")?;
        }
        let dims = artifact.manifest.embedding.dims;
        let safety = Safety::new(
            &artifact.settings.safety,
            Some((artifact.filter.safety.clone(), dims)),
        )
        .context("loading the safety check")?;
        let mood = MoodReader::new(&artifact.filter.mood, dims).context("loading the mood classifier")?;
        let k = runtime.k.unwrap_or(artifact.settings.retrieval.k);
        Ok(Persona {
            artifact,
            index,
            embedder,
            filter,
            safety,
            mood,
            tz,
            tz_name,
            k,
            timings: Mutex::new(vec![("hnsw index load", index_time), ("filter", t.elapsed())]),
        })
    }

    /// The creator's name.
    pub fn creator(&self) -> &str {
        &self.artifact.settings.creator.name
    }

    /// Demos per answer: the runtime's `k`, or the artifact's.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Where the time went so far: loading phases, then the last query's embedding and search.
    pub fn timings(&self) -> Vec<(&'static str, Duration)> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    pub(super) fn record(&self, phase: &'static str, took: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            t.retain(|(p, _)| *p != phase);
            t.push((phase, took));
        }
    }

    /// The creator's style profile, compiled from the indexed replies.
    pub fn profile(&self) -> &StyleProfile {
        &self.artifact.style
    }

    /// The filter in use.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The safety check on fans' messages.
    pub fn safety(&self) -> &Safety {
        &self.safety
    }

    /// The safety check on a fan's message: the handoff and the category's reply on a hit.
    pub fn check_safety(&self, fan_message: &str, now: Timestamp) -> Result<Option<(Handoff, String)>> {
        self.safety
            .check(fan_message, Some(&mut self.embedder.handle()), now)
    }

    /// Whether the artifact has a mood classifier.
    pub fn has_mood(&self) -> bool {
        self.mood.is_some()
    }

    /// How the fan seems from their last messages; `None` for neutral or without a classifier.
    pub fn read_mood(&self, history: &[crate::conversation::Message]) -> Result<Option<String>> {
        let Some(reader) = &self.mood else {
            return Ok(None);
        };
        let t = Instant::now();
        let mood = reader.read_history(history, &mut self.embedder.handle())?;
        self.record("mood", t.elapsed());
        Ok(mood)
    }

    /// Embeds texts with the persona's model.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embedder.handle().embed(texts)
    }

    /// What the embedding model has done so far (shared by every persona that shares it).
    pub fn embed_stats(&self) -> EmbedStats {
        self.embedder.stats()
    }

    /// Checks a text alone with every filter stage.
    pub fn check(&self, text: &str) -> Result<Verdict> {
        self.check_in_context(text, None)
    }

    /// Checks a reply together with the fan message it answers.
    pub fn check_in_context(&self, text: &str, fan_message: Option<&str>) -> Result<Verdict> {
        self.filter
            .check_in_context(text, fan_message, Some(&mut self.embedder.handle()))
    }

    /// A person's reply to `fan_message` (an edited draft in review mode) through the same
    /// output filter a draft passes, judged with the fan's message: the clean reply, or the
    /// verdict that blocked it.
    pub fn check_edit(
        &self,
        text: &str,
        fan_message: &str,
    ) -> Result<std::result::Result<super::refine::CleanReply, Verdict>> {
        let mut check = |t: &str| self.check_in_context(t, Some(fan_message));
        super::refine::checked(text, &mut check)
    }

    /// Fallback replies, best first: the creator's deflections nearest to the query, then the
    /// configured ones.
    pub(super) fn fallbacks(&self, query: &[f32]) -> Result<Vec<String>> {
        let mut scored: Vec<(f32, u32)> = Vec::new();
        for &d in &self.artifact.filter.deflections {
            if let Some(v) = self.artifact.vectors.get(d as usize)? {
                scored.push((dot(v, query), d));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut out: Vec<String> = scored
            .into_iter()
            .take(5)
            .filter_map(|(_, d)| self.artifact.reply(d as usize))
            .collect();
        out.extend(self.artifact.settings.filter.fallbacks.iter().cloned());
        Ok(out)
    }
}
