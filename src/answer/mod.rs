//! The loaded persona: artifact, index, embedder and filter, and the answer pipeline over them.
//!
//! `prepare` runs the stages before the model for one fan turn: the input filter (a context note
//! when the fan asks for a forbidden topic), context facts, query embedding, demo selection and
//! prompt rendering. `generate` hands the prompt to the refine loop, which checks every draft
//! with the output filter. Nothing from compile is redone here: only the incoming conversation
//! is embedded. Shared by `ask`, `serve` and `eval`; every method takes `&self`, so one loaded
//! persona can serve concurrent requests.

pub mod context;
pub mod prompt;
pub mod refine;
pub mod retrieve;
pub mod signature;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::answer::signature::{CHAT_HISTORY, CONTEXT, FAN_PROFILE};
use crate::artifact::{self, Artifact};
use crate::conversation::transcript;
use crate::conversation::{Conversation, FanProfile, Message, MAX_MESSAGE_CHARS};
use crate::embed::{dot, Embedder, FastEmbedder};
use crate::eval::style::StyleProfile;
use crate::filter::{Filter, Verdict};
use crate::index::Index;
use crate::llm::{ChatMessage, ChatModel, LlmClient};
use crate::paths::Assets;
use context::Facts;
use prompt::{Demo, Inputs};
use refine::{FilterReport, Refine};

/// Messages of the current conversation shown in the prompt.
pub const PROMPT_HISTORY_MESSAGES: usize = 12;

/// A compiled persona, ready to answer.
pub struct Persona {
    /// The artifact.
    pub artifact: Artifact,
    index: Index,
    embedder: Mutex<FastEmbedder>,
    filter: Filter,
    profile: StyleProfile,
    tz: TimeZone,
    timings: Mutex<Vec<(&'static str, Duration)>>,
}

/// One fan turn to answer.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    /// The conversation so far, ending with the fan's new message.
    pub history: &'a [Message],
    /// The fan's profile, if known.
    pub fan: Option<&'a FanProfile>,
    /// The moment of the answer.
    pub now: Timestamp,
    /// Demos wanted.
    pub k: usize,
    /// Open the reply with the output marker (see [`crate::llm::Preset::prefill`]).
    pub prefill: bool,
    /// How demos are chosen.
    pub demos: DemoMode,
}

/// How demos are chosen: the real pipeline, or the baselines `eval` compares it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoMode {
    /// The k nearest examples (KNN few-shot).
    #[default]
    Nearest,
    /// No demos: the signature alone (zero-shot).
    None,
    /// k examples drawn at random with this seed (like DSPy's LabeledFewShot).
    Random(u64),
}

/// A demo as reported by `--dry-run` and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoInfo {
    /// Example id in the artifact.
    pub id: usize,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The source conversation's id or index.
    pub conversation: String,
    /// The gold reply used as the demo's answer.
    pub reply: String,
}

/// Everything decided before the model is called.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// The context facts.
    pub context: Facts,
    /// The demos, nearest last.
    pub demos: Vec<DemoInfo>,
    /// The filter's verdict on the fan's message.
    pub input_verdict: Verdict,
    /// The rendered prompt.
    pub messages: Vec<ChatMessage>,
    #[serde(skip)]
    demo_inputs: Vec<Demo>,
    #[serde(skip)]
    current: Inputs,
    #[serde(skip)]
    query: Vec<f32>,
    #[serde(skip)]
    prefill: bool,
}

/// The reply and how it was reached.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// The reply; it passed the filter.
    pub reply: String,
    /// Model calls made.
    pub calls: u32,
    /// The filter's verdicts.
    pub filter: FilterReport,
    /// With best-of-N, every candidate (the chosen one among them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

impl Persona {
    /// Loads and verifies an artifact, the embedding model, the index and the filter.
    pub fn load(path: &Path, assets: &Assets, threads: usize) -> Result<Self> {
        // The artifact and the embedding model load in parallel: neither needs the other until
        // the model check below.
        let started = Instant::now();
        let (artifact, embedder) = std::thread::scope(|scope| {
            let model = scope.spawn(|| {
                let t = Instant::now();
                FastEmbedder::load(assets, threads, 32).map(|e| (e, t.elapsed()))
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
        let t = Instant::now();
        artifact
            .check_model(embedder.info())
            .with_context(|| format!("loading `{}`", path.display()))?;
        let index = Index::new(
            artifact.graph.clone(),
            artifact.vectors.clone(),
            artifact.manifest.hnsw,
        )
        .with_context(|| format!("loading the index of `{}`", path.display()))?;
        timings.push(("hnsw index load", t.elapsed()));
        let t = Instant::now();
        let tz_name = &artifact.settings.creator.timezone;
        let tz = TimeZone::get(tz_name).with_context(|| {
            format!("the artifact's creator timezone `{tz_name}` is unknown on this machine; recompile with a valid `creator.timezone`")
        })?;
        let filter = Filter::new(artifact.settings.filter.clone())
            .with_context(|| format!("loading the filter of `{}`", path.display()))?
            .with_examples(artifact.filter.examples.clone())
            .with_context(|| format!("loading the filter of `{}`", path.display()))?;
        let profile = artifact.style.clone();
        timings.push(("filter + style profile", t.elapsed()));
        Ok(Persona {
            artifact,
            index,
            embedder: Mutex::new(embedder),
            filter,
            profile,
            tz,
            timings: Mutex::new(timings),
        })
    }

    /// The creator's name.
    pub fn creator(&self) -> &str {
        &self.artifact.settings.creator.name
    }

    /// Where the time went so far: loading phases, then the last query's embedding and search.
    pub fn timings(&self) -> Vec<(&'static str, Duration)> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn record(&self, phase: &'static str, took: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            t.retain(|(p, _)| *p != phase);
            t.push((phase, took));
        }
    }

    /// The creator's style profile, built from the indexed replies.
    pub fn profile(&self) -> &StyleProfile {
        &self.profile
    }

    /// The filter in use.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Embeds texts with the persona's model.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut embedder = self
            .embedder
            .lock()
            .map_err(|_| anyhow!("the embedding model is unavailable after an earlier failure"))?;
        embedder.embed(texts)
    }

    /// Checks a text with every filter stage.
    pub fn check(&self, text: &str) -> Result<Verdict> {
        let mut embedder = self
            .embedder
            .lock()
            .map_err(|_| anyhow!("the embedding model is unavailable after an earlier failure"))?;
        self.filter.check(text, Some(&mut *embedder))
    }

    /// Runs the stages before the model: input filter, context, retrieval, rendering.
    pub fn prepare(&self, turn: &Turn<'_>) -> Result<Prepared> {
        let settings = &self.artifact.settings;
        let tz_name = settings.creator.timezone.clone();
        let mut facts = context::facts(turn.history, turn.fan, &self.tz, &tz_name, turn.now);

        let fan_text = turn
            .history
            .last()
            .filter(|m| !m.from_creator)
            .map_or("", |m| m.content.as_str());
        let input_verdict = self.check(fan_text)?;
        if input_verdict.blocked && settings.filter.input_note {
            let about = input_verdict
                .category
                .as_deref()
                .and_then(|c| self.filter.description(c))
                .unwrap_or("a forbidden topic");
            facts.notes.push(format!(
                "the fan's last message asks for {about}; never agree to it and never name another app, \
                 a handle, a number or a place: deflect playfully in your own voice and keep the chat here"
            ));
        }

        let window = settings.retrieval.context_messages;
        let query_text = transcript::embedding_text(turn.history, window);
        let t = Instant::now();
        let query = self
            .embed(&[query_text.as_str()])?
            .pop()
            .context("the embedding model returned nothing")?;
        self.record("query embedding", t.elapsed());
        let t = Instant::now();
        let hits = match turn.demos {
            DemoMode::Nearest => self.index.search(&query, turn.k * retrieve::OVERFETCH),
            DemoMode::None => Vec::new(),
            DemoMode::Random(seed) => {
                let mut rng = crate::eval::metrics::Rng::new(seed);
                let n = self.artifact.examples.len();
                let mut ids: Vec<usize> = Vec::new();
                while ids.len() < turn.k.min(n) {
                    let id = rng.below(n);
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                ids.into_iter()
                    .map(|id| crate::index::Hit {
                        id,
                        score: dot(&self.artifact.vectors[id], &query),
                    })
                    .collect()
            }
        };
        self.record("hnsw search", t.elapsed());
        let t = Instant::now();
        // The candidates' conversations, decoded once each.
        let mut decoded: std::collections::HashMap<u32, Conversation> = std::collections::HashMap::new();
        for h in &hits {
            if let Some(e) = self.artifact.examples.get(h.id) {
                if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(e.conversation) {
                    slot.insert(self.artifact.conversations.get(e.conversation as usize)?);
                }
            }
        }
        let candidates: Vec<retrieve::Candidate> = hits
            .iter()
            .filter_map(|h| {
                let e = self.artifact.examples.get(h.id)?;
                let c = decoded.get(&e.conversation)?;
                Some(retrieve::Candidate {
                    hit: *h,
                    conversation: e.conversation,
                    reply: &c.messages.get(e.turn as usize)?.content,
                })
            })
            .collect();

        let mut demo_inputs = Vec::new();
        let mut demos = Vec::new();
        self.record("demo conversations decoded", t.elapsed());
        let chosen = match turn.demos {
            DemoMode::Nearest => retrieve::select(&candidates, turn.k),
            _ => hits.clone(),
        };
        for hit in chosen {
            let Some(e) = self.artifact.examples.get(hit.id).copied() else {
                continue;
            };
            let Some(c) = decoded.get(&e.conversation) else {
                continue;
            };
            let turn_at = e.turn as usize;
            if turn_at >= c.messages.len() {
                continue;
            }
            let before = &c.messages[..turn_at];
            let mut inputs = Inputs::new();
            inputs.insert(
                CHAT_HISTORY.into(),
                transcript::history_text(&before[before.len().saturating_sub(window)..]),
            );
            if let Some(at) = c.messages[turn_at]
                .sent_at
                .or_else(|| before.last().and_then(|m| m.sent_at))
            {
                inputs.insert(
                    CONTEXT.into(),
                    context::facts(before, c.fan.as_ref(), &self.tz, &tz_name, at).render(),
                );
            }
            if let Some(profile) = c.fan.as_ref().and_then(context::profile_text) {
                inputs.insert(FAN_PROFILE.into(), profile);
            }
            let reply = c.messages[turn_at].content.clone();
            demos.push(DemoInfo {
                id: hit.id,
                score: hit.score,
                conversation: c.id.clone().unwrap_or_else(|| format!("#{}", e.conversation)),
                reply: reply.clone(),
            });
            demo_inputs.push(Demo { inputs, reply });
        }

        let shown = &turn.history[turn.history.len().saturating_sub(PROMPT_HISTORY_MESSAGES)..];
        let mut current = Inputs::new();
        current.insert(CHAT_HISTORY.into(), transcript::history_text(shown));
        current.insert(CONTEXT.into(), facts.render());
        if let Some(profile) = &facts.fan_profile {
            current.insert(FAN_PROFILE.into(), profile.clone());
        }
        let mut prepared = Prepared {
            context: facts,
            demos,
            input_verdict,
            messages: Vec::new(),
            demo_inputs,
            current,
            query,
            prefill: turn.prefill,
        };
        prepared.messages = self.render(&prepared, &[]);
        Ok(prepared)
    }

    /// The prompt for a prepared turn, with refine hints added to the context field.
    fn render(&self, prepared: &Prepared, hints: &[String]) -> Vec<ChatMessage> {
        let settings = &self.artifact.settings;
        let mut current = prepared.current.clone();
        if !hints.is_empty() {
            let context = current.entry(CONTEXT.into()).or_default();
            for hint in hints {
                context.push('\n');
                context.push_str(hint);
            }
        }
        prompt::render(
            &settings.signature,
            &settings.creator.name,
            &prepared.demo_inputs,
            &current,
            prepared.prefill,
        )
    }

    /// Asks the model, checks every draft with the filter, and falls back to one of the creator's
    /// own deflections when every draft is blocked.
    pub async fn generate<M: ChatModel>(&self, model: &M, prepared: &Prepared) -> Result<Generated> {
        let settings = &self.artifact.settings;
        let prompt = |hints: &[String]| self.render(prepared, hints);
        let parse = |answer: &str| prompt::parse_reply(answer, &settings.signature, &settings.creator.name);
        let mut check = |text: &str| self.check(text);
        let attempts = if settings.filter.enabled {
            settings.filter.attempts
        } else {
            1
        };
        let outcome = refine::run(
            model,
            Refine {
                attempts,
                prompt: &prompt,
                parse: &parse,
                check: &mut check,
                fallbacks: self.fallbacks(&prepared.query),
                input: prepared.input_verdict.clone(),
            },
        )
        .await?;
        Ok(Generated {
            reply: outcome.reply,
            calls: outcome.calls,
            filter: outcome.filter,
            candidates: Vec::new(),
        })
    }

    /// Best-of-N in voice: `n` candidates sampled at `temperature` with seeds `seed..seed+n`, each
    /// through the filter, and the one closest to the creator's style profile (like DSPy's
    /// BestOfN with a reward function). The chosen reply lists every candidate.
    pub async fn best_of(
        &self,
        client: &LlmClient,
        prepared: &Prepared,
        n: u32,
        temperature: f32,
        seed: u64,
    ) -> Result<Generated> {
        let mut candidates = Vec::new();
        let mut best: Option<(f64, Generated)> = None;
        for i in 0..n.max(1) {
            let model = client.with_sampling(temperature, seed.wrapping_add(u64::from(i)));
            let generated = self.generate(&model, prepared).await?;
            let style = self.profile.score(&generated.reply).style;
            candidates.push(Candidate {
                reply: generated.reply.clone(),
                style,
                fallback: generated.filter.fallback,
            });
            // A generated reply beats a fallback deflection; among equals, the higher style wins.
            let key = style - if generated.filter.fallback { 1.0 } else { 0.0 };
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, generated));
            }
        }
        let (_, mut chosen) = best.context("no candidates were generated")?;
        chosen.candidates = candidates;
        Ok(chosen)
    }

    /// Fallback replies, best first: the creator's deflections nearest to the query, then the
    /// configured ones.
    fn fallbacks(&self, query: &[f32]) -> Vec<String> {
        let mut scored: Vec<(f32, u32)> = self
            .artifact
            .filter
            .deflections
            .iter()
            .filter_map(|&d| self.artifact.vectors.get(d as usize).map(|v| (dot(v, query), d)))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut out: Vec<String> = scored
            .into_iter()
            .take(5)
            .filter_map(|(_, d)| self.artifact.reply(d as usize))
            .collect();
        out.extend(self.artifact.settings.filter.fallbacks.iter().cloned());
        out
    }
}

/// A best-of-N candidate, as reported by `ask --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The candidate reply (it passed the filter).
    pub reply: String,
    /// Its style score.
    pub style: f64,
    /// Whether it is a fallback deflection.
    pub fallback: bool,
}

/// Checks a fan message before anything else sees it.
pub fn check_message(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        bail!("the message is empty; type something for the fan to say");
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        bail!("the message has {chars} characters, over the cap of {MAX_MESSAGE_CHARS}; shorten it");
    }
    Ok(())
}

/// Parses `--now`.
pub fn parse_now(text: &str) -> Result<Timestamp> {
    text.parse::<Timestamp>().with_context(|| {
        format!("invalid --now `{text}`: expected an RFC 3339 time with an offset, e.g. 2026-11-28T23:40:00-05:00")
    })
}
