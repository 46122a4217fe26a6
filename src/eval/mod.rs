//! `persona eval`: voice fidelity on held-out turns, for the real pipeline and its baselines.
//!
//! Runs each system (`zero_shot`: the signature alone; `random_k`: k random gold demos, like
//! DSPy's LabeledFewShot; `knn`: the real pipeline; or `responses`: replies given in a file) on the
//! same held-out turns with the same LLM settings, scores every reply (`style`, `semantic`,
//! violations, `voice_fidelity`), checks that the metric itself tells the creator's voice from an
//! assistant's on the contrast set, and builds the report. Metrics are in `metrics`, `style` and
//! `copying` (near-verbatim copies of training replies); rendering the report is in `report`.

pub mod copying;
pub mod injection;
pub mod metrics;
pub mod report;
pub mod retrieval;
pub mod style;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::answer::{DemoMode, Persona, Sampling, Turn};
use crate::conversation::dataset;
use crate::conversation::{FanProfile, Message};
use crate::eval::style::StyleProfile;
use crate::llm::ChatModel;
use metrics::Interval;

/// Bootstrap resamples per interval.
pub const BOOTSTRAP: usize = 1000;

/// A system under evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// No demos.
    ZeroShot,
    /// k random demos.
    RandomK,
    /// The k nearest demos.
    Knn,
    /// Best-of-3 in voice: three candidates sampled as [`Sampling`] documents, the closest in
    /// style kept.
    BestOf3,
    /// The first of those three candidates alone: N = 1 at the same temperature, the baseline for
    /// what best-of-3 buys.
    Sampled1,
    /// Replies from `--responses`.
    Responses,
}

impl System {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::ZeroShot => "zero_shot",
            System::RandomK => "random_k",
            System::Knn => "knn",
            System::BestOf3 => "best_of_3",
            System::Sampled1 => "sampled_1",
            System::Responses => "responses",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Result<System> {
        Ok(match name {
            "zero_shot" => System::ZeroShot,
            "random_k" => System::RandomK,
            "knn" => System::Knn,
            "best_of_3" => System::BestOf3,
            other => bail!("unknown system `{other}`; use zero_shot, random_k, knn or best_of_3"),
        })
    }
}

/// One held-out creator turn.
#[derive(Debug, Clone)]
pub struct Item {
    /// The conversation's id or index.
    pub conversation: String,
    /// The messages before the reply.
    pub history: Vec<Message>,
    /// The fan's profile.
    pub fan: Option<FanProfile>,
    /// The creator's real reply.
    pub real: String,
    /// The moment of the reply.
    pub now: Timestamp,
}

/// The held-out turns: from a file in the training-data schema, or the artifact's held-out set.
pub fn items(persona: &Persona, heldout: Option<&Path>) -> Result<Vec<Item>> {
    // (index in its dataset, conversation) for every held-out conversation.
    let conversations: Vec<(usize, crate::conversation::Conversation)> = match heldout {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the held-out set `{}`", path.display()))?;
            let conversations = dataset::parse(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the held-out set `{}` is invalid at {}: {}",
                    path.display(),
                    e.place,
                    e.problem
                )
            })?;
            conversations.into_iter().enumerate().collect()
        }
        None => {
            let a = &persona.artifact;
            if a.manifest.heldout.conversations.is_empty() {
                bail!(
                    "the artifact has no held-out conversations (it was compiled with --holdout 0); recompile with \
                     `persona compile <data> --holdout 0.2` or pass --heldout FILE"
                );
            }
            a.manifest
                .heldout
                .conversations
                .iter()
                .map(|&c| a.conversations.get(c).map(|conversation| (c, conversation)))
                .collect::<Result<_>>()?
        }
    };
    // A fixed moment for turns without timestamps, so runs repeat.
    let fallback_now: Timestamp = "2026-01-15T02:00:00Z".parse().context("the fixed eval time")?;
    let mut out = Vec::new();
    for (c, conversation) in &conversations {
        for (t, m) in conversation.messages.iter().enumerate() {
            if !m.from_creator || t == 0 {
                continue;
            }
            let history = conversation.messages[..t].to_vec();
            let now = m
                .sent_at
                .or_else(|| history.last().and_then(|h| h.sent_at))
                .unwrap_or(fallback_now);
            out.push(Item {
                conversation: conversation.id.clone().unwrap_or_else(|| format!("#{c}")),
                history,
                fan: conversation.fan.clone(),
                real: m.content.clone(),
                now,
            });
        }
    }
    if out.is_empty() {
        bail!("the held-out set has no creator replies to score");
    }
    Ok(out)
}

/// A reply of a system to one item.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The final reply.
    pub text: String,
    /// Whether the first draft was blocked by the filter (`None` when there was no draft).
    pub draft_blocked: Option<bool>,
    /// The gold replies of the demos the reply was written from.
    pub demos: Vec<String>,
}

/// Generates the replies of one LLM system through the answer pipeline. `best_of_3` also yields
/// `sampled_1`, the first of its three candidates alone, so the two are compared on the same
/// samples; every other system yields itself.
pub async fn generate<M: ChatModel>(
    persona: &Persona,
    model: &M,
    system: System,
    items: &[Item],
    prefill: bool,
    sampling: Sampling,
    progress: &mut dyn FnMut(),
) -> Result<Vec<(System, Vec<Reply>)>> {
    let mut replies = Vec::with_capacity(items.len());
    let mut firsts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let seed = sampling_seed(sampling, i);
        let demos = match system {
            System::ZeroShot => DemoMode::None,
            System::RandomK => DemoMode::Random(seed),
            System::Knn | System::BestOf3 | System::Sampled1 | System::Responses => DemoMode::Nearest,
        };
        let turn = Turn {
            history: &item.history,
            fan: item.fan.as_ref(),
            now: item.now,
            prefill,
            demos,
            handoff: None,
        };
        let prepared = persona.prepare(&turn)?;
        let sampling = if system == System::BestOf3 {
            sampling.reseeded(seed)
        } else {
            Sampling::ONE
        };
        let answer = persona
            .answer(model, &prepared, sampling)
            .await
            .with_context(|| format!("system {} on held-out turn {i}", system.name()))?;
        if let Some(first) = answer.candidates.first() {
            firsts.push(Reply {
                text: first.reply.as_str().to_string(),
                draft_blocked: None,
                demos: answer.demos.iter().map(|d| d.reply.clone()).collect(),
            });
        }
        replies.push(Reply {
            text: answer.reply.as_str().to_string(),
            draft_blocked: answer.filter.output.first().map(|v| v.blocked),
            demos: answer.demos.iter().map(|d| d.reply.clone()).collect(),
        });
        progress();
    }
    let mut out = vec![(system, replies)];
    if system == System::BestOf3 {
        out.push((System::Sampled1, firsts));
    }
    Ok(out)
}

/// The seed of held-out turn `i`: random demos and best-of candidates differ per turn and repeat
/// per run.
fn sampling_seed(sampling: Sampling, i: usize) -> u64 {
    sampling.seed().wrapping_add(1000 * i as u64)
}

/// One line of a `--responses` file.
#[derive(Debug, Deserialize)]
struct ResponseLine {
    index: usize,
    response: String,
}

/// Reads `--responses`: one `{"index", "response"}` per held-out turn, every index exactly once.
pub fn read_responses(path: &Path, n: usize) -> Result<Vec<Reply>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the responses `{}`", path.display()))?;
    let mut by_index: BTreeMap<usize, String> = BTreeMap::new();
    let name = path.display().to_string();
    let shape = "{\"index\": number, \"response\": string}";
    for (line_no, r) in crate::jsonl::parse::<ResponseLine>(&name, &text, shape)? {
        if r.index >= n {
            bail!(
                "`{name}` line {line_no}: index {} is out of range; there are {n} held-out turns (0 to {})",
                r.index,
                n.saturating_sub(1)
            );
        }
        if by_index.insert(r.index, r.response).is_some() {
            bail!("`{name}` line {line_no}: index {} appears twice", r.index);
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        bail!(
            "`{}` has no response for {} held-out turn(s): {}{}; give one line per index 0 to {}",
            path.display(),
            missing.len(),
            shown.join(", "),
            if missing.len() > 10 { ", ..." } else { "" },
            n - 1
        );
    }
    Ok(by_index
        .into_values()
        .map(|text| Reply {
            text,
            draft_blocked: None,
            demos: Vec::new(),
        })
        .collect())
}

/// The creator's replies the artifact was compiled from, each with the conversation before it:
/// what demos are drawn from.
pub(crate) fn training_turns(persona: &Persona) -> Result<Vec<(Vec<Message>, Message)>> {
    let a = &persona.artifact;
    let mut decoded = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(a.examples.len());
    for e in &a.examples {
        if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(e.conversation) {
            slot.insert(a.conversations.get(e.conversation as usize)?);
        }
        let conversation = &decoded[&e.conversation];
        let turn = e.turn as usize;
        let (before, reply) = conversation
            .messages
            .get(..turn)
            .zip(conversation.messages.get(turn))
            .context("an example outside its conversation; recompile the artifact")?;
        out.push((before.to_vec(), reply.clone()));
    }
    Ok(out)
}

/// The training replies as text and as words, for copy detection.
pub struct TrainingReplies {
    /// The replies.
    pub texts: Vec<String>,
    /// Each reply's words ([`copying::words`]).
    pub words: Vec<Vec<String>>,
}

impl TrainingReplies {
    /// The persona's training replies.
    pub fn of(persona: &Persona) -> Result<Self> {
        let texts: Vec<String> = training_turns(persona)?
            .into_iter()
            .map(|(_, r)| r.content)
            .collect();
        let words = texts.iter().map(|t| copying::words(t)).collect();
        Ok(TrainingReplies { texts, words })
    }
}

/// Per-item scores.
#[derive(Debug, Clone, Serialize)]
pub struct ItemScore {
    /// Held-out turn index.
    pub index: usize,
    /// System name.
    pub system: &'static str,
    /// The reply scored.
    pub reply: String,
    /// voice_fidelity.
    pub voice_fidelity: f64,
    /// semantic.
    pub semantic: f64,
    /// style.
    pub style: f64,
    /// Whether the final reply is blocked by the filter.
    pub violates: bool,
    /// How much of it is copied from its demos or any training reply.
    pub copying: copying::Copying,
}

/// A system's summary.
#[derive(Debug, Clone, Serialize)]
pub struct SystemSummary {
    /// voice_fidelity with its interval.
    pub voice_fidelity: Interval,
    /// semantic with its interval.
    pub semantic: Interval,
    /// style with its interval.
    pub style: Interval,
    /// Violation shares before and after the filter stage.
    pub violations: Violations,
    /// Share of replies that are near-verbatim copies of a training reply.
    pub copy_rate: f64,
    /// The longest span of words shared with one of the reply's own demos, on average.
    pub demo_span: f64,
}

/// Shares of replies the filter blocks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Violations {
    /// First drafts blocked (before the filter stage), when drafts exist.
    pub draft: Option<f64>,
    /// Final replies blocked (after the filter stage).
    #[serde(rename = "final")]
    pub final_: f64,
}

/// What every system's replies are scored against: the held-out turns, their real replies'
/// vectors, and the training replies (for copies).
pub struct Reference<'a> {
    /// The held-out turns.
    pub items: &'a [Item],
    /// The embedding of each turn's real reply.
    pub real_vectors: &'a [Vec<f32>],
    /// The training replies.
    pub training: &'a TrainingReplies,
}

/// Scores the replies of one system.
pub fn score(
    persona: &Persona,
    profile: &StyleProfile,
    system: System,
    reference: &Reference<'_>,
    replies: &[Reply],
    seed: u64,
) -> Result<(SystemSummary, Vec<ItemScore>)> {
    let Reference {
        items,
        real_vectors,
        training,
    } = *reference;
    let texts: Vec<&str> = replies.iter().map(|r| r.text.as_str()).collect();
    let vectors = persona.embed(&texts)?;
    let mut scores = Vec::with_capacity(items.len());
    for (i, (reply, vector)) in replies.iter().zip(&vectors).enumerate() {
        let style = profile.score(&reply.text).style;
        let semantic = metrics::semantic(vector, &real_vectors[i]);
        let fan = items[i]
            .history
            .iter()
            .rev()
            .find(|m| !m.from_creator)
            .map(|m| m.content.as_str());
        let violates = persona.check_in_context(&reply.text, fan)?.blocked;
        let demos: Vec<Vec<String>> = reply.demos.iter().map(|d| copying::words(d)).collect();
        let copying = copying::measure(&reply.text, &demos, &training.words);
        scores.push(ItemScore {
            index: i,
            system: system.name(),
            reply: reply.text.clone(),
            voice_fidelity: metrics::voice_fidelity(style, semantic, violates, copying.copied),
            semantic,
            style,
            violates,
            copying,
        });
    }
    let column = |f: fn(&ItemScore) -> f64| scores.iter().map(f).collect::<Vec<f64>>();
    let drafts: Vec<bool> = replies.iter().filter_map(|r| r.draft_blocked).collect();
    let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let summary = SystemSummary {
        voice_fidelity: metrics::bootstrap(&column(|s| s.voice_fidelity), BOOTSTRAP, seed),
        semantic: metrics::bootstrap(&column(|s| s.semantic), BOOTSTRAP, seed),
        style: metrics::bootstrap(&column(|s| s.style), BOOTSTRAP, seed),
        violations: Violations {
            draft: (!drafts.is_empty()).then(|| share(drafts.iter().filter(|b| **b).count(), drafts.len())),
            final_: share(scores.iter().filter(|s| s.violates).count(), scores.len()),
        },
        copy_rate: share(scores.iter().filter(|s| s.copying.copied).count(), scores.len()),
        demo_span: column(|s| s.copying.demo_span as f64).iter().sum::<f64>() / scores.len().max(1) as f64,
    };
    Ok((summary, scores))
}

/// One line of the contrast set.
#[derive(Debug, Deserialize)]
struct ContrastLine {
    real: String,
    voice: String,
    assistant: String,
    /// Another creator's reply to the same message, in her own voice (optional).
    #[serde(default)]
    other: Option<String>,
}

/// How well the metric tells the creator from another creator answering the same messages: a
/// harder contrast than an assistant, since both are people writing chat.
#[derive(Debug, Clone, Serialize)]
pub struct OtherCreator {
    /// Turns with another creator's reply.
    pub turns: usize,
    /// Pairwise accuracy of `style`: real and in-voice replies above the other creator's.
    pub style: f64,
    /// Pairwise accuracy of `voice_fidelity`: the in-voice reply above the other creator's, both
    /// scored against the real reply.
    pub voice_fidelity: f64,
    /// The floor both must reach.
    pub floor: f64,
}

/// How well the metric tells the creator's voice from an assistant's.
#[derive(Debug, Clone, Serialize)]
pub struct Validity {
    /// The contrast set.
    pub contrast: PathBuf,
    /// Turns in it.
    pub turns: usize,
    /// Pairwise accuracy of `style`: real and in-voice replies above assistant replies.
    pub style: f64,
    /// Pairwise accuracy of `voice_fidelity`: an in-voice reply above an assistant reply, both
    /// scored against the real reply.
    pub voice_fidelity: f64,
    /// Pairwise accuracy of each part of `style` alone: surface, trigrams, words.
    pub style_parts: BTreeMap<&'static str, f64>,
    /// The floor both must reach.
    pub floor: f64,
    /// The same against another creator, when the contrast set has `other` replies.
    pub other_creator: Option<OtherCreator>,
    /// The copy rule's effect.
    pub copies: CopyContrast,
}

/// What the copy rule does on the contrast set: the in-voice reply against the training reply
/// closest to the real one, sent verbatim (what a model that parrots its best demo would send).
#[derive(Debug, Clone, Serialize)]
pub struct CopyContrast {
    /// Turns compared.
    pub turns: usize,
    /// Of those verbatim training replies, how many the rule flags as copies (a reply under
    /// [`copying::MIN_SPAN`] words cannot be told from a coincidence).
    pub flagged: usize,
    /// Pairwise accuracy of `voice_fidelity`, the in-voice reply above the copy, without the rule.
    pub without_rule: f64,
    /// The same with the rule.
    pub with_rule: f64,
}

/// Measures validity on a contrast set: against the assistant replies with `floor`, against
/// another creator's replies, where the set has them, with `other_floor`, and against verbatim
/// copies of `training` replies.
pub fn validity(
    persona: &Persona,
    profile: &StyleProfile,
    path: &Path,
    floor: f64,
    other_floor: f64,
    training: &TrainingReplies,
) -> Result<Validity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the contrast set `{}`", path.display()))?;
    let shape = "{\"real\", \"voice\", \"assistant\"} strings (and optionally \"other\")";
    let lines: Vec<ContrastLine> = crate::jsonl::parse(&path.display().to_string(), &text, shape)?
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    if lines.is_empty() {
        bail!("the contrast set `{}` is empty", path.display());
    }
    let mut style_pairs = Vec::new();
    let mut vf_pairs = Vec::new();
    let mut parts: [Vec<(f64, f64)>; 3] = Default::default();
    let texts: Vec<&str> = lines
        .iter()
        .flat_map(|l| [l.real.as_str(), l.voice.as_str(), l.assistant.as_str()])
        .collect();
    let vectors = persona.embed(&texts)?;
    for (l, v) in lines.iter().zip(vectors.chunks_exact(3)) {
        let (r, vo, a) = (
            profile.score(&l.real),
            profile.score(&l.voice),
            profile.score(&l.assistant),
        );
        for x in [r, vo] {
            parts[0].push((x.surface, a.surface));
            parts[1].push((x.trigrams, a.trigrams));
            parts[2].push((x.words, a.words));
        }
        let (real, voice, assistant) = (r.style, vo.style, a.style);
        style_pairs.push((real, assistant));
        style_pairs.push((voice, assistant));
        let vf_voice = metrics::voice_fidelity(voice, metrics::semantic(&v[1], &v[0]), false, false);
        let vf_assistant = metrics::voice_fidelity(assistant, metrics::semantic(&v[2], &v[0]), false, false);
        vf_pairs.push((vf_voice, vf_assistant));
    }
    let others: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.other.as_deref().map(|o| (i, o)))
        .collect();
    let other_creator = if others.is_empty() {
        None
    } else {
        let other_vectors = persona.embed(&others.iter().map(|(_, o)| *o).collect::<Vec<_>>())?;
        let mut style_pairs = Vec::new();
        let mut vf_pairs = Vec::new();
        for ((i, other), ov) in others.iter().zip(&other_vectors) {
            let (l, v) = (&lines[*i], &vectors[3 * i..3 * i + 3]);
            let (real, voice, other) = (
                profile.score(&l.real).style,
                profile.score(&l.voice).style,
                profile.score(other).style,
            );
            style_pairs.push((real, other));
            style_pairs.push((voice, other));
            let vf_voice = metrics::voice_fidelity(voice, metrics::semantic(&v[1], &v[0]), false, false);
            let vf_other = metrics::voice_fidelity(other, metrics::semantic(ov, &v[0]), false, false);
            vf_pairs.push((vf_voice, vf_other));
        }
        Some(OtherCreator {
            turns: others.len(),
            style: metrics::pairwise_accuracy(&style_pairs),
            voice_fidelity: metrics::pairwise_accuracy(&vf_pairs),
            floor: other_floor,
        })
    };
    let copies = copy_contrast(persona, profile, &lines, &vectors, training)?;
    Ok(Validity {
        contrast: path.to_path_buf(),
        turns: lines.len(),
        style: metrics::pairwise_accuracy(&style_pairs),
        voice_fidelity: metrics::pairwise_accuracy(&vf_pairs),
        style_parts: ["surface", "trigrams", "words"]
            .into_iter()
            .zip(parts.iter().map(|p| metrics::pairwise_accuracy(p)))
            .collect(),
        floor,
        other_creator,
        copies,
    })
}

/// The copy rule on the contrast set: see [`CopyContrast`]. `vectors` holds each line's real,
/// in-voice and assistant vectors, in that order.
fn copy_contrast(
    persona: &Persona,
    profile: &StyleProfile,
    lines: &[ContrastLine],
    vectors: &[Vec<f32>],
    training: &TrainingReplies,
) -> Result<CopyContrast> {
    let refs: Vec<&str> = training.texts.iter().map(String::as_str).collect();
    let train_vectors = persona.embed(&refs)?;
    let (mut without, mut with, mut flagged) = (Vec::new(), Vec::new(), 0);
    for (l, v) in lines.iter().zip(vectors.chunks_exact(3)) {
        // Never the real reply itself (an artifact compiled without a hold-out holds it).
        let nearest = train_vectors
            .iter()
            .map(|t| metrics::semantic(t, &v[0]))
            .enumerate()
            .filter(|(j, _)| training.texts[*j].trim() != l.real.trim())
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((j, semantic)) = nearest else {
            continue;
        };
        let copy = &training.texts[j];
        let copied = copying::measure(copy, &[], &training.words).copied;
        flagged += usize::from(copied);
        let style = profile.score(copy).style;
        let voice = metrics::voice_fidelity(
            profile.score(&l.voice).style,
            metrics::semantic(&v[1], &v[0]),
            false,
            false,
        );
        without.push((voice, metrics::voice_fidelity(style, semantic, false, false)));
        with.push((voice, metrics::voice_fidelity(style, semantic, false, copied)));
    }
    Ok(CopyContrast {
        turns: without.len(),
        flagged,
        without_rule: metrics::pairwise_accuracy(&without),
        with_rule: metrics::pairwise_accuracy(&with),
    })
}

/// The paired difference of two systems on one metric, with its bootstrap interval.
pub fn difference(a: &[ItemScore], b: &[ItemScore], metric: fn(&ItemScore) -> f64, seed: u64) -> Interval {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| metric(x) - metric(y)).collect();
    metrics::bootstrap(&diffs, BOOTSTRAP, seed)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::answer::testing;

    fn contrast(lines: &[serde_json::Value]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    #[test]
    fn another_creator_is_scored_like_any_contrast_voice_and_only_where_given() {
        let persona = testing::persona();
        let training = TrainingReplies::of(&persona).unwrap();
        let profile = StyleProfile::build(
            &["mm hi petal~ the kettle is on", "haha stop it~ you're sweet"],
            &["hey whats up", "how was your day"],
        );
        let line = |real: &str, voice: &str, assistant: &str| serde_json::json!({"real": real, "voice": voice, "assistant": assistant});
        let lines = [
            line(
                "mm morning~ tea?",
                "mm the kettle sings~",
                "Good morning! How can I help you today?",
            ),
            line(
                "haha stop~",
                "hehe you're sweet~",
                "Thank you for your kind words!",
            ),
        ];
        let without = contrast(&lines);
        let v = validity(&persona, &profile, without.path(), 0.85, 0.75, &training).unwrap();
        assert!(v.other_creator.is_none(), "no `other` field, no figure");
        // The other creator here writes exactly the assistant's replies: her figures must be the
        // assistant's, pair for pair.
        let with: Vec<_> = lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l["other"] = l["assistant"].clone();
                l
            })
            .collect();
        let with = contrast(&with);
        let v = validity(&persona, &profile, with.path(), 0.85, 0.75, &training).unwrap();
        let o = v.other_creator.expect("the figure is there");
        assert_eq!(o.turns, 2);
        assert_eq!((o.style, o.voice_fidelity), (v.style, v.voice_fidelity));
        assert_eq!(o.floor, 0.75);
    }
}
