//! The loaded persona: artifact, index and embedder, and the answer pipeline over them.
//!
//! `prepare` runs the pure stages for one fan turn (context facts, query embedding, demo
//! selection, prompt rendering); `generate` asks the chat model and parses the reply, asking
//! again when the model returns nothing usable. Nothing from compile is redone here: only the
//! incoming conversation is embedded. Shared by `ask` now and `serve` / `eval` later.

use std::path::Path;

use anyhow::{bail, Context, Result};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::artifact::{self, Artifact};
use crate::context::{self, Facts};
use crate::dataset::{FanProfile, Message, MAX_MESSAGE_CHARS};
use crate::embed::{Embedder, FastEmbedder};
use crate::index::Index;
use crate::llm::{ChatMessage, ChatModel};
use crate::paths::Assets;
use crate::prompt::{self, Demo, Inputs};
use crate::retrieve::{self, Candidate};
use crate::signature::{CHAT_HISTORY, CONTEXT, FAN_PROFILE};
use crate::transcript;

/// Messages of the current conversation shown in the prompt.
pub const PROMPT_HISTORY_MESSAGES: usize = 12;

/// Times the model is asked again when its answer holds no usable reply.
pub const REPLY_ATTEMPTS: u32 = 3;

/// A compiled persona, ready to answer.
pub struct Persona {
    /// The artifact.
    pub artifact: Artifact,
    index: Index,
    embedder: FastEmbedder,
    tz: TimeZone,
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
    /// Extra context notes (e.g. from the topic filter).
    pub notes: Vec<String>,
    /// Open the reply with the output marker (see [`crate::llm::Preset::prefill`]).
    pub prefill: bool,
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
    /// The rendered prompt.
    pub messages: Vec<ChatMessage>,
}

/// The model's reply.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// The parsed reply.
    pub reply: String,
    /// Model calls made.
    pub attempts: u32,
}

impl Persona {
    /// Loads and verifies an artifact, the embedding model and the index.
    pub fn load(path: &Path, assets: &Assets, threads: usize) -> Result<Self> {
        let artifact = artifact::read(path)?;
        let embedder = FastEmbedder::load(assets, threads, 32)?;
        artifact
            .check_model(embedder.info())
            .with_context(|| format!("loading `{}`", path.display()))?;
        let index = Index::from_bytes(&artifact.index, artifact.manifest.hnsw, artifact.examples.len())
            .with_context(|| format!("loading the index of `{}`", path.display()))?;
        let tz_name = &artifact.settings.creator.timezone;
        let tz = TimeZone::get(tz_name).with_context(|| {
            format!("the artifact's creator timezone `{tz_name}` is unknown on this machine; recompile with a valid `creator.timezone`")
        })?;
        Ok(Persona {
            artifact,
            index,
            embedder,
            tz,
        })
    }

    /// The creator's name.
    pub fn creator(&self) -> &str {
        &self.artifact.settings.creator.name
    }

    /// Runs the stages before the model: context, retrieval, rendering.
    pub fn prepare(&mut self, turn: &Turn<'_>) -> Result<Prepared> {
        let settings = &self.artifact.settings;
        let tz_name = settings.creator.timezone.clone();
        let mut facts = context::facts(turn.history, turn.fan, &self.tz, &tz_name, turn.now);
        facts.notes.extend(turn.notes.iter().cloned());

        let window = settings.retrieval.context_messages;
        let query = transcript::embedding_text(turn.history, window);
        let vector = self
            .embedder
            .embed(&[query.as_str()])?
            .pop()
            .context("the embedding model returned nothing")?;
        let hits = self.index.search(&vector, turn.k * retrieve::OVERFETCH);
        let candidates: Vec<Candidate> = hits
            .iter()
            .filter_map(|h| {
                let e = self.artifact.examples.get(h.id)?;
                let c = self.artifact.conversations.get(e.conversation as usize)?;
                Some(Candidate {
                    hit: *h,
                    conversation: e.conversation,
                    reply: &c.messages.get(e.turn as usize)?.content,
                })
            })
            .collect();
        let chosen = retrieve::select(&candidates, turn.k);

        let mut demos = Vec::new();
        let mut infos = Vec::new();
        for hit in chosen {
            let e = self.artifact.examples[hit.id];
            let c = &self.artifact.conversations[e.conversation as usize];
            let turn_at = e.turn as usize;
            let before = &c.messages[..turn_at];
            let shown = &before[before.len().saturating_sub(window)..];
            let mut inputs = Inputs::new();
            inputs.insert(CHAT_HISTORY.into(), transcript::history_text(shown));
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
            infos.push(DemoInfo {
                id: hit.id,
                score: hit.score,
                conversation: c.id.clone().unwrap_or_else(|| format!("#{}", e.conversation)),
                reply: reply.clone(),
            });
            demos.push(Demo { inputs, reply });
        }

        let shown = &turn.history[turn.history.len().saturating_sub(PROMPT_HISTORY_MESSAGES)..];
        let mut current = Inputs::new();
        current.insert(CHAT_HISTORY.into(), transcript::history_text(shown));
        current.insert(CONTEXT.into(), facts.render());
        if let Some(profile) = &facts.fan_profile {
            current.insert(FAN_PROFILE.into(), profile.clone());
        }
        let messages = prompt::render(
            &settings.signature,
            &settings.creator.name,
            &demos,
            &current,
            turn.prefill,
        );
        Ok(Prepared {
            context: facts,
            demos: infos,
            messages,
        })
    }

    /// Asks the model and parses the reply, asking again when nothing usable comes back.
    pub async fn generate<M: ChatModel>(&self, model: &M, prepared: &Prepared) -> Result<Generated> {
        let settings = &self.artifact.settings;
        let mut calls = 0;
        let mut last = String::new();
        while calls < REPLY_ATTEMPTS {
            calls += 1;
            let completion = model.complete(&prepared.messages, 1).await?;
            last = completion.texts.into_iter().next().unwrap_or_default();
            if let Some(reply) = prompt::parse_reply(&last, &settings.signature, &settings.creator.name) {
                return Ok(Generated {
                    reply,
                    attempts: calls,
                });
            }
        }
        bail!(
            "the LLM gave no usable reply in {calls} attempts (last answer: `{}`); try another model or raise `[llm] max_tokens`",
            last.chars().take(120).collect::<String>()
        )
    }
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
