//! The answer pipeline: one fan turn in, one filtered [`Answer`] out.
//!
//! [`Persona::prepare`] runs the stages before the model: the input filter (a context note when
//! the fan asks for a forbidden topic), context facts, query embedding, demo selection and prompt
//! rendering; before them the safety check, whose hit (or a stored handoff that stops the bot)
//! replaces the whole turn with the category's fixed reply. [`Persona::answer`] then generates
//! with the refine loop, once or best-of-N, checking every draft with the topic filter and the
//! prompt-leak guard, and returns an [`Answer`] whose reply is a [`CleanReply`]. `ask`, `serve` and `eval` all call
//! these two methods; nothing else builds a turn, picks demos or samples candidates. Nothing from
//! compile is redone here: only the incoming conversation is embedded.

pub mod context;
pub mod leak;
pub mod persona;
pub mod privacy;
pub mod prompt;
pub mod refine;
pub mod retrieve;
pub mod signature;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::Serialize;

use self::context::Facts;
use self::prompt::{Demo, Inputs};
use self::refine::{FilterReport, Refine};
use self::signature::{CHAT_HISTORY, CONTEXT, FAN_PROFILE};
use crate::conversation::{transcript, Conversation, FanProfile, Message, MAX_MESSAGE_CHARS};
use crate::embed::dot;
use crate::eval::metrics::Rng;
use crate::filter::Verdict;
use crate::index::Hit;
use crate::llm::{ChatMessage, ChatModel, Usage};
use crate::safety::Handoff;

pub use self::persona::Persona;
pub use self::refine::CleanReply;

/// Messages of the current conversation shown in the prompt.
pub const PROMPT_HISTORY_MESSAGES: usize = 12;
/// The most best-of-N candidates one answer may sample.
pub const MAX_CANDIDATES: u32 = 8;
/// The temperature of best-of-N candidates when the configured one is 0.
pub const CANDIDATE_TEMPERATURE: f32 = 0.7;

/// A request that cannot be answered as given; callers map each kind to their own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The fan's message is empty or blank.
    #[error("the message is empty; send something for the fan to say")]
    EmptyMessage,
    /// The fan's message is over [`MAX_MESSAGE_CHARS`].
    #[error("the message has {0} characters, over the cap of {MAX_MESSAGE_CHARS}; shorten it")]
    MessageTooLong(usize),
    /// Best-of-N with a count out of range.
    #[error("the number of candidates must be between 1 and {MAX_CANDIDATES}, got {0}")]
    Candidates(u32),
}

/// Checks a fan message before anything else sees it.
pub fn check_message(text: &str) -> Result<(), RequestError> {
    if text.trim().is_empty() {
        return Err(RequestError::EmptyMessage);
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(RequestError::MessageTooLong(chars));
    }
    Ok(())
}

/// Parses an RFC 3339 time given as `--now`.
pub fn parse_now(text: &str) -> Result<Timestamp> {
    text.parse::<Timestamp>().with_context(|| {
        format!("invalid --now `{text}`: expected an RFC 3339 time with an offset, e.g. 2026-11-28T23:40:00-05:00")
    })
}

/// How many replies to sample and how: the one place best-of-N is validated.
///
/// `n` is 1 to [`MAX_CANDIDATES`]. With `n > 1` the candidates are sampled at the configured
/// temperature, or at [`CANDIDATE_TEMPERATURE`] when that is 0 (at 0 every candidate would be the
/// same), with seeds `seed, seed + 1, ...`; the seed is `[llm] seed` when set, else the clock's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    n: u32,
    temperature: f32,
    seed: u64,
}

impl Sampling {
    /// One reply at the model's own settings.
    pub const ONE: Sampling = Sampling {
        n: 1,
        temperature: 0.0,
        seed: 0,
    };

    /// `n` candidates given the configured temperature and seed.
    pub fn new(n: u32, configured_temperature: f32, seed: Option<u64>) -> Result<Self, RequestError> {
        if !(1..=MAX_CANDIDATES).contains(&n) {
            return Err(RequestError::Candidates(n));
        }
        let temperature = if configured_temperature > 0.0 {
            configured_temperature
        } else {
            CANDIDATE_TEMPERATURE
        };
        let seed = seed.unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
        Ok(Sampling { n, temperature, seed })
    }

    /// Candidates to sample.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// The base seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The same sampling with another base seed (eval gives each turn its own).
    pub fn reseeded(self, seed: u64) -> Self {
        Sampling { seed, ..self }
    }
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

/// One fan turn to answer.
#[derive(Debug, Clone)]
pub struct Turn<'a> {
    /// The conversation so far, ending with the fan's new message.
    pub history: &'a [Message],
    /// The fan's profile, if known.
    pub fan: Option<&'a FanProfile>,
    /// The moment of the answer.
    pub now: Timestamp,
    /// Open the reply with the output marker (see [`crate::llm::Preset::prefill`]).
    pub prefill: bool,
    /// How demos are chosen.
    pub demos: DemoMode,
    /// The fan's stored handoff, when one is open: one that stops the bot replaces the turn
    /// with its category's reply.
    pub handoff: Option<&'a Handoff>,
}

/// A demo as reported by `--dry-run`, `--json` and `/v1/reply`.
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
    /// The handoff this turn makes or continues: then no model is asked and the reply is the
    /// safety category's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    #[serde(skip)]
    handoff_reply: Option<String>,
    #[serde(skip)]
    leak: leak::LeakGuard,
    #[serde(skip)]
    demo_inputs: Vec<Demo>,
    #[serde(skip)]
    current: Inputs,
    #[serde(skip)]
    query: Vec<f32>,
    #[serde(skip)]
    prefill: bool,
    /// The fan's message being answered: drafts are judged together with it.
    #[serde(skip)]
    fan_message: Option<String>,
}

/// A best-of-N candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The candidate reply (it passed the filter).
    pub reply: CleanReply,
    /// Its style score.
    pub style: f64,
    /// Whether it is a fallback deflection.
    pub fallback: bool,
}

/// The answer to one fan turn: what `ask --json`, `/v1/reply` and eval's items report.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The reply; it passed the filter.
    pub reply: CleanReply,
    /// The demos, nearest last.
    pub demos: Vec<DemoInfo>,
    /// The context facts.
    pub context: Facts,
    /// The filter's verdicts: the fan's message, each draft, and whether the reply is a fallback.
    pub filter: FilterReport,
    /// Model calls made.
    pub calls: u32,
    /// Tokens the model reported over all those calls (judge and best-of-N candidates included).
    pub usage: Usage,
    /// With best-of-N, every candidate (the chosen one among them), in sampling order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// The handoff to a human this turn made or continued; stores record it with the exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

impl Persona {
    /// Runs the stages before the model: input filter, context, retrieval, rendering.
    pub fn prepare(&self, turn: &Turn<'_>) -> Result<Prepared> {
        let fan_text = turn
            .history
            .last()
            .filter(|m| !m.from_creator)
            .map_or("", |m| m.content.as_str());
        if let Some(prepared) = self.handoff_turn(turn, fan_text)? {
            return Ok(prepared);
        }
        let input_verdict = self.check(fan_text)?;
        let mut facts = context::facts(turn.history, turn.fan, &self.tz, &self.tz_name, turn.now);
        if let Some(mood) = self.read_mood(turn.history)? {
            facts.notes.extend(crate::safety::mood::note(&mood));
            facts.mood = Some(mood);
        }
        if let Some(note) = self.input_note(&input_verdict) {
            facts.notes.push(note);
        }
        let query = self.embed_query(turn.history)?;
        let hits = self.search(&query, turn.demos)?;
        let (demos, demo_inputs) = self.demos(&hits, turn.demos)?;

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
            handoff: None,
            handoff_reply: None,
            leak: leak::LeakGuard::default(),
            demo_inputs,
            current,
            query,
            prefill: turn.prefill,
            fan_message: (!fan_text.is_empty()).then(|| fan_text.to_string()),
        };
        prepared.messages = self.render(&prepared, &[]);
        prepared.leak = leak::LeakGuard::new(&prepared.messages);
        Ok(prepared)
    }

    /// The turn when the bot must not improvise: the fan's open handoff stops it, or the safety
    /// check finds a category in the fan's message. No retrieval, no prompt.
    fn handoff_turn(&self, turn: &Turn<'_>, fan_text: &str) -> Result<Option<Prepared>> {
        let stored = turn.handoff.filter(|h| h.stop).and_then(|h| {
            self.safety()
                .reply_for(h)
                .map(|reply| (h.clone(), reply.to_string()))
        });
        let found = match stored {
            Some(found) => Some(found),
            None => self.check_safety(fan_text, turn.now)?,
        };
        let Some((handoff, reply)) = found else {
            return Ok(None);
        };
        let facts = context::facts(turn.history, turn.fan, &self.tz, &self.tz_name, turn.now);
        Ok(Some(Prepared {
            context: facts,
            demos: Vec::new(),
            input_verdict: Verdict {
                reason: format!("handed off: {}", handoff.category),
                ..Verdict::clean()
            },
            messages: Vec::new(),
            handoff: Some(handoff),
            handoff_reply: Some(reply),
            leak: leak::LeakGuard::default(),
            demo_inputs: Vec::new(),
            current: Inputs::new(),
            query: Vec::new(),
            prefill: turn.prefill,
            fan_message: (!fan_text.is_empty()).then(|| fan_text.to_string()),
        }))
    }

    /// Generates the reply for a prepared turn: once, or best-of-N in voice.
    pub async fn answer<M: ChatModel>(
        &self,
        model: &M,
        prepared: &Prepared,
        sampling: Sampling,
    ) -> Result<Answer> {
        if let (Some(handoff), Some(reply)) = (&prepared.handoff, &prepared.handoff_reply) {
            let mut check = |text: &str| self.check(text);
            let outcome = refine::fixed(reply, &mut check, prepared.input_verdict.clone())?;
            return Ok(Answer {
                reply: outcome.reply,
                demos: Vec::new(),
                context: prepared.context.clone(),
                filter: outcome.filter,
                calls: 0,
                usage: Usage::default(),
                candidates: Vec::new(),
                handoff: Some(handoff.clone()),
            });
        }
        let (outcome, candidates) = if sampling.n > 1 {
            self.best_of(model, prepared, sampling).await?
        } else {
            (self.refine(model, prepared).await?, Vec::new())
        };
        Ok(Answer {
            reply: outcome.reply,
            demos: prepared.demos.clone(),
            context: prepared.context.clone(),
            filter: outcome.filter,
            calls: outcome.calls,
            usage: outcome.usage,
            candidates,
            handoff: None,
        })
    }

    /// The context note added when the fan's message asks for a blocked topic.
    fn input_note(&self, verdict: &Verdict) -> Option<String> {
        if !verdict.blocked || !self.artifact.settings.filter.input_note {
            return None;
        }
        let about = verdict
            .category
            .as_deref()
            .and_then(|c| self.filter().description(c))
            .unwrap_or("a forbidden topic");
        Some(format!(
            "the fan's last message asks for {about}; never agree to it and never name another app, \
             a handle, a number or a place: deflect playfully in your own voice and keep the chat here"
        ))
    }

    /// The demos the retriever chooses for a conversation in `mode`, without the rest of a turn
    /// (no safety, context or prompt): what the retrieval eval compares.
    pub fn choose_demos(&self, history: &[Message], mode: DemoMode) -> Result<Vec<DemoInfo>> {
        let query = self.embed_query(history)?;
        let hits = self.search(&query, mode)?;
        Ok(self.demos(&hits, mode)?.0)
    }

    fn embed_query(&self, history: &[Message]) -> Result<Vec<f32>> {
        let window = self.artifact.settings.retrieval.context_messages;
        let text = transcript::embedding_text(history, window);
        let t = Instant::now();
        let query = self
            .embed(&[text.as_str()])?
            .pop()
            .context("the embedding model returned nothing")?;
        self.record("query embedding", t.elapsed());
        Ok(query)
    }

    /// The demo hits: the KNN choice over the over-fetched neighbours, none, or k at random.
    fn search(&self, query: &[f32], mode: DemoMode) -> Result<Vec<(Hit, bool)>> {
        let t = Instant::now();
        let k = self.k;
        let hits = match mode {
            DemoMode::Nearest => self
                .index
                .search(query, k * retrieve::OVERFETCH)?
                .into_iter()
                .map(|h| (h, true))
                .collect(),
            DemoMode::None => Vec::new(),
            DemoMode::Random(seed) => {
                let mut rng = Rng::new(seed);
                let n = self.artifact.examples.len();
                let mut ids: Vec<usize> = Vec::new();
                while ids.len() < k.min(n) {
                    let id = rng.below(n);
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                let mut hits = Vec::with_capacity(ids.len());
                for id in ids {
                    let score = self.artifact.vectors.get(id)?.map_or(0.0, |v| dot(v, query));
                    hits.push((Hit { id, score }, false));
                }
                hits
            }
        };
        self.record("hnsw search", t.elapsed());
        Ok(hits)
    }

    /// Decodes the hits' conversations once each, selects the demos (KNN rules for neighbours,
    /// as drawn otherwise) and renders each demo's inputs as it was at its reply.
    fn demos(&self, hits: &[(Hit, bool)], mode: DemoMode) -> Result<(Vec<DemoInfo>, Vec<Demo>)> {
        let t = Instant::now();
        let mut decoded: HashMap<u32, Conversation> = HashMap::new();
        for (h, _) in hits {
            if let Some(e) = self.artifact.examples.get(h.id) {
                if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(e.conversation) {
                    slot.insert(self.artifact.conversations.get(e.conversation as usize)?);
                }
            }
        }
        self.record("demo conversations decoded", t.elapsed());
        let chosen: Vec<Hit> = match mode {
            DemoMode::Nearest => {
                let neighbours: Vec<retrieve::Neighbour> = hits
                    .iter()
                    .filter_map(|(h, _)| {
                        let e = self.artifact.examples.get(h.id)?;
                        let c = decoded.get(&e.conversation)?;
                        Some(retrieve::Neighbour {
                            hit: *h,
                            conversation: e.conversation,
                            reply: &c.messages.get(e.turn as usize)?.content,
                        })
                    })
                    .collect();
                retrieve::select(&neighbours, self.k)
            }
            _ => hits.iter().map(|(h, _)| *h).collect(),
        };
        let mut infos = Vec::new();
        let mut inputs = Vec::new();
        for hit in chosen {
            if let Some((info, demo)) = self.demo(hit, &decoded) {
                infos.push(info);
                inputs.push(demo);
            }
        }
        Ok((infos, inputs))
    }

    /// One demo: the messages before the example's reply, its context at that moment, and the
    /// reply, with the demo fan's identifying details masked unless `[privacy] mask_demos` is off
    /// (then the demo fan's profile is shown too, as before).
    fn demo(&self, hit: Hit, decoded: &HashMap<u32, Conversation>) -> Option<(DemoInfo, Demo)> {
        let e = self.artifact.examples.get(hit.id).copied()?;
        let c = decoded.get(&e.conversation)?;
        let turn_at = e.turn as usize;
        let mask = self.artifact.settings.privacy.mask_demos;
        let shown = c.messages.get(..=turn_at)?;
        let messages = if mask {
            privacy::mask_messages(shown, c.fan.as_ref())
        } else {
            shown.to_vec()
        };
        let (reply, before) = messages.split_last()?;
        let fan = if mask { None } else { c.fan.as_ref() };
        let window = self.artifact.settings.retrieval.context_messages;
        let mut inputs = Inputs::new();
        inputs.insert(
            CHAT_HISTORY.into(),
            transcript::history_text(&before[before.len().saturating_sub(window)..]),
        );
        if let Some(at) = reply.sent_at.or_else(|| before.last().and_then(|m| m.sent_at)) {
            let facts = context::facts(before, fan, &self.tz, &self.tz_name, at);
            inputs.insert(CONTEXT.into(), facts.render());
        }
        if let Some(profile) = fan.and_then(context::profile_text) {
            inputs.insert(FAN_PROFILE.into(), profile);
        }
        let info = DemoInfo {
            id: hit.id,
            score: hit.score,
            conversation: c.id.clone().unwrap_or_else(|| format!("#{}", e.conversation)),
            reply: reply.content.clone(),
        };
        Some((
            info,
            Demo {
                inputs,
                reply: reply.content.clone(),
            },
        ))
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
            &settings.signature.for_platform(&settings.creator.platform),
            &settings.creator.name,
            &prepared.demo_inputs,
            &current,
            prepared.prefill,
        )
    }

    /// Asks the model, checks every draft with the filter, and falls back to one of the creator's
    /// own deflections when every draft is blocked.
    async fn refine<M: ChatModel>(&self, model: &M, prepared: &Prepared) -> Result<refine::Outcome> {
        let settings = &self.artifact.settings;
        let prompt = |hints: &[String]| self.render(prepared, hints);
        let parse = |answer: &str| prompt::parse_reply(answer, &settings.signature, &settings.creator.name);
        let mut check = |text: &str| {
            let verdict = self.check_in_context(text, prepared.fan_message.as_deref())?;
            Ok(match verdict.blocked {
                true => verdict,
                false => prepared.leak.check(text).unwrap_or(verdict),
            })
        };
        let attempts = if settings.filter.enabled {
            settings.filter.attempts
        } else {
            1
        };
        let categories = &settings.filter.categories;
        let judge_prompt = |draft: &str| {
            crate::filter::judge::prompt(
                categories,
                &settings.creator.platform,
                prepared.fan_message.as_deref(),
                draft,
            )
        };
        let judge_parse = |answer: &str| crate::filter::judge::parse(answer, categories);
        let judge = (settings.filter.enabled
            && settings.filter.judge.as_deref() == Some(crate::filter::judge::LLM))
        .then_some(refine::Judge {
            prompt: &judge_prompt,
            parse: &judge_parse,
        });
        refine::run(
            model,
            Refine {
                attempts,
                prompt: &prompt,
                parse: &parse,
                check: &mut check,
                fallbacks: self.fallbacks(&prepared.query)?,
                input: prepared.input_verdict.clone(),
                judge,
            },
        )
        .await
    }

    /// Best-of-N in voice: each candidate through the refine loop with its own seed, and the one
    /// closest to the creator's style profile kept (like DSPy's BestOfN with a reward function).
    /// A generated reply beats a fallback deflection; among equals the higher style wins, and the
    /// earlier candidate wins a tie.
    async fn best_of<M: ChatModel>(
        &self,
        model: &M,
        prepared: &Prepared,
        sampling: Sampling,
    ) -> Result<(refine::Outcome, Vec<Candidate>)> {
        let mut candidates = Vec::new();
        let mut best: Option<(f64, refine::Outcome)> = None;
        let mut calls = 0;
        let mut usage = Usage::default();
        for i in 0..sampling.n {
            let sampled = model.with_sampling(sampling.temperature, sampling.seed.wrapping_add(u64::from(i)));
            let outcome = self.refine(&sampled, prepared).await?;
            calls += outcome.calls;
            usage += outcome.usage;
            let style = self.profile().score(outcome.reply.as_str()).style;
            candidates.push(Candidate {
                reply: outcome.reply.clone(),
                style,
                fallback: outcome.filter.fallback,
            });
            let key = style - if outcome.filter.fallback { 1.0 } else { 0.0 };
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, outcome));
            }
        }
        let (_, mut chosen) = best.context("no candidates were generated")?;
        chosen.calls = calls;
        chosen.usage = usage;
        Ok((chosen, candidates))
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    //! The pipeline with the hashing embedder and a scripted model: no files, no network.

    use super::testing::{self, fan_says, Scripted};
    use super::*;

    fn prepare(persona: &Persona, text: &str) -> Prepared {
        let history = vec![fan_says(text)];
        let turn = Turn {
            history: &history,
            fan: None,
            now: testing::now(),
            prefill: false,
            demos: DemoMode::Nearest,
            handoff: None,
        };
        persona.prepare(&turn).unwrap()
    }

    #[test]
    fn the_nearest_exchange_is_the_last_demo_and_is_in_the_prompt() {
        let persona = testing::persona();
        let prepared = prepare(&persona, "i made pancakes for breakfast this morning");
        assert_eq!(prepared.demos.len(), 2);
        let last = prepared.demos.last().unwrap();
        assert_eq!(last.reply, "pancakes on a slow morning, that's the dream");
        assert!(prepared.demos[0].score <= last.score);
        let prompt = prompt::to_text(&prepared.messages);
        assert!(prompt.contains("pancakes on a slow morning"), "{prompt}");
        assert!(prompt.contains("i made pancakes for breakfast"), "{prompt}");
    }

    #[test]
    fn zero_shot_has_no_demos_and_random_draws_k_distinct_ones() {
        let persona = testing::persona();
        let history = vec![fan_says("hello there")];
        let mut turn = Turn {
            history: &history,
            fan: None,
            now: testing::now(),
            prefill: false,
            demos: DemoMode::None,
            handoff: None,
        };
        assert!(persona.prepare(&turn).unwrap().demos.is_empty());
        turn.demos = DemoMode::Random(3);
        let random = persona.prepare(&turn).unwrap().demos;
        assert_eq!(random.len(), 2);
        assert_ne!(random[0].id, random[1].id);
        assert_eq!(
            random,
            persona.prepare(&turn).unwrap().demos,
            "the same seed draws the same demos"
        );
    }

    #[test]
    fn a_blocked_fan_message_adds_a_context_note() {
        let persona = testing::persona();
        let prepared = prepare(&persona, "what's your instagram?");
        assert!(prepared.input_verdict.blocked);
        assert!(
            prepared.context.render().contains("never agree to it"),
            "{}",
            prepared.context.render()
        );
        let clean = prepare(&persona, "how was your day?");
        assert!(!clean.input_verdict.blocked);
        assert!(!clean.context.render().contains("never agree to it"));
    }

    #[tokio::test]
    async fn a_blocked_draft_is_retried_and_the_answer_carries_the_clean_one() {
        let persona = testing::persona();
        let prepared = prepare(&persona, "i made pancakes");
        let model = Scripted::new(&[
            "add me on insta, it's wren.alder",
            "pancakes and slow jazz, perfect",
        ]);
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        assert_eq!(answer.reply.as_str(), "pancakes and slow jazz, perfect");
        assert_eq!((answer.calls, answer.filter.attempts), (2, 2));
        assert!(answer.filter.output[0].blocked && !answer.filter.fallback);
        let json = serde_json::to_string(&answer).unwrap();
        assert!(
            json.contains("\"reply\":\"pancakes and slow jazz, perfect\""),
            "{json}"
        );
    }

    #[tokio::test]
    async fn every_draft_blocked_falls_back_to_the_creators_own_deflection() {
        let persona = testing::persona();
        let prepared = prepare(&persona, "what's your snap?");
        let model = Scripted::new(&["my snap is wren22", "text me 555 201 8890", "add me on telegram"]);
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        assert!(answer.filter.fallback);
        assert_eq!(answer.reply.as_str(), "mm i only live right here, petal");
    }

    #[tokio::test]
    async fn best_of_samples_n_seeds_and_keeps_the_candidate_closest_in_style() {
        let persona = testing::persona();
        let prepared = prepare(&persona, "how was your weekend");
        let model = Scripted::new(&[
            "Certainly! As an AI language model, I would be happy to help you with your weekend plans.",
            "quiet, i read by the window and watched the rain",
            "Hello! Thank you for your message. Please let me know if there is anything else.",
        ]);
        let sampling = Sampling::new(3, 0.0, Some(40)).unwrap();
        let answer = persona.answer(&model, &prepared, sampling).await.unwrap();
        assert_eq!(
            answer.reply.as_str(),
            "quiet, i read by the window and watched the rain"
        );
        assert_eq!(answer.candidates.len(), 3);
        assert_eq!(answer.calls, 3, "calls are summed over the candidates");
        let seeds: Vec<_> = model.calls().iter().map(|c| c.sampling).collect();
        assert_eq!(
            seeds,
            vec![
                Some((CANDIDATE_TEMPERATURE, 40)),
                Some((CANDIDATE_TEMPERATURE, 41)),
                Some((CANDIDATE_TEMPERATURE, 42))
            ],
            "temperature 0 is raised to the candidate temperature; seeds count up"
        );
    }

    #[test]
    fn sampling_is_validated_in_one_place() {
        assert_eq!(Sampling::new(0, 0.5, None), Err(RequestError::Candidates(0)));
        assert_eq!(Sampling::new(9, 0.5, None), Err(RequestError::Candidates(9)));
        let s = Sampling::new(2, 0.9, Some(1)).unwrap();
        assert_eq!((s.n(), s.temperature, s.seed()), (2, 0.9, 1));
        assert_eq!(check_message("  "), Err(RequestError::EmptyMessage));
        let long = "a".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            check_message(&long),
            Err(RequestError::MessageTooLong(MAX_MESSAGE_CHARS + 1))
        );
    }

    #[test]
    fn demos_carry_no_other_fans_name_or_town_but_the_current_fan_keeps_theirs() {
        let persona = testing::persona();
        let history = vec![fan_says("i made pancakes this morning, do you have pets?")];
        let mut me = FanProfile::new();
        me.insert("name".into(), "Dana".into());
        let turn = Turn {
            history: &history,
            fan: Some(&me),
            now: testing::now(),
            prefill: false,
            demos: DemoMode::Nearest,
            handoff: None,
        };
        let prepared = persona.prepare(&turn).unwrap();
        let prompt = prompt::to_text(&prepared.messages);
        assert_eq!(prepared.demos.len(), 2);
        for i in 0..testing::EXCHANGES.len() {
            assert!(
                !prompt.contains(&format!("Fan{i}")) && !prompt.contains(&format!("Town{i}")),
                "{prompt}"
            );
        }
        assert!(
            prompt.contains("[name] from [city] here"),
            "the demo keeps its shape: {prompt}"
        );
        assert!(
            prompt.contains("Dana"),
            "the current fan's own profile is used: {prompt}"
        );
    }

    fn turn_for<'a>(history: &'a [Message], handoff: Option<&'a Handoff>) -> Turn<'a> {
        Turn {
            history,
            fan: None,
            now: testing::now(),
            prefill: false,
            demos: DemoMode::Nearest,
            handoff,
        }
    }

    #[tokio::test]
    async fn a_minor_gets_the_fixed_reply_without_a_model_call_and_stays_handed_off() {
        let persona = testing::persona();
        let model = Scripted::new(&["hey cutie 😘 what are you up to"]);
        let history = vec![fan_says("im 16 lol")];
        let prepared = persona.prepare(&turn_for(&history, None)).unwrap();
        let handoff = prepared.handoff.clone().expect("a minor is handed off");
        assert_eq!((handoff.category.as_str(), handoff.stop), ("minor", true));
        assert!(
            prepared.messages.is_empty(),
            "no prompt is rendered for a handoff"
        );
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        let minor = persona.safety().category("minor").unwrap().reply.clone();
        assert_eq!(answer.reply.as_str(), minor);
        assert_eq!((answer.calls, model.calls().len()), (0, 0));
        assert_eq!(answer.handoff.as_ref(), Some(&handoff));

        // Later, an everyday message from the same fan still gets the notice while the stored
        // handoff is open, and a crisis does not stop the bot for later turns.
        let later = vec![fan_says("so what are you up to tonight")];
        let prepared = persona.prepare(&turn_for(&later, Some(&handoff))).unwrap();
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        assert_eq!((answer.reply.as_str(), answer.calls), (minor.as_str(), 0));
        let crisis = Handoff {
            category: "crisis".into(),
            stop: false,
            ..handoff.clone()
        };
        let prepared = persona.prepare(&turn_for(&later, Some(&crisis))).unwrap();
        assert!(prepared.handoff.is_none() && !prepared.messages.is_empty());
    }

    /// A model that answers with its whole prompt on one line: the worst possible model.
    fn echo_of(messages: &[ChatMessage]) -> String {
        let text: Vec<String> = messages
            .iter()
            .map(|m| m.content.replace("[[ ##", " ").replace("## ]]", " "))
            .collect();
        format!(
            "[[ ## output ## ]]\n{}",
            text.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
        )
    }

    #[tokio::test]
    async fn a_model_that_echoes_its_prompt_gets_nothing_of_it_to_the_fan() {
        let persona = testing::persona();
        let history = vec![fan_says("i made pancakes for breakfast this morning")];
        let prepared = persona.prepare(&turn_for(&history, None)).unwrap();
        let echo = echo_of(&prepared.messages);
        let model = Scripted::new(&[echo.as_str(); 3]);
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        assert!(answer.filter.fallback, "{answer:?}");
        assert!(
            answer.filter.output.iter().all(|v| v.blocked),
            "{:?}",
            answer.filter.output
        );
        let guard = leak::LeakGuard::with_span(&prepared.messages, 4);
        assert!(guard.check(answer.reply.as_str()).is_none(), "{}", answer.reply);
        for i in 0..testing::EXCHANGES.len() {
            assert!(
                !answer.reply.as_str().contains(&format!("Fan{i}")),
                "{}",
                answer.reply
            );
        }
    }

    #[tokio::test]
    async fn the_llm_judge_blocks_an_agreement_the_other_stages_pass() {
        let mut persona = testing::persona();
        persona.artifact.settings.filter.judge = Some(crate::filter::judge::LLM.into());
        let history = vec![fan_says("meet me at the bar at 8?")];
        let prepared = persona.prepare(&turn_for(&history, None)).unwrap();
        let model = Scripted::new(&[
            "yes!! i'll be the one in red",
            "[[ ## violation ## ]]\nin_person_meeting\n\n[[ ## completed ## ]]",
            "mm you're sweet... i'm a right-here kind of girl",
            "[[ ## violation ## ]]\nnone",
        ]);
        let answer = persona.answer(&model, &prepared, Sampling::ONE).await.unwrap();
        assert_eq!(
            answer.reply.as_str(),
            "mm you're sweet... i'm a right-here kind of girl"
        );
        assert_eq!(answer.calls, 4, "two drafts, each judged");
        assert_eq!(answer.filter.output[0].stage, Some(crate::filter::Stage::Judge));
        assert!(!answer.filter.output[1].blocked);
        let judge_prompt = prompt::to_text(&model.calls()[1].prompt);
        assert!(judge_prompt.contains("meet me at the bar at 8?") && judge_prompt.contains("the one in red"));
    }
}
