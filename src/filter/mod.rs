//! The topic filter: categories of forbidden topics, and the matcher that finds them.
//!
//! Owns the category configuration (defaults in `defaults.toml`, overridable from
//! `persona.toml`, compiled into the artifact) and [`Filter::check`], which runs, in order:
//! word-boundary lexicon matching on normalized text (aho-corasick, with allow-list spans masked
//! out first), built-in detectors for handles, links, phone numbers and emails, the category's
//! own regular expressions, and a semantic check of each sentence against the category's example
//! phrases with the embedding model. Normalization lives in `normalize`; what `ask` does with a
//! verdict lives in `runtime`.

pub mod echo;
pub mod features;
pub mod figures;
pub mod judge;
pub mod learned;
pub mod normalize;
pub mod platform;
pub mod respell;
pub mod train;

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use self::train::LearnedFilter;
use crate::embed::{dot, Embedder};
use crate::filter::normalize::{digits_from_words, fold, normalize};

/// The default categories, shipped with persona.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// The semantic threshold when none is configured: calibrated on `eval/filter_labelled.jsonl`
/// with `persona check --calibrate` (see the README).
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.65;

/// A built-in pattern detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// `@name` handles.
    Handle,
    /// URLs and domains.
    Link,
    /// Phone numbers, in digits or number words.
    Phone,
    /// Email addresses.
    Email,
    /// Names of creator platforms other than the home one (`[creator] platform`).
    Platform,
}

/// One forbidden topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// Name reported in verdicts, e.g. `social_platform`.
    pub name: String,
    /// What the category covers, quoted in prompt notes.
    pub description: String,
    /// Built-in detectors to run.
    #[serde(default)]
    pub detectors: Vec<Detector>,
    /// Terms that block, matched on word boundaries after normalization.
    #[serde(default)]
    pub block: Vec<String>,
    /// Terms whose spans are exempt from matching.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Regular expressions over the normalized text.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Regular expressions whose matches are exempt, like `allow` (e.g. refusals: "i don't meet
    /// fans irl"). A match right after "why" is not exempt ("why don't we meet").
    #[serde(default)]
    pub allow_patterns: Vec<String>,
    /// Example phrases for the semantic check.
    #[serde(default)]
    pub examples: Vec<String>,
}

#[derive(Deserialize)]
struct DefaultsFile {
    categories: Vec<Category>,
}

/// The filter's settings, as resolved from defaults and `persona.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSettings {
    /// Whether the filter stages run at all.
    pub enabled: bool,
    /// Generation attempts before falling back to a deflection from the training data.
    pub attempts: u32,
    /// Whether the fan's message gets a context note when it asks for a forbidden topic.
    pub input_note: bool,
    /// Whether the semantic check runs.
    pub semantic: bool,
    /// Cosine similarity at or above which a sentence is blocked by the semantic check.
    pub semantic_threshold: f32,
    /// Replies used when the training data has no clean deflection to fall back to.
    pub fallbacks: Vec<String>,
    /// Keep training replies the filter blocks out of the index, so they never become demos.
    #[serde(default = "yes")]
    pub exclude_blocked_demos: bool,
    /// Whether compile trains the learned stage (on the built-in corpus, `labelled` and the
    /// creator's replies).
    #[serde(default = "yes")]
    pub learned: bool,
    /// The user's labelled JSON-lines files for the learned stage, beside the built-in corpus.
    #[serde(default)]
    pub labelled: Vec<std::path::PathBuf>,
    /// `"llm"`: ask the configured LLM whether each draft the other stages pass violates a
    /// category (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// The creator's home platform (`[creator] platform`): the one creator platform allowed.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// The categories.
    pub categories: Vec<Category>,
}

fn default_platform() -> String {
    platform::DEFAULT.to_string()
}

impl Default for FilterSettings {
    fn default() -> Self {
        // The shipped defaults are part of the binary and covered by tests; an error here is a
        // build defect, surfaced loudly rather than as a filter with no categories.
        let categories = toml::from_str::<DefaultsFile>(DEFAULTS_TOML)
            .map(|d| d.categories)
            .expect("src/filter/defaults.toml, compiled into persona, must parse");
        FilterSettings {
            enabled: true,
            attempts: 3,
            input_note: true,
            semantic: true,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            exclude_blocked_demos: true,
            learned: true,
            labelled: Vec::new(),
            platform: default_platform(),
            judge: None,
            fallbacks: vec![
                "mm let's keep it right here, just you and me... this little corner is where i'm all yours"
                    .into(),
            ],
            categories,
        }
    }
}

/// The most generation attempts `filter.attempts` allows: each is a model call per fan message.
pub const MAX_ATTEMPTS: u32 = 10;

impl FilterSettings {
    /// Checks the numbers the runtime relies on, from `persona.toml` or from an artifact: the
    /// attempts (each a model call) and the semantic threshold. The message names the setting.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            return Err(format!(
                "`filter.attempts` must be between 1 and {MAX_ATTEMPTS}, got {}",
                self.attempts
            ));
        }
        if !(0.0..=1.0).contains(&self.semantic_threshold) {
            return Err(format!(
                "`filter.semantic_threshold` must be between 0 and 1, got {}",
                self.semantic_threshold
            ));
        }
        Ok(())
    }

    /// The settings of a filter that only classifies fans' messages (the safety check, the mood
    /// reader): these categories, no semantic stage, no retries, fallbacks or judge.
    pub fn classifier(categories: Vec<Category>, enabled: bool, learned: bool) -> Self {
        FilterSettings {
            enabled,
            attempts: 1,
            input_note: false,
            semantic: false,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            fallbacks: Vec::new(),
            exclude_blocked_demos: false,
            learned,
            labelled: Vec::new(),
            platform: default_platform(),
            judge: None,
            categories,
        }
    }
}

/// The `[filter]` section of `persona.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterFile {
    enabled: Option<bool>,
    attempts: Option<u32>,
    input_note: Option<bool>,
    semantic: Option<bool>,
    semantic_threshold: Option<f32>,
    fallbacks: Option<Vec<String>>,
    exclude_blocked_demos: Option<bool>,
    learned: Option<bool>,
    judge: Option<String>,
    #[serde(default)]
    labelled: Vec<std::path::PathBuf>,
    /// Default categories to drop.
    #[serde(default)]
    remove: Vec<String>,
    /// Categories to add, or to replace the default of the same name.
    #[serde(default)]
    categories: Vec<Category>,
}

impl FilterFile {
    /// Applies the file over the defaults.
    pub fn resolve(self) -> Result<FilterSettings> {
        let mut s = FilterSettings::default();
        s.enabled = self.enabled.unwrap_or(s.enabled);
        s.attempts = self.attempts.unwrap_or(s.attempts);
        s.input_note = self.input_note.unwrap_or(s.input_note);
        s.semantic = self.semantic.unwrap_or(s.semantic);
        s.semantic_threshold = self.semantic_threshold.unwrap_or(s.semantic_threshold);
        s.fallbacks = self.fallbacks.unwrap_or(s.fallbacks);
        s.exclude_blocked_demos = self.exclude_blocked_demos.unwrap_or(s.exclude_blocked_demos);
        s.learned = self.learned.unwrap_or(s.learned);
        s.labelled = self.labelled;
        s.judge = match self.judge.as_deref() {
            None | Some("none") => None,
            Some(judge::LLM) => Some(judge::LLM.into()),
            Some(other) => {
                bail!("`filter.judge` is `{other}`; use \"llm\" (ask the configured LLM) or \"none\"")
            }
        };
        for name in &self.remove {
            if !s.categories.iter().any(|c| &c.name == name) {
                bail!("`filter.remove` names `{name}`, which is not a category; the defaults are social_platform and in_person_meeting");
            }
            s.categories.retain(|c| &c.name != name);
        }
        for category in self.categories {
            match s.categories.iter_mut().find(|c| c.name == category.name) {
                Some(existing) => *existing = category,
                None => s.categories.push(category),
            }
        }
        s.check().map_err(anyhow::Error::msg)?;
        Ok(s)
    }
}

fn yes() -> bool {
    true
}

/// The outcome of checking one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the text is blocked.
    pub blocked: bool,
    /// The category that blocked it.
    pub category: Option<String>,
    /// Why: the stage and what matched.
    pub reason: String,
    /// The stage that blocked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
}

/// The stage that blocked a text, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A lexicon term.
    Lexicon,
    /// A category's regular expression.
    Pattern,
    /// A built-in detector (handle, link, phone, email, platform).
    Detector,
    /// The learned classifier.
    Learned,
    /// Similarity to the example phrases.
    Semantic,
    /// The prompt-leak guard.
    Leak,
    /// The LLM judge (`[filter] judge = "llm"`).
    Judge,
    /// A reply repeating the specifics of a blocked fan proposal (see `echo`).
    Echo,
}

impl Stage {
    /// The stage's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Lexicon => "lexicon",
            Stage::Pattern => "pattern",
            Stage::Detector => "detector",
            Stage::Learned => "learned",
            Stage::Semantic => "semantic",
            Stage::Leak => "leak",
            Stage::Judge => "judge",
            Stage::Echo => "echo",
        }
    }
}

impl Verdict {
    /// A clean verdict.
    pub fn clean() -> Self {
        Verdict {
            blocked: false,
            category: None,
            reason: "clean".into(),
            stage: None,
        }
    }

    /// A blocking verdict.
    pub fn blocked(stage: Stage, category: &str, reason: String) -> Self {
        Verdict {
            blocked: true,
            category: Some(category.into()),
            reason,
            stage: Some(stage),
        }
    }
}

/// Vectors of the categories' example phrases, computed at compile time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExampleVectors {
    /// (category index, example index, unit vector).
    pub vectors: Vec<(usize, usize, Vec<f32>)>,
}

/// A compiled filter.
pub struct Filter {
    settings: FilterSettings,
    block: Option<AhoCorasick>,
    block_terms: Vec<(usize, String)>,
    allow: Option<AhoCorasick>,
    patterns: Vec<(usize, Regex)>,
    allow_patterns: Vec<Regex>,
    examples: ExampleVectors,
    learned: Option<LearnedFilter>,
    home: platform::Home,
    rivals: Option<AhoCorasick>,
    handle: Regex,
    link: Regex,
    email: Regex,
    phone: Regex,
}

impl Filter {
    /// Compiles the matchers; an invalid pattern is an error naming its category.
    pub fn new(settings: FilterSettings) -> Result<Self> {
        let mut block_terms = Vec::new();
        let mut allow_terms = Vec::new();
        let mut patterns = Vec::new();
        let mut allow_patterns = Vec::new();
        for (i, c) in settings.categories.iter().enumerate() {
            for p in &c.allow_patterns {
                allow_patterns.push(Regex::new(p).with_context(|| {
                    format!("invalid regular expression `{p}` in `allow_patterns` of filter category `{}`; fix it in persona.toml", c.name)
                })?);
            }
            for t in &c.block {
                let n = normalize(t);
                if !n.is_empty() {
                    block_terms.push((i, n));
                }
            }
            allow_terms.extend(c.allow.iter().map(|t| normalize(t)).filter(|t| !t.is_empty()));
            for p in &c.patterns {
                let re = Regex::new(p).with_context(|| {
                    format!(
                        "invalid regular expression `{p}` in filter category `{}`; fix it in persona.toml",
                        c.name
                    )
                })?;
                patterns.push((i, re));
            }
        }
        let build = |terms: &[&str]| -> Result<Option<AhoCorasick>> {
            if terms.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(terms)?,
            ))
        };
        let block = build(&block_terms.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>())?;
        let allow = build(&allow_terms.iter().map(String::as_str).collect::<Vec<_>>())?;
        let re = |p: &str| Regex::new(p).context("a built-in filter pattern");
        let home = platform::Home::new(&settings.platform);
        let rivals = build(&home.others().iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(Filter {
            home,
            rivals,
            settings,
            block,
            block_terms,
            allow,
            patterns,
            allow_patterns,
            examples: ExampleVectors::default(),
            learned: None,
            handle: re(
                r"(?:^|[^\w.@])@[a-z0-9_][a-z0-9_.]{2,}|\b(?:sc|ig|snap|insta|tg|tt|wa|dc|fb|x|kik)\s*[:=]\s*@?[a-z0-9_.]{3,}|\b(?:my|your|ur)\s*@(?:\s|$|\?)",
            )?,
            link: re(
                r"(?:https?://|www\.)\S+|\b[a-z0-9][a-z0-9-]*\.(?:com|net|org|io|me|ly|link|gg|app|co|tv|xyz|page|bio|ee|to|social|fans|chat)\b(?:/\S*)?",
            )?,
            email: re(r"[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}")?,
            phone: re(r"\+?\(?\d(?:[\s().\-]{0,2}\d){6,14}")?,
        })
    }

    /// Embeds the categories' example phrases for the semantic check.
    pub fn embed_examples(&mut self, embedder: &mut dyn Embedder) -> Result<()> {
        let mut owners = Vec::new();
        let mut texts = Vec::new();
        for (i, c) in self.settings.categories.iter().enumerate() {
            for (j, e) in c.examples.iter().enumerate() {
                owners.push((i, j));
                texts.push(e.as_str());
            }
        }
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            embedder.embed(&texts)?
        };
        self.examples = ExampleVectors {
            vectors: owners
                .into_iter()
                .zip(vectors)
                .map(|((i, j), v)| (i, j, v))
                .collect(),
        };
        Ok(())
    }

    /// Uses example vectors computed earlier (from the artifact); refuses vectors that name a
    /// category or example this filter does not have.
    pub fn with_examples(mut self, examples: ExampleVectors) -> Result<Self> {
        for (cat, ex, _) in &examples.vectors {
            let known = self
                .settings
                .categories
                .get(*cat)
                .is_some_and(|c| *ex < c.examples.len());
            if !known {
                bail!(
                    "the compiled filter has a vector for example {ex} of category {cat}, which the filter's \
                     configuration does not have; rebuild the artifact with `persona compile`"
                );
            }
        }
        self.examples = examples;
        Ok(self)
    }

    /// The example vectors, for the artifact.
    pub fn examples(&self) -> &ExampleVectors {
        &self.examples
    }

    /// The settings this filter was built from.
    pub fn settings(&self) -> &FilterSettings {
        &self.settings
    }

    /// The lexicon, detector and pattern stages only: no model needed.
    pub fn check_lexical(&self, text: &str) -> Verdict {
        if !self.settings.enabled {
            return Verdict::clean();
        }
        let forms = self.lexical_forms(text);
        if let Some(ac) = &self.block {
            for normalized in &forms {
                for m in ac.find_overlapping_iter(normalized) {
                    if on_word_boundaries(normalized, m.start(), m.end()) {
                        let (cat, term) = &self.block_terms[m.pattern().as_usize()];
                        let name = &self.settings.categories[*cat].name;
                        return Verdict::blocked(Stage::Lexicon, name, format!("mentions `{term}`"));
                    }
                }
            }
        }
        let folded = fold(text);
        if let Some(verdict) = self.detectors(&folded, &forms[0]) {
            return verdict;
        }
        for (i, re) in &self.patterns {
            if forms.iter().any(|normalized| re.is_match(normalized)) {
                // Name the rule, not the matched text: verdicts are shown to users and the
                // match may hold an address or a number.
                let name = &self.settings.categories[*i].name;
                return Verdict::blocked(Stage::Pattern, name, format!("matches a `{name}` pattern"));
            }
        }
        Verdict::clean()
    }

    /// The forms the lexicon and patterns read, allowed phrases masked: the text with chat
    /// spelling expanded, and when it differs, the same with words respelled
    /// ([`respell`]). Both are read, so respelling can find "meeeet up" as "meet up" but never
    /// hide a term written as the lexicon knows it.
    fn lexical_forms(&self, text: &str) -> Vec<String> {
        let expanded = features::expand_chat_spelling(text);
        let respelled = respell::respell(&expanded);
        let mut forms = vec![self.mask_allowed(&normalize(&expanded))];
        if respelled != expanded {
            forms.push(self.mask_allowed(&normalize(&respelled)));
        }
        forms
    }

    /// Adds the learned stage compiled into an artifact, checked against this filter's categories
    /// and the embedding dimensions.
    pub fn with_learned(mut self, learned: LearnedFilter, dims: usize) -> Result<Self> {
        let names: Vec<String> = self.settings.categories.iter().map(|c| c.name.clone()).collect();
        learned
            .validate(&names, dims)
            .map_err(|e| anyhow::anyhow!("{e}; recompile the artifact"))?;
        self.learned = Some(learned);
        Ok(self)
    }

    /// The creator's home platform.
    pub fn home(&self) -> &platform::Home {
        &self.home
    }

    /// The learned stage, when the filter has one.
    pub fn learned(&self) -> Option<&LearnedFilter> {
        self.learned.as_ref()
    }

    /// Every stage on a text alone (a fan's message, or a reply without its context).
    pub fn check(&self, text: &str, embedder: Option<&mut dyn Embedder>) -> Result<Verdict> {
        self.check_in_context(text, None, embedder)
    }

    /// Every stage on a text judged together with the fan message it answers, so an agreement
    /// to the fan's proposal ("sure, see you there") is read as what it agrees to.
    ///
    /// With a learned stage: the detectors (handles, links, numbers, emails) block on their own,
    /// and otherwise the learned classifiers decide, with the lexicon's and patterns' match among
    /// their features. Without one (a filter from `persona.toml`, or no embedder): the lexical
    /// stages, then the similarity to the categories' example phrases.
    pub fn check_in_context(
        &self,
        text: &str,
        fan_message: Option<&str>,
        embedder: Option<&mut dyn Embedder>,
    ) -> Result<Verdict> {
        if !self.settings.enabled {
            return Ok(Verdict::clean());
        }
        match (&self.learned, embedder) {
            (Some(learned), Some(embedder)) => self.check_learned(learned, text, fan_message, embedder),
            (_, embedder) => self.check_semantic(text, embedder),
        }
    }

    fn check_learned(
        &self,
        learned: &LearnedFilter,
        text: &str,
        fan_message: Option<&str>,
        embedder: &mut dyn Embedder,
    ) -> Result<Verdict> {
        let normalized = self.mask_allowed(&normalize(&features::expand_chat_spelling(text)));
        if let Some(verdict) = self.detectors(&fold(text), &normalized) {
            return Ok(verdict);
        }
        let lexical_names: Vec<String> = self.settings.categories.iter().map(|c| c.name.clone()).collect();
        let lexical = train::lexical_index(self, &lexical_names, text);
        // The classifier reads the home platform under the name it was trained to read as home.
        let text = &self.home.canonical(text);
        let fan_message = fan_message.map(|f| self.home.canonical(f));
        let fan_message = fan_message.as_deref();
        let texts = features::texts_to_embed(text, fan_message, learned.spelling);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        let names = lexical_names;
        let row = features::build(
            text,
            fan_message,
            &vectors,
            lexical,
            names.len(),
            learned.words(),
            learned.spelling,
        );
        let best = learned
            .categories
            .iter()
            .map(|c| (c, c.model.score(&row)))
            .filter(|(c, score)| *score >= c.model.threshold)
            .max_by(|a, b| (a.1 - a.0.model.threshold).total_cmp(&(b.1 - b.0.model.threshold)));
        if let Some((c, score)) = best {
            return Ok(Verdict::blocked(
                Stage::Learned,
                &c.name,
                format!(
                    "the learned `{}` stage scored {score:.2} (threshold {:.2})",
                    c.name, c.model.threshold
                ),
            ));
        }
        // In context: a reply that repeats what a blocked proposal of the fan's names.
        if let Some(fan) = fan_message {
            if echo::repeated(text, fan).is_some() {
                let proposal = self.check_learned(learned, fan, None, embedder)?;
                if let (true, Some(category)) = (proposal.blocked, proposal.category.as_deref()) {
                    return Ok(Verdict::blocked(
                        Stage::Echo,
                        category,
                        format!("repeats the place or time of the fan's `{category}` proposal"),
                    ));
                }
            }
        }
        Ok(Verdict::clean())
    }

    /// The lexical stages, then the similarity to the example phrases when there are example
    /// vectors and an embedder.
    fn check_semantic(&self, text: &str, embedder: Option<&mut dyn Embedder>) -> Result<Verdict> {
        let lexical = self.check_lexical(text);
        if lexical.blocked
            || !self.settings.enabled
            || !self.settings.semantic
            || self.examples.vectors.is_empty()
        {
            return Ok(lexical);
        }
        let Some(embedder) = embedder else {
            return Ok(lexical);
        };
        let sentences = sentences(text);
        if sentences.is_empty() {
            return Ok(lexical);
        }
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        let mut best: Option<(f32, usize, usize)> = None;
        for v in &vectors {
            for (cat, ex, e) in &self.examples.vectors {
                let score = dot(v, e);
                if best.is_none_or(|b| score > b.0) {
                    best = Some((score, *cat, *ex));
                }
            }
        }
        match best {
            Some((score, cat, ex)) if score >= self.settings.semantic_threshold => {
                let c = &self.settings.categories[cat];
                Ok(Verdict::blocked(
                    Stage::Semantic,
                    &c.name,
                    format!("reads like `{}` (similarity {score:.2})", c.examples[ex]),
                ))
            }
            _ => Ok(lexical),
        }
    }

    /// The highest semantic similarity of any sentence to any example, for calibration.
    pub fn semantic_score(&self, text: &str, embedder: &mut dyn Embedder) -> Result<f32> {
        let sentences = sentences(text);
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        if refs.is_empty() {
            return Ok(0.0);
        }
        let vectors = embedder.embed(&refs)?;
        Ok(vectors
            .iter()
            .flat_map(|v| self.examples.vectors.iter().map(move |(_, _, e)| dot(v, e)))
            .fold(f32::MIN, f32::max))
    }

    /// The description of a category, for prompt notes.
    pub fn description(&self, category: &str) -> Option<&str> {
        self.settings
            .categories
            .iter()
            .find(|c| c.name == category)
            .map(|c| c.description.as_str())
    }

    fn mask_allowed(&self, normalized: &str) -> String {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if let Some(ac) = &self.allow {
            spans.extend(
                ac.find_overlapping_iter(normalized)
                    .filter(|m| on_word_boundaries(normalized, m.start(), m.end()))
                    .map(|m| (m.start(), m.end())),
            );
        }
        for re in &self.allow_patterns {
            spans.extend(
                re.find_iter(normalized)
                    .filter(|m| !normalized[..m.start()].trim_end().ends_with("why"))
                    .map(|m| (m.start(), m.end())),
            );
        }
        let mut bytes = normalized.as_bytes().to_vec();
        for (start, end) in spans {
            // Blank whole characters: a UTF-8 sequence becomes that many spaces.
            bytes[start..end].fill(b' ');
        }
        String::from_utf8(bytes).unwrap_or_else(|_| normalized.to_string())
    }

    /// The first detector (handle, link, phone, email) of any category that fires.
    fn detectors(&self, folded: &str, normalized: &str) -> Option<Verdict> {
        self.settings.categories.iter().find_map(|c| {
            c.detectors
                .iter()
                .find_map(|d| self.detect(*d, folded, normalized))
                .map(|found| Verdict::blocked(Stage::Detector, &c.name, found))
        })
    }

    fn detect(&self, detector: Detector, folded: &str, normalized: &str) -> Option<String> {
        match detector {
            // Reasons name the kind of detail, never the detail itself: verdicts are shown to users.
            Detector::Handle => self.handle.is_match(folded).then(|| "has an @handle".to_string()),
            Detector::Email => self
                .email
                .is_match(folded)
                .then(|| "has an email address".to_string()),
            Detector::Link => {
                let home = self.home.domain_word();
                [folded.to_string(), despace_links(folded)]
                    .iter()
                    .any(|t| {
                        self.link
                            .find_iter(t)
                            .any(|m| home.is_empty() || !m.as_str().contains(&home))
                    })
                    .then(|| "has a link or domain".to_string())
            }
            Detector::Platform => self.rivals.as_ref().and_then(|ac| {
                ac.find_iter(normalized)
                    .any(|m| on_word_boundaries(normalized, m.start(), m.end()))
                    .then(|| "names another creator platform".to_string())
            }),
            Detector::Phone => {
                let spelled = digits_from_words(folded);
                let found = [folded, spelled.as_str(), normalized].into_iter().find_map(|t| {
                    self.phone
                        .find_iter(t)
                        .map(|m| m.as_str().trim().to_string())
                        .find(|m| looks_like_phone(m))
                });
                found.map(|_| "has a phone number".to_string())
            }
        }
    }
}

/// Links written with spaces or words for the dots: `t . me / x` and `wren [dot] link` become
/// `t.me/x` and `wren.link`.
fn despace_links(folded: &str) -> String {
    // Built-in patterns: a failure to compile is a build defect, caught by every filter test.
    static DOT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\s*(?:\[dot\]|\(dot\)|\{dot\}|\bdot\b)\s*").expect("the built-in `dot` pattern compiles")
    });
    static SPACED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\s*([./])\s*").expect("the built-in spaced-link pattern compiles"));
    let dotted = DOT.replace_all(folded, ".").into_owned();
    SPACED.replace_all(&dotted, "$1").into_owned()
}

/// Whether a digit run is a phone number rather than a date, a time, a year or an amount.
fn looks_like_phone(text: &str) -> bool {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if !(7..=15).contains(&digits.len()) {
        return false;
    }
    static DATE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}$|^\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4}$")
            .expect("the built-in date pattern compiles")
    });
    !DATE.is_match(text.trim())
}

fn on_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric());
    let after = text[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
    before && after
}

/// The sentences of a text for the semantic check; the whole text too when it has several.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(['.', '!', '?', '\n', ';'])
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| s.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
        .collect();
    let whole = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 1 && !whole.is_empty() {
        out.push(whole);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_verdict_names_the_rule_not_the_matched_text() {
        let filter = Filter::new(FilterSettings::default()).unwrap();
        let v = filter.check_lexical("you should crash at my place on 12 birch lane");
        assert!(v.blocked, "{v:?}");
        assert!(
            !v.reason.contains("birch") && !v.reason.contains("crash"),
            "{}",
            v.reason
        );
    }

    fn filter() -> Filter {
        Filter::new(FilterSettings::default()).unwrap()
    }

    /// Whether the lexicon finds a block term in one normalized form.
    fn finds_term(f: &Filter, normalized: &str) -> bool {
        f.block.as_ref().is_some_and(|ac| {
            ac.find_overlapping_iter(normalized)
                .any(|m| on_word_boundaries(normalized, m.start(), m.end()))
        })
    }

    #[test]
    fn the_lexicon_reads_words_respelled_as_well_as_written() {
        let f = filter();
        // The term ("meet up", "snap") is there only once the word is respelled.
        for text in ["lets meeeet up later", "my snaaap is wren"] {
            let forms = f.lexical_forms(text);
            assert_eq!(forms.len(), 2, "{text}: {forms:?}");
            assert!(!finds_term(&f, &forms[0]), "{text}: {forms:?}");
            assert!(finds_term(&f, &forms[1]), "{text}: {forms:?}");
            assert!(f.check_lexical(text).blocked, "{text}");
        }
        // A term respelling would change ("snd" reads as "sound") is still found as written.
        let mut settings = FilterSettings::default();
        settings.categories[0].block.push("snd".into());
        let f = Filter::new(settings).unwrap();
        let forms = f.lexical_forms("my snd is wren22");
        assert!(
            finds_term(&f, &forms[0]) && !finds_term(&f, &forms[1]),
            "{forms:?}"
        );
        assert!(f.check_lexical("my snd is wren22").blocked);
        assert!(!f.check_lexical("sooo sleepy, nite nite").blocked);
    }

    #[test]
    fn the_shipped_defaults_parse() {
        let s = FilterSettings::default();
        // A term that normalizes to a bare common word would block everything.
        for c in &s.categories {
            for t in &c.block {
                let n = normalize(t);
                assert!(
                    !["your", "my", "ur", "me", "you", "t", "x"].contains(&n.as_str()),
                    "`{t}` normalizes to `{n}`"
                );
            }
        }
        let names: Vec<&str> = s.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["social_platform", "in_person_meeting"]);
        assert!(s
            .categories
            .iter()
            .all(|c| !c.block.is_empty() && !c.examples.is_empty()));
    }

    #[test]
    fn compiled_vectors_for_unknown_examples_are_refused() {
        let known = ExampleVectors {
            vectors: vec![(0, 0, vec![1.0, 0.0])],
        };
        assert!(filter().with_examples(known).is_ok());
        for (cat, ex) in [(99, 0), (0, 100_000)] {
            let bad = ExampleVectors {
                vectors: vec![(cat, ex, vec![1.0, 0.0])],
            };
            let err = filter()
                .with_examples(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("persona compile"), "({cat}, {ex}): {err}");
        }
    }

    #[test]
    fn lexical_matcher_table() {
        let f = filter();
        // (case, text, expected category)
        let cases: [(&str, &str, Option<&str>); 30] = [
            ("insta", "add me on insta babe", Some("social_platform")),
            ("the gram", "you on the gram?", Some("social_platform")),
            ("IG", "whats ur IG", Some("social_platform")),
            ("dotted snap", "my s.n.a.p is wren", Some("social_platform")),
            (
                "spaced tiktok",
                "follow me on t i k t o k",
                Some("social_platform"),
            ),
            ("leet", "h1t me up on t3l3gr4m", Some("social_platform")),
            ("fullwidth", "ｉｎｓｔａ", Some("social_platform")),
            ("zero width", "sn\u{200B}apchat me", Some("social_platform")),
            ("handle", "i'm @wren.alder over there", Some("social_platform")),
            ("link", "go to linktr.ee/wren", Some("social_platform")),
            ("phone digits", "call 555-201-8890", Some("social_platform")),
            (
                "phone words",
                "five five five two oh one eight eight nine oh",
                Some("social_platform"),
            ),
            ("email", "wren.alder@gmail.com", Some("social_platform")),
            (
                "move elsewhere",
                "let's move this somewhere more private",
                Some("social_platform"),
            ),
            (
                "coffee",
                "let's grab coffee when you're in town",
                Some("in_person_meeting"),
            ),
            ("irl", "we should meet IRL", Some("in_person_meeting")),
            ("pick up", "lemme pick u up at 8", Some("in_person_meeting")),
            (
                "address",
                "what's your address so i can send flowers",
                Some("in_person_meeting"),
            ),
            ("pattern", "dinner tonight with me?", Some("in_person_meeting")),
            ("snapdragons", "snapdragons on my balcony", None),
            ("installing", "installing the update", None),
            ("kilogram", "a kilogram of flour", None),
            ("telepathy", "telepathy is real", None),
            ("met goal", "we met our subscriber goal", None),
            ("chat later", "catch you in the chat later", None),
            ("onlyfans", "thanks for being one of my OnlyFans regulars", None),
            ("date", "posted on 2026-11-28, a new set", None),
            ("price", "only 1200 subscribers to go", None),
            ("meet halfway", "let's meet halfway on that argument", None),
            ("snap peas", "snap peas from the market", None),
        ];
        for (name, text, expected) in cases {
            let v = f.check_lexical(text);
            assert_eq!(v.category.as_deref(), expected, "{name}: `{text}` -> {v:?}");
            assert_eq!(v.blocked, expected.is_some(), "{name}");
        }
    }

    #[test]
    fn categories_can_be_removed_replaced_and_added() {
        let file: FilterFile = toml::from_str(
            "remove = [\"in_person_meeting\"]\n[[categories]]\nname = \"money\"\ndescription = \"payment talk\"\nblock = [\"wire me\"]\n",
        )
        .unwrap();
        let f = Filter::new(file.resolve().unwrap()).unwrap();
        assert!(!f.check_lexical("let's grab coffee together").blocked);
        assert_eq!(
            f.check_lexical("just wire me the money").category.as_deref(),
            Some("money")
        );
        assert!(f.check_lexical("add me on insta").blocked);

        let bad: FilterFile = toml::from_str("remove = [\"nope\"]").unwrap();
        assert!(bad.resolve().unwrap_err().to_string().contains("nope"));
        let bad: FilterFile =
            toml::from_str("[[categories]]\nname = \"x\"\ndescription = \"y\"\npatterns = [\"(\"]\n")
                .unwrap();
        let err = Filter::new(bad.resolve().unwrap()).err().unwrap().to_string();
        assert!(err.contains("category `x`"), "{err}");
    }

    #[test]
    fn a_disabled_filter_blocks_nothing() {
        let s = FilterSettings {
            enabled: false,
            ..FilterSettings::default()
        };
        assert!(!Filter::new(s).unwrap().check_lexical("add me on insta").blocked);
    }

    #[test]
    fn sentences_split_and_keep_the_whole() {
        assert_eq!(
            sentences("hello there! what's up? ok"),
            vec!["hello there", "what's up", "hello there! what's up? ok"]
        );
        assert_eq!(sentences("one sentence"), vec!["one sentence"]);
    }
}
