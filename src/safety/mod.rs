//! Safety categories on the fan's message, and the handoff to a human they trigger.
//!
//! Some fans must not get an improvised in-voice reply: a fan who says or implies they are under
//! 18 (`minor`) and a fan talking of self-harm, suicide, abuse or an emergency (`crisis`). The
//! categories are configured like the topic filter's (defaults in `defaults.toml`, overridable in
//! `[safety]` of `persona.toml`, compiled into the artifact) and detected with the same machinery:
//! a [`Filter`] over the categories' lexicon and patterns plus a learned classifier trained at
//! compile time on `eval/safety_labelled.jsonl`, the user's files and the training data's fan
//! messages as negatives. A hit yields the category's fixed `reply` and a [`Handoff`]; what the
//! pipeline does with them is in [`crate::answer`], where they are stored in [`crate::history`].

pub mod mood;

use std::path::PathBuf;

use anyhow::{bail, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::filter::features::{Spelling, Words};
use crate::filter::learned::TrainOptions;
use crate::filter::train::{LearnedFilter, Recipe};
use crate::filter::{Category, Filter, FilterSettings};

/// The default categories, shipped with persona.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// The labelled corpus compiled into persona: `eval/safety_labelled.jsonl`.
pub const SHIPPED_CORPUS: (&str, &str) = (
    "eval/safety_labelled.jsonl (built in)",
    include_str!("../../eval/safety_labelled.jsonl"),
);

/// The categories the built-in corpus labels.
pub fn default_categories() -> Vec<String> {
    vec!["minor".into(), "crisis".into()]
}

/// How the safety classifier is trained: the topic filter's options, with a 3% budget of
/// out-of-fold false positives instead of 1%. A needless handoff costs a person a look at the
/// chat; a missed minor or crisis costs far more, and the labelled negatives are mostly traps
/// written to look alike ("i'm 40 but act 12"), harder than everyday messages.
pub fn recipe() -> Recipe {
    Recipe {
        options: TrainOptions {
            max_false_positive_rate: 0.03,
            ..crate::filter::train::options()
        },
        words: Words::COMPACT,
        fan_context: false,
        others_negative: true,
        spelling: Spelling::Expanded,
    }
}

/// One safety category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyCategory {
    /// Name reported in handoffs, e.g. `minor`.
    pub name: String,
    /// What the category covers.
    pub description: String,
    /// The reply sent instead of a generated one. It must pass the topic filter (checked at
    /// compile).
    pub reply: String,
    /// Whether the persona stops answering the fan (sending `reply` every time) until a human
    /// clears the handoff.
    #[serde(default)]
    pub stop: bool,
    /// Terms that match, on word boundaries after normalization.
    #[serde(default)]
    pub block: Vec<String>,
    /// Terms whose spans are exempt.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Regular expressions over the normalized text.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Regular expressions whose matches are exempt.
    #[serde(default)]
    pub allow_patterns: Vec<String>,
    /// Example phrases (kept for symmetry with the topic filter; the semantic stage is off here).
    #[serde(default)]
    pub examples: Vec<String>,
}

impl SafetyCategory {
    /// The category as a filter rule.
    fn rule(&self) -> Category {
        Category {
            name: self.name.clone(),
            description: self.description.clone(),
            detectors: Vec::new(),
            block: self.block.clone(),
            allow: self.allow.clone(),
            patterns: self.patterns.clone(),
            allow_patterns: self.allow_patterns.clone(),
            examples: self.examples.clone(),
        }
    }
}

#[derive(Deserialize)]
struct DefaultsFile {
    categories: Vec<SafetyCategory>,
}

/// The safety settings, resolved from defaults and `persona.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetySettings {
    /// Whether fan messages are checked at all.
    pub enabled: bool,
    /// Whether compile trains the learned classifier.
    pub learned: bool,
    /// The user's labelled JSON-lines files, beside the built-in corpus.
    #[serde(default)]
    pub labelled: Vec<PathBuf>,
    /// The categories.
    pub categories: Vec<SafetyCategory>,
}

impl Default for SafetySettings {
    fn default() -> Self {
        // The shipped defaults are part of the binary and covered by tests; an error here is a
        // build defect.
        let categories = toml::from_str::<DefaultsFile>(DEFAULTS_TOML)
            .map(|d| d.categories)
            .expect("src/safety/defaults.toml, compiled into persona, must parse");
        SafetySettings {
            enabled: true,
            learned: true,
            labelled: Vec::new(),
            categories,
        }
    }
}

impl SafetySettings {
    /// The names of the categories, in order.
    pub fn names(&self) -> Vec<String> {
        self.categories.iter().map(|c| c.name.clone()).collect()
    }

    /// The settings of the filter that detects the categories: lexicon and patterns, no
    /// semantic stage (the learned classifier replaces it), no retries or fallbacks (a fan's
    /// message is only classified).
    pub fn filter_settings(&self) -> FilterSettings {
        FilterSettings::classifier(
            self.categories.iter().map(SafetyCategory::rule).collect(),
            self.enabled,
            self.learned,
        )
    }
}

/// The `[safety]` section of `persona.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyFile {
    enabled: Option<bool>,
    learned: Option<bool>,
    #[serde(default)]
    labelled: Vec<PathBuf>,
    /// Default categories to drop.
    #[serde(default)]
    remove: Vec<String>,
    /// Categories to add, or to replace the default of the same name.
    #[serde(default)]
    categories: Vec<SafetyCategory>,
}

impl SafetyFile {
    /// Applies the file over the defaults.
    pub fn resolve(self) -> Result<SafetySettings> {
        let mut s = SafetySettings::default();
        s.enabled = self.enabled.unwrap_or(s.enabled);
        s.learned = self.learned.unwrap_or(s.learned);
        s.labelled = self.labelled;
        for name in &self.remove {
            if !s.categories.iter().any(|c| &c.name == name) {
                bail!("`safety.remove` names `{name}`, which is not a category; the defaults are minor and crisis");
            }
            s.categories.retain(|c| &c.name != name);
        }
        for category in self.categories {
            if category.reply.trim().is_empty() {
                bail!(
                    "`safety.categories` `{}` has an empty `reply`; write what the fan is told instead of a generated reply",
                    category.name
                );
            }
            match s.categories.iter_mut().find(|c| c.name == category.name) {
                Some(existing) => *existing = category,
                None => s.categories.push(category),
            }
        }
        Ok(s)
    }
}

/// A fan marked for a human: which category, why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The safety category, e.g. `minor`.
    pub category: String,
    /// What matched (the stage, never the fan's words).
    pub reason: String,
    /// When the fan's message was answered with the handoff reply.
    pub at: Timestamp,
    /// Whether the persona stops answering this fan until a human clears it.
    pub stop: bool,
}

/// A compiled safety check.
pub struct Safety {
    filter: Filter,
    categories: Vec<SafetyCategory>,
}

impl Safety {
    /// Builds the check from settings and, when compiled, the learned classifier with the
    /// embedding's dimensions.
    pub fn new(settings: &SafetySettings, learned: Option<(LearnedFilter, usize)>) -> Result<Self> {
        let mut filter = Filter::new(settings.filter_settings())?;
        if let Some((learned, dims)) = learned.filter(|(l, _)| !l.categories.is_empty()) {
            filter = filter.with_learned(learned, dims)?;
        }
        Ok(Safety {
            filter,
            categories: settings.categories.clone(),
        })
    }

    /// The underlying filter (for training and `persona check --safety`).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// A category by name.
    pub fn category(&self, name: &str) -> Option<&SafetyCategory> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// Checks a fan's message; on a hit, the handoff to record (dated `now`) and the reply to
    /// send, which the caller still passes through the topic filter.
    pub fn check(
        &self,
        fan_message: &str,
        embedder: Option<&mut dyn Embedder>,
        now: Timestamp,
    ) -> Result<Option<(Handoff, String)>> {
        if fan_message.trim().is_empty() {
            return Ok(None);
        }
        // A first-person statement in the lexicon hands off on its own: a plain "i'm 16" must
        // not depend on a classifier's threshold. The classifier decides the rest.
        let lexical = self.filter.check_lexical(fan_message);
        let verdict = if lexical.blocked {
            lexical
        } else {
            self.filter.check(fan_message, embedder)?
        };
        let Some(category) = verdict.category.as_deref().and_then(|c| self.category(c)) else {
            return Ok(None);
        };
        Ok(Some((
            Handoff {
                category: category.name.clone(),
                reason: verdict.reason,
                at: now,
                stop: category.stop,
            },
            category.reply.clone(),
        )))
    }

    /// The reply of a stored handoff's category; `None` when the category is no longer
    /// configured in this artifact.
    pub fn reply_for(&self, handoff: &Handoff) -> Option<&str> {
        self.category(&handoff.category).map(|c| c.reply.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        "2026-11-28T20:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_defaults_parse_with_a_reply_for_each_category() {
        let s = SafetySettings::default();
        assert_eq!(s.names(), default_categories());
        assert!(s.categories.iter().all(|c| !c.reply.trim().is_empty()));
        assert!(s.categories.iter().find(|c| c.name == "minor").unwrap().stop);
        assert!(!s.categories.iter().find(|c| c.name == "crisis").unwrap().stop);
    }

    #[test]
    fn the_lexical_stage_alone_catches_plain_statements_and_spares_traps() {
        let safety = Safety::new(&SafetySettings::default(), None).unwrap();
        let table = [
            ("im 16", Some("minor")),
            ("i'm only fifteen lol", Some("minor")),
            ("16 m here", Some("minor")),
            ("i'm in 10th grade", Some("minor")),
            ("i want to kill myself", Some("crisis")),
            ("my bf hits me when he drinks", Some("crisis")),
            ("i'm 16 minutes away from home", None),
            ("i'm 25 and single", None),
            ("i'm dying to see your new set", None),
            ("you killed it today", None),
            ("back in high school i played football", None),
        ];
        for (text, want) in table {
            let got = safety.check(text, None, at()).unwrap();
            assert_eq!(got.as_ref().map(|(h, _)| h.category.as_str()), want, "{text}");
            if let Some((h, reply)) = got {
                assert!(!reply.is_empty());
                assert!(
                    !h.reason.contains(text),
                    "the reason must not quote the fan: {}",
                    h.reason
                );
            }
        }
    }

    #[test]
    fn the_file_replaces_removes_and_refuses_empty_replies() {
        let file: SafetyFile = toml::from_str(
            "remove = [\"crisis\"]\n[[categories]]\nname = \"minor\"\ndescription = \"d\"\nreply = \"bye\"\nstop = false\n",
        )
        .unwrap();
        let s = file.resolve().unwrap();
        assert_eq!(s.names(), vec!["minor".to_string()]);
        assert_eq!(s.categories[0].reply, "bye");
        let bad: SafetyFile =
            toml::from_str("[[categories]]\nname = \"x\"\ndescription = \"d\"\nreply = \" \"\n").unwrap();
        assert!(format!("{:#}", bad.resolve().unwrap_err()).contains("empty `reply`"));
        let unknown: SafetyFile = toml::from_str("remove = [\"spam\"]").unwrap();
        assert!(format!("{:#}", unknown.resolve().unwrap_err()).contains("`spam`"));
    }
}
