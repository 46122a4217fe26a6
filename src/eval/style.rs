//! The creator's style profile and how close a reply comes to it.
//!
//! Stylometry in three parts, combined because single surface features are near chance at telling
//! authors apart while combined profiles do better: surface habits (length, casing, ellipses,
//! tildes, exclamation and question marks, emoji, commas, word length) as z-scores against the
//! creator's own spread; and character-trigram and word log-likelihood ratios of the creator
//! against a background of other voices (the fans in the same chats), the classic
//! authorship-attribution contrast, with frequent function words weighing most. Pure functions
//! over text; no model.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Number of surface features.
pub const SURFACE: usize = 9;
/// Names of the surface features, in order.
pub const SURFACE_NAMES: [&str; SURFACE] = [
    "log_words",
    "uppercase_share",
    "ellipses_per_word",
    "tildes_per_word",
    "exclamations_per_word",
    "asks_question",
    "emoji_per_word",
    "commas_per_word",
    "mean_word_length",
];
/// Weights of surface, character-trigram and word scores in `style`.
pub const WEIGHTS: [f64; 3] = [0.4, 0.3, 0.3];

/// The surface features of one text.
pub fn surface(text: &str) -> [f64; SURFACE] {
    let words = words(text).len().max(1) as f64;
    let letters = text.chars().filter(|c| c.is_alphabetic()).count().max(1) as f64;
    let upper = text.chars().filter(|c| c.is_uppercase()).count() as f64;
    let ellipses = text.matches("...").count() as f64 + text.matches('…').count() as f64;
    let count = |c: char| text.chars().filter(|&x| x == c).count() as f64;
    let emoji = text.chars().filter(|&c| is_emoji(c)).count() as f64;
    let word_chars: usize = words_iter(text).map(|w| w.chars().count()).sum();
    [
        (1.0 + words_iter(text).count() as f64).ln(),
        upper / letters,
        ellipses / words,
        count('~') / words,
        count('!') / words,
        f64::from(u8::from(text.contains('?'))),
        emoji / words,
        count(',') / words,
        word_chars as f64 / words,
    ]
}

/// Whether a character is an emoji or pictograph.
pub fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F300..=0x1FAFF | 0x2600..=0x27BF | 0x1F000..=0x1F2FF)
}

fn words_iter(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
}

fn words(text: &str) -> Vec<String> {
    words_iter(text).map(str::to_lowercase).collect()
}

/// Character trigram counts, case and punctuation kept.
pub fn trigrams(text: &str) -> HashMap<String, f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = HashMap::new();
    for w in chars.windows(3) {
        *out.entry(w.iter().collect::<String>()).or_insert(0.0) += 1.0;
    }
    out
}

/// Cosine similarity of two sparse vectors.
pub fn cosine_sparse(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    let dot: f64 = a.iter().filter_map(|(k, x)| b.get(k).map(|y| x * y)).sum();
    let na = a.values().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.values().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Cosine similarity of two dense vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The most features an [`Llr`] keeps: the most frequent ones, counting creator and background
/// together (ties broken by the feature, so the same data keeps the same set). The ratios are
/// computed over all of them, so a kept feature's weight does not depend on the cap; a dropped
/// one scores as unseen. Without the cap a history of a million turns, with its names, numbers
/// and typos, made a style profile of tens of megabytes that every `ask` had to parse before
/// answering.
pub const MAX_FEATURES: usize = 50_000;

/// Log-likelihood ratios of features (trigrams or words): creator against background voices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Llr {
    /// ln P(feature | creator) - ln P(feature | background), add-one smoothed.
    pub weights: HashMap<String, f64>,
    /// The ratio of a feature seen in neither.
    pub unseen: f64,
}

impl Llr {
    fn build(creator: &HashMap<String, f64>, background: &HashMap<String, f64>) -> Llr {
        let vocabulary = creator
            .keys()
            .chain(background.keys())
            .collect::<std::collections::HashSet<_>>()
            .len() as f64
            + 1.0;
        let n_creator: f64 = creator.values().sum::<f64>() + vocabulary;
        let n_background: f64 = background.values().sum::<f64>() + vocabulary;
        let ratio = |c: f64, b: f64| ((c + 1.0) / n_creator).ln() - ((b + 1.0) / n_background).ln();
        let mut counted: Vec<(&String, f64, f64)> = creator
            .keys()
            .chain(background.keys().filter(|k| !creator.contains_key(*k)))
            .map(|k| {
                let c = creator.get(k).copied().unwrap_or(0.0);
                let b = background.get(k).copied().unwrap_or(0.0);
                (k, c, b)
            })
            .collect();
        if counted.len() > MAX_FEATURES {
            // Most frequent first, ties by the feature itself, so the same data keeps the same set.
            counted.sort_unstable_by(|x, y| (y.1 + y.2).total_cmp(&(x.1 + x.2)).then_with(|| x.0.cmp(y.0)));
            counted.truncate(MAX_FEATURES);
        }
        let weights = counted
            .into_iter()
            .map(|(k, c, b)| (k.clone(), ratio(c, b)))
            .collect();
        Llr {
            weights,
            unseen: ratio(0.0, 0.0),
        }
    }

    /// Mean ratio over a text's features, squashed to (0, 1) by the logistic function.
    fn score(&self, features: &HashMap<String, f64>) -> f64 {
        let total: f64 = features.values().sum();
        if total == 0.0 {
            return 0.5;
        }
        let sum: f64 = features
            .iter()
            .map(|(k, n)| n * self.weights.get(k).copied().unwrap_or(self.unseen))
            .sum();
        1.0 / (1.0 + (-(sum / total)).exp())
    }
}

fn word_counts(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for w in words(text) {
        *out.entry(w).or_insert(0.0) += 1.0;
    }
    out
}

/// The creator's style, built from their replies and contrasted with other voices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StyleProfile {
    /// Mean of each surface feature.
    pub surface_mean: [f64; SURFACE],
    /// Spread of each surface feature (floored so a constant habit still has a scale).
    pub surface_std: [f64; SURFACE],
    /// Character-trigram ratios, creator against background.
    pub trigrams: Llr,
    /// Word ratios, creator against background (function words dominate both sides).
    pub words: Llr,
}

/// How close one text is to the profile, by part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StyleScore {
    /// Surface similarity: mean over features of exp(-z^2 / 2).
    pub surface: f64,
    /// Character-trigram likelihood ratio, squashed to (0, 1).
    pub trigrams: f64,
    /// Word likelihood ratio, squashed to (0, 1).
    pub words: f64,
    /// The weighted combination, in [0, 1].
    pub style: f64,
}

impl StyleProfile {
    /// Builds the profile from the creator's replies, contrasted with `background`: other people's
    /// messages in the same chats (the fans'), so what is distinctive of the creator stands out.
    pub fn build<S: AsRef<str>, B: AsRef<str>>(replies: &[S], background: &[B]) -> StyleProfile {
        let n = replies.len().max(1) as f64;
        let features: Vec<[f64; SURFACE]> = replies.iter().map(|r| surface(r.as_ref())).collect();
        let mut mean = [0.0; SURFACE];
        let mut std = [0.0; SURFACE];
        for f in &features {
            for i in 0..SURFACE {
                mean[i] += f[i] / n;
            }
        }
        for f in &features {
            for i in 0..SURFACE {
                std[i] += (f[i] - mean[i]).powi(2) / n;
            }
        }
        for i in 0..SURFACE {
            std[i] = std[i].sqrt().max(0.05 * mean[i].abs() + 0.02);
        }
        let sum = |texts: &mut dyn Iterator<Item = &str>, f: fn(&str) -> HashMap<String, f64>| {
            let mut total = HashMap::new();
            for t in texts {
                for (k, v) in f(t) {
                    *total.entry(k).or_insert(0.0) += v;
                }
            }
            total
        };
        let creator_tri = sum(&mut replies.iter().map(|r| r.as_ref()), trigrams);
        let background_tri = sum(&mut background.iter().map(|r| r.as_ref()), trigrams);
        let creator_words = sum(&mut replies.iter().map(|r| r.as_ref()), word_counts);
        let background_words = sum(&mut background.iter().map(|r| r.as_ref()), word_counts);
        StyleProfile {
            surface_mean: mean,
            surface_std: std,
            trigrams: Llr::build(&creator_tri, &background_tri),
            words: Llr::build(&creator_words, &background_words),
        }
    }

    /// Checks a decoded profile: every number finite and every spread positive, so scoring can
    /// never divide by zero or return NaN. The lengths are fixed by the types.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |x: &f64| x.is_finite();
        if !self.surface_mean.iter().all(finite)
            || !self.surface_std.iter().all(|s| s.is_finite() && *s > 0.0)
        {
            return Err("the style profile's surface statistics are not finite and positive".into());
        }
        for (what, llr) in [("trigram", &self.trigrams), ("word", &self.words)] {
            if !llr.unseen.is_finite() || !llr.weights.values().all(finite) {
                return Err(format!("the style profile's {what} weights are not finite"));
            }
        }
        Ok(())
    }

    /// Scores a text against the profile.
    pub fn score(&self, text: &str) -> StyleScore {
        let f = surface(text);
        let surface = (0..SURFACE)
            .map(|i| {
                let z = (f[i] - self.surface_mean[i]) / self.surface_std[i];
                (-z * z / 2.0).exp()
            })
            .sum::<f64>()
            / SURFACE as f64;
        let trigrams = self.trigrams.score(&trigrams(text));
        let words = self.words.score(&word_counts(text));
        let style = WEIGHTS[0] * surface + WEIGHTS[1] * trigrams + WEIGHTS[2] * words;
        StyleScore {
            surface,
            trigrams,
            words,
            style,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surface_features_by_hand() {
        // "mm hi... you ok? 🌙": 4 words, 0 uppercase of 7 letters, 1 ellipsis, 0 tildes,
        // 0 exclamations, a question, 1 emoji, 0 commas, word lengths 2+2+3+2 = 9 -> 2.25.
        let f = surface("mm hi... you ok? 🌙");
        let expected = [(5.0f64).ln(), 0.0, 0.25, 0.0, 0.0, 1.0, 0.25, 0.0, 2.25];
        for i in 0..SURFACE {
            assert!(
                (f[i] - expected[i]).abs() < 1e-9,
                "{}: {} vs {}",
                SURFACE_NAMES[i],
                f[i],
                expected[i]
            );
        }
        let g = surface("Hello, World!");
        assert!((g[1] - 0.2).abs() < 1e-9, "2 of 10 letters are uppercase");
        assert!((g[4] - 0.5).abs() < 1e-9 && (g[7] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_profile_keeps_the_most_frequent_features_with_their_uncapped_weights() {
        // Two creator words said often, then 10 more distinct background words than the cap
        // keeps, one of them repeated: 12 words too many.
        let replies = vec!["hey babe hey babe"; 3];
        let mut background_texts: Vec<String> = (0..MAX_FEATURES + 10).map(|i| format!("w{i}")).collect();
        background_texts.push("w1 w1 w1".into());
        let profile = StyleProfile::build(&replies, &background_texts);
        assert_eq!(profile.words.weights.len(), MAX_FEATURES);
        // The creator's words and the repeated background word are the most frequent: kept.
        for kept in ["hey", "babe", "w1"] {
            assert!(profile.words.weights.contains_key(kept), "{kept} was dropped");
        }
        // Among the words seen once, the tie goes by the word: the 12 that sort last are dropped
        // ("w9990" to "w9999", then "w999", then "w9989"), the rest kept.
        for dropped in ["w9999", "w9990", "w999", "w9989"] {
            assert!(!profile.words.weights.contains_key(dropped), "{dropped} was kept");
        }
        for kept in ["w0", "w9988", "w50009"] {
            assert!(profile.words.weights.contains_key(kept), "{kept} was dropped");
        }
        // Their weights are those of a profile over the same counts without the cap.
        let creator = word_counts(&replies.join(" "));
        let mut all = HashMap::new();
        for t in &background_texts {
            for (k, v) in word_counts(t) {
                *all.entry(k).or_insert(0.0) += v;
            }
        }
        let vocabulary = (creator.len() + all.len()) as f64 + 1.0;
        let n_creator = creator.values().sum::<f64>() + vocabulary;
        let n_background = all.values().sum::<f64>() + vocabulary;
        let expected = (1.0 / n_creator).ln() - (5.0 / n_background).ln();
        assert!((profile.words.weights["w1"] - expected).abs() < 1e-12);
        // A dropped word scores as one never seen, unlike the kept one seen as often.
        let unseen = 1.0 / (1.0 + (-profile.words.unseen).exp());
        assert!((profile.words.score(&word_counts("w9999")) - unseen).abs() < 1e-12);
        assert!((profile.words.score(&word_counts("w9988")) - unseen).abs() > 1e-3);
    }

    #[test]
    fn cosines_by_hand() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        let a = trigrams("abcd"); // abc, bcd
        let b = trigrams("abce"); // abc, bce
        assert!((cosine_sparse(&a, &b) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_creators_voice_scores_above_an_assistant_voice() {
        let creator = [
            "mm hi petal... just steeping some oolong 🍵 how was your day?",
            "hehe biscuit stole my spot again~ he owns this apartment, i just pay rent 🐈",
            "oh honey... come sit with me a while, the rain is doing its thing 🌙",
            "mmh tiny joys, right? tell me the best part of your morning~",
        ];
        let fans = [
            "Hey! How are you doing today?",
            "I had a long day at work, my boss was terrible.",
            "What are you up to tonight? I am just watching TV.",
            "That's awesome, I love cats too. Do you have any other pets?",
        ];
        let p = StyleProfile::build(&creator, &fans);
        let voice =
            p.score("mm that sounds like a slow kind of evening, sweet thing... what are you sipping? 🍵");
        let assistant = p.score("That sounds wonderful! I hope you have a great evening. Let me know if there is anything I can help you with.");
        assert!(voice.style > assistant.style, "{voice:?} vs {assistant:?}");
        assert!(voice.surface > assistant.surface, "{voice:?} vs {assistant:?}");
        assert!((0.0..=1.0).contains(&voice.style) && (0.0..=1.0).contains(&assistant.style));
    }

    #[test]
    fn likelihood_ratios_by_hand() {
        // Creator says "mm" twice, background says "hi" twice: vocabulary {mm, hi} + 1 = 3.
        let p = StyleProfile::build(&["mm mm"], &["hi hi"]);
        let expected_mm = (3.0f64 / 5.0).ln() - (1.0f64 / 5.0).ln();
        assert!((p.words.weights["mm"] - expected_mm).abs() < 1e-12);
        assert!((p.words.weights["hi"] + expected_mm).abs() < 1e-12);
        assert!((p.score("mm").words - 1.0 / (1.0 + (-expected_mm).exp())).abs() < 1e-12);
        assert!(p.score("hi").words < 0.5 && p.score("mm").words > 0.5);
    }
}
