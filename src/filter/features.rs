//! The learned stage's inputs: what is embedded for a text and the feature vector built from it.
//!
//! A text is judged together with the fan message it answers. The features are the text's
//! sentence embedding, the element-wise maximum over its sentences (so one violating clause in a
//! long reply stands out), the embedding of "fan message + reply" and of the fan message alone
//! (so "sure, see you there" reads differently after "meet me at the bar?" than after "live
//! tonight?"), which lexical category fired, and hashed word unigrams and bigrams, all read
//! with the model's [`Spelling`]. Pure: the embeddings are computed by the caller, in the order
//! [`texts_to_embed`] gives.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::sentences;

/// The hashed word n-gram features of a learned filter: how many buckets, and their weight
/// against the unit-length embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Words {
    /// Buckets the unigrams and bigrams are hashed into.
    pub buckets: usize,
    /// The length of the word block (it is L2-normalized, then scaled by this).
    pub weight: f32,
}

impl Words {
    /// The topic filter's: 16,384 buckets weighted 2. Against 2,048 at weight 1, out-of-fold
    /// recall at 1% false positives on the 2,425-text corpus (benign-only negatives) rose from
    /// 0.657 to 0.692 for meetings and from 0.820 to 0.835 for platforms (mean of three fold
    /// shuffles); more buckets collide fewer of the words that tell a plan from a story.
    pub const TOPICS: Words = Words {
        buckets: 16_384,
        weight: 2.0,
    };
    /// The safety and mood classifiers' (and every artifact's before the topic filter's grew).
    pub const COMPACT: Words = Words {
        buckets: 2048,
        weight: 1.0,
    };
    /// Most buckets a model may declare.
    pub const MAX_BUCKETS: usize = 1 << 20;

    /// Checks the settings a model is trained with or loaded with: 1 to [`Self::MAX_BUCKETS`]
    /// buckets and a finite positive weight.
    pub fn check(self) -> Result<(), String> {
        let ok =
            (1..=Self::MAX_BUCKETS).contains(&self.buckets) && self.weight.is_finite() && self.weight > 0.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "word features of {} buckets at weight {} are out of range (1 to {} buckets, a positive weight)",
                self.buckets,
                self.weight,
                Self::MAX_BUCKETS
            ))
        }
    }
}
/// Weight of the lexical one-hot features (the embeddings are unit vectors).
const LEXICAL_WEIGHT: f32 = 3.0;

/// Chat spelling and its expansion: how fans and small models write, read as plain English.
const CHAT_SPELLING: &[(&str, &str)] = &[
    ("u", "you"),
    ("ur", "your"),
    ("ya", "you"),
    ("yr", "your"),
    ("r", "are"),
    ("n", "and"),
    ("d8", "date"),
    ("d8s", "dates"),
    ("2nite", "tonight"),
    ("2night", "tonight"),
    ("tonite", "tonight"),
    ("2day", "today"),
    ("2moro", "tomorrow"),
    ("tmrw", "tomorrow"),
    ("tmr", "tomorrow"),
    ("tmrrw", "tomorrow"),
    ("wkend", "weekend"),
    ("wknd", "weekend"),
    ("cu", "see you"),
    ("cya", "see you"),
    ("c u", "see you"),
    ("irl", "in real life"),
    ("hmu", "hit me up"),
    ("l8r", "later"),
    ("gr8", "great"),
    ("m8", "mate"),
    ("addy", "address"),
    ("pls", "please"),
    ("plz", "please"),
    ("thx", "thanks"),
    ("wyd", "what are you doing"),
    ("wbu", "what about you"),
    ("ngl", "not going to lie"),
    ("fr", "for real"),
    ("rn", "right now"),
    ("bc", "because"),
    ("cuz", "because"),
    ("b4", "before"),
    ("gonna", "going to"),
    ("wanna", "want to"),
    ("lemme", "let me"),
    ("gimme", "give me"),
    ("ima", "i am going to"),
    ("imma", "i am going to"),
    // Platform abbreviations (ig, sc, snap, tg, wa) and contact words (dm, txt, digits) stay as
    // written: the lexicon knows them with their allow-listed senses ("oh snap", "snap peas").
];

/// Lowercases and expands chat spelling word by word: `cu 2nite @ my place` becomes
/// `see you tonight @ my place`. A single letter is expanded only when its neighbours are not
/// single letters too, so a spelled-out name (`s n a p`, `y o u t u b e`) stays as written for
/// the normalizer to join.
pub fn expand_chat_spelling(text: &str) -> String {
    let lower = text.to_lowercase();
    // Alternating runs: (is_word, text).
    let mut tokens: Vec<(bool, String)> = Vec::new();
    for c in lower.chars() {
        let is_word = c.is_alphanumeric() || c == '\'';
        match tokens.last_mut() {
            Some((w, t)) if *w == is_word => t.push(c),
            _ => tokens.push((is_word, c.to_string())),
        }
    }
    let words: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i].0).collect();
    let single = |i: Option<&usize>| i.is_some_and(|&i| tokens[i].1.chars().count() == 1);
    let mut out = String::with_capacity(lower.len() + 16);
    let mut w: usize = 0;
    for (is_word, t) in &tokens {
        if !*is_word {
            out.push_str(t);
            continue;
        }
        let spelled_out = t.chars().count() == 1
            && (single(w.checked_sub(1).and_then(|p| words.get(p))) || single(words.get(w + 1)));
        w += 1;
        let expanded = (!spelled_out)
            .then(|| {
                CHAT_SPELLING
                    .iter()
                    .find(|(short, _)| *short == t.as_str())
                    .map(|(_, long)| *long)
            })
            .flatten();
        out.push_str(expanded.unwrap_or(t));
    }
    out
}

/// How a learned model reads text. Stored with the model: a model reads text at run time the
/// way it was trained to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spelling {
    /// Chat spelling expanded from the table ([`expand_chat_spelling`]): the safety and mood
    /// classifiers, and every model stored before respelling existed.
    #[default]
    Expanded,
    /// Expanded, then the words no dictionary holds respelled ([`super::respell`]): `wanna cme
    /// ovr 2nite` becomes `want to came over tonight`. The topic filter's.
    Respelled,
}

impl Spelling {
    /// `text` as a model trained with this spelling reads it.
    pub fn read(self, text: &str) -> String {
        match self {
            Spelling::Expanded => expand_chat_spelling(text),
            Spelling::Respelled => super::respell::respell(&expand_chat_spelling(text)),
        }
    }
}

/// The texts to embed for one input, in this order: the text, each of its sentences, and with a
/// fan message, the pair and the fan message. All read with `spelling`.
pub fn texts_to_embed(text: &str, fan_message: Option<&str>, spelling: Spelling) -> Vec<String> {
    let text = spelling.read(text);
    let mut out = vec![text.clone()];
    out.extend(sentences(&text));
    if let Some(fan) = fan_message.filter(|f| !f.trim().is_empty()) {
        let fan = spelling.read(fan);
        out.push(format!("THE FAN: {fan}\nYOU: {text}"));
        out.push(fan);
    }
    out
}

/// The length of a feature vector for `dims`-dimensional embeddings, `categories` categories and
/// the word features `words`.
///
/// Saturates instead of overflowing: a stored model is compared against this length, and a
/// damaged artifact's dimensions must fail that comparison, not the arithmetic.
pub fn len(dims: usize, categories: usize, words: Words) -> usize {
    dims.saturating_mul(4)
        .saturating_add(categories)
        .saturating_add(words.buckets)
}

/// Builds the feature vector from the embeddings of [`texts_to_embed`] (same order), the index of
/// the category the lexical stages matched, if any, and the text itself, read with `spelling`.
pub fn build(
    text: &str,
    fan_message: Option<&str>,
    vectors: &[Vec<f32>],
    lexical: Option<usize>,
    categories: usize,
    words: Words,
    spelling: Spelling,
) -> Vec<f32> {
    let dims = vectors.first().map_or(0, Vec::len);
    let has_fan = fan_message.is_some_and(|f| !f.trim().is_empty());
    let sentence_end = vectors.len().saturating_sub(if has_fan { 2 } else { 0 });
    let full: &[f32] = vectors.first().map_or(&[], |v| v.as_slice());
    let mut out = Vec::with_capacity(len(dims, categories, words));
    out.extend_from_slice(full);
    let sentence_vectors = vectors.get(1..sentence_end).unwrap_or(&[]);
    for i in 0..dims {
        let max = sentence_vectors
            .iter()
            .filter_map(|v| v.get(i))
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        out.push(if max.is_finite() {
            max
        } else {
            full.get(i).copied().unwrap_or(0.0)
        });
    }
    if has_fan {
        for v in [vectors.get(sentence_end), vectors.get(sentence_end + 1)] {
            let v: Cow<[f32]> = v.map_or(Cow::Owned(vec![0.0; dims]), |v| Cow::Borrowed(v.as_slice()));
            out.extend((0..dims).map(|i| v.get(i).copied().unwrap_or(0.0)));
        }
    } else {
        out.extend_from_slice(full);
        out.extend(std::iter::repeat_n(0.0, dims));
    }
    out.extend((0..categories).map(|c| if lexical == Some(c) { LEXICAL_WEIGHT } else { 0.0 }));
    out.extend(hashed_words(&spelling.read(text), words));
    out
}

/// Word unigrams and bigrams hashed (FNV-1a) into `words.buckets` buckets, L2-normalized and
/// scaled by `words.weight`.
fn hashed_words(text: &str, spec: Words) -> Vec<f32> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let buckets = spec.buckets.max(1);
    let mut v = vec![0f32; buckets];
    let mut add = |parts: &[&str]| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                h = (h ^ u64::from(b' ')).wrapping_mul(0x0000_0100_0000_01b3);
            }
            for b in p.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        v[(h % buckets as u64) as usize] = 1.0;
    };
    for w in &words {
        add(&[w]);
    }
    for pair in words.windows(2) {
        add(pair);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x *= spec.weight / norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_spelling_is_expanded_word_by_word() {
        let cases = [
            ("cu 2nite @ my place", "see you tonight @ my place"),
            (
                "wanna grab a d8 this wkend? hmu",
                "want to grab a date this weekend? hit me up",
            ),
            ("meet irl tmrw", "meet in real life tomorrow"),
            ("ur so cute, u free?", "your so cute, you free?"),
            ("uranus is far", "uranus is far"),
            ("what's ur addy", "what's your address"),
            ("add me on s n a p", "add me on s n a p"),
            ("y o u t u b e", "y o u t u b e"),
            ("u free n down?", "you free and down?"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_chat_spelling(input), want, "{input}");
        }
    }

    #[test]
    fn a_model_reads_text_with_the_spelling_it_was_trained_with() {
        let text = "wanna cme ovr 2nite? pleasee";
        assert_eq!(Spelling::Expanded.read(text), "want to cme ovr tonight? pleasee");
        assert_eq!(
            Spelling::Respelled.read(text),
            "want to came over tonight? please"
        );
        // Models stored before respelling carry no spelling and read as they were trained.
        assert_eq!(Spelling::default(), Spelling::Expanded);
        let words = Words {
            buckets: 64,
            weight: 1.0,
        };
        let vectors = vec![vec![1.0, 0.0]];
        assert_ne!(
            build(text, None, &vectors, None, 1, words, Spelling::Expanded),
            build(text, None, &vectors, None, 1, words, Spelling::Respelled),
            "the word features follow the spelling"
        );
    }

    #[test]
    fn the_vector_has_the_documented_layout() {
        let dims = 3;
        let texts = texts_to_embed("ok. see you there", Some("meet me at 8?"), Spelling::Respelled);
        // The text, its one sentence long enough to count, the pair, the fan message.
        assert_eq!(texts.len(), 4, "{texts:?}");
        let vectors: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 1.0],
            vec![0.5, 0.5, 0.0],
            vec![0.0, 0.5, 0.5],
        ];
        let words = Words {
            buckets: 64,
            weight: 2.0,
        };
        let f = build(
            "ok. see you there",
            Some("meet me at 8?"),
            &vectors,
            Some(1),
            2,
            words,
            Spelling::Respelled,
        );
        assert_eq!(f.len(), len(dims, 2, words));
        assert_eq!(f.len(), 3 * 4 + 2 + 64);
        assert_eq!(&f[..3], &[1.0, 0.0, 0.0], "full");
        assert_eq!(&f[3..6], &[0.0, 1.0, 1.0], "max over sentences");
        assert_eq!(&f[6..9], &[0.5, 0.5, 0.0], "pair");
        assert_eq!(&f[9..12], &[0.0, 0.5, 0.5], "fan");
        assert_eq!(&f[12..14], &[0.0, LEXICAL_WEIGHT], "lexical one-hot");
        let block = &f[14..];
        let norm: f32 = block.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 2.0).abs() < 1e-5,
            "the word block has length `weight`: {norm}"
        );
        assert_eq!(
            block.iter().filter(|x| **x > 0.0).count(),
            4 + 3,
            "4 words, 3 bigrams"
        );
        let alone = build(
            "ok. see you there",
            None,
            &vectors[..2],
            None,
            2,
            words,
            Spelling::Respelled,
        );
        assert_eq!(
            &alone[6..9],
            &alone[..3],
            "without a fan message the pair is the text"
        );
        assert!(alone[9..12].iter().all(|x| *x == 0.0));
    }
}
