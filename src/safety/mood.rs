//! How the fan seems: a mood read from their last messages, for the context stage.
//!
//! The same learned machinery as the filter and the safety check: one classifier per mood over
//! the message's embedding and hashed words, trained at compile time on the labelled set shipped
//! in `eval/mood_labelled.jsonl` (`{"text", "mood"}`; `neutral` is the absence of a mood), and
//! the mood whose score clears its threshold by the widest margin wins. `crisis` is the far end
//! of this scale and is not a mood here: the safety check hands such a fan to a human before any
//! mood is read. The context stage words the mood as a note with how to meet it.

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::conversation::Message;
use crate::embed::Embedder;
use crate::filter::features::{Spelling, Words};
use crate::filter::learned::TrainOptions;
use crate::filter::train::{LabelledText, LearnedFilter, Recipe};
use crate::filter::{Category, Filter, FilterSettings};

/// The labelled set compiled into persona.
pub const SHIPPED_CORPUS: (&str, &str) = (
    "eval/mood_labelled.jsonl (built in)",
    include_str!("../../eval/mood_labelled.jsonl"),
);

/// The moods and how a reply meets each; `neutral` (no note) is the rest.
pub const MOODS: &[(&str, &str)] = &[
    (
        "sad",
        "be warm and gentle, ask softly, no teasing and no flirting",
    ),
    (
        "lonely",
        "be warm and present, make them feel seen, no pushing for anything",
    ),
    (
        "stressed",
        "be calm and kind, keep it light and short, no demands",
    ),
    (
        "angry",
        "stay calm and kind, acknowledge it, never argue or tease",
    ),
    ("excited", "match their energy and share the joy"),
    ("flirty", "play along in your own voice, within the rules"),
];

/// The label for no particular mood.
pub const NEUTRAL: &str = "neutral";

/// Fan messages, newest last, that the mood is read from.
pub const MOOD_MESSAGES: usize = 2;

/// How mood classifiers are trained: a balanced operating point (recall 0.8 within 5% false
/// positives), since a missed mood costs a note, not a fan; another mood's text is a negative (a
/// sad message should not read as angry); the compact word features.
pub fn recipe() -> Recipe {
    Recipe {
        options: TrainOptions {
            target_recall: 0.8,
            max_false_positive_rate: 0.05,
            ..crate::filter::train::options()
        },
        words: Words::COMPACT,
        fan_context: false,
        others_negative: true,
        spelling: Spelling::Expanded,
    }
}

/// The mood names, in order.
pub fn names() -> Vec<String> {
    MOODS.iter().map(|(m, _)| m.to_string()).collect()
}

/// The filter whose categories are the moods: no lexicon, only the learned stage.
pub fn filter_settings() -> FilterSettings {
    let categories = MOODS
        .iter()
        .map(|(name, how)| Category {
            name: name.to_string(),
            description: how.to_string(),
            detectors: Vec::new(),
            block: Vec::new(),
            allow: Vec::new(),
            patterns: Vec::new(),
            allow_patterns: Vec::new(),
            examples: Vec::new(),
        })
        .collect();
    FilterSettings::classifier(categories, true, true)
}

#[derive(Deserialize)]
struct Line {
    text: String,
    mood: String,
}

/// Parses a mood set (`{"text", "mood"}` per line, `neutral` for none); `name` is used in errors.
pub fn parse(name: &str, content: &str) -> Result<Vec<LabelledText>> {
    let known = names();
    let mut out = Vec::new();
    for (n, parsed) in crate::jsonl::parse::<Line>(name, content, "{\"text\": string, \"mood\": string}")? {
        let place = || format!("`{name}` line {n}");
        if parsed.text.trim().is_empty() {
            bail!(
                "{}: the text is empty; remove the line or write the text",
                place()
            );
        }
        let category = match parsed.mood.as_str() {
            NEUTRAL => None,
            m if known.iter().any(|k| k == m) => Some(m.to_string()),
            m => bail!(
                "{}: unknown mood `{m}`; use one of {} or {NEUTRAL}",
                place(),
                known.join(", ")
            ),
        };
        out.push(LabelledText {
            text: parsed.text,
            category,
            fan_message: None,
        });
    }
    Ok(out)
}

/// A compiled mood reader.
pub struct MoodReader {
    filter: Filter,
}

impl MoodReader {
    /// The reader for a trained model; `None` when the artifact has none.
    pub fn new(learned: &LearnedFilter, dims: usize) -> Result<Option<Self>> {
        if learned.categories.is_empty() {
            return Ok(None);
        }
        let filter = Filter::new(filter_settings())?.with_learned(learned.clone(), dims)?;
        Ok(Some(MoodReader { filter }))
    }

    /// The mood of one text, `None` for neutral.
    pub fn read(&self, text: &str, embedder: &mut dyn Embedder) -> Result<Option<String>> {
        Ok(self.filter.check(text, Some(embedder))?.category)
    }

    /// The mood of the fan's last [`MOOD_MESSAGES`] messages of the conversation (the current
    /// one last), read as one text.
    pub fn read_history(&self, history: &[Message], embedder: &mut dyn Embedder) -> Result<Option<String>> {
        let recent: Vec<&str> = history
            .iter()
            .rev()
            .filter(|m| !m.from_creator)
            .take(MOOD_MESSAGES)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if recent.is_empty() {
            return Ok(None);
        }
        self.read(&recent.join(" "), embedder)
    }
}

/// The context note for a mood.
pub fn note(mood: &str) -> Option<String> {
    MOODS
        .iter()
        .find(|(m, _)| *m == mood)
        .map(|(m, how)| format!("the fan seems {m}: {how}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_set_parses_with_every_mood_and_neutral() {
        let texts = parse(SHIPPED_CORPUS.0, SHIPPED_CORPUS.1).unwrap();
        for m in names() {
            assert!(
                texts
                    .iter()
                    .filter(|t| t.category.as_deref() == Some(m.as_str()))
                    .count()
                    >= 50,
                "{m}"
            );
        }
        assert!(texts.iter().any(|t| t.category.is_none()));
        let err = parse("m.jsonl", "{\"text\": \"hi\", \"mood\": \"grumpy\"}").unwrap_err();
        assert!(format!("{err:#}").contains("`m.jsonl` line 1: unknown mood `grumpy`"));
    }

    #[test]
    fn notes_say_how_to_meet_the_mood() {
        assert!(note("sad").unwrap().contains("no flirting"));
        assert_eq!(note(NEUTRAL), None);
    }
}
