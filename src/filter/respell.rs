//! Respelling words that are not English words into the English word they most likely are.
//!
//! Fans and small models write "cme ovr", "pleasee", "snapp", "l8r" and "nite": words no
//! dictionary holds, which neither the lexicon nor the embedding model reads as what they say.
//! The fixed table of [`super::features`] expands the common abbreviations; this stage handles
//! the open-ended rest with four general rules, each accepted only when it lands on a word of
//! the dictionary:
//!
//! 1. letters repeated for emphasis collapsed ("yesss", "pleasee", "snapp", "meeeet");
//! 2. digits read as sounds ("l8r" -> "later", "2gether" -> "together");
//! 3. "-ite" read as "-ight" ("nite" -> "night");
//! 4. dropped vowels put back ("ovr" -> "over", "bby" -> "baby", "txt" -> "text"): the most
//!    frequent dictionary word that starts with the same letter, has the same consonants in the
//!    same order, and contains the written letters in order. Frequency is not meaning: "cme"
//!    becomes "came", not "come", and "lnch" "launch"; the words stay close enough for the
//!    embedding model, and the lexicon also reads the text as written.
//!
//! It runs on the expanded text before the normalizer's folding, so a word that is also
//! disguised ("sn4ppp", fullwidth letters) is only folded, not respelled.
//!
//! The dictionary is the whole-word vocabulary of the embedding model's tokenizer
//! (all-MiniLM-L6-v2, the BERT uncased WordPiece vocabulary, Apache-2.0), lowercase ASCII words
//! of two letters or more, in the tokenizer's order, which follows word frequency: `words.txt`.
//! A word the dictionary holds is never changed. Pure and deterministic.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The dictionary, most frequent first.
const WORDS: &str = include_str!("words.txt");

/// Shortest word this stage respells: two-letter tokens ("ig", "sc", "wa") are the lexicon's.
const MIN_LEN: usize = 3;
/// Longest word it respells.
const MAX_LEN: usize = 16;
/// Most letters dropped vowels may add back.
const MAX_ADDED_VOWELS: usize = 3;

struct Dictionary {
    /// Every word with its rank (0 = most frequent).
    rank: HashMap<&'static str, usize>,
    /// Words by their consonant key ([`key`]), most frequent first.
    by_key: HashMap<String, Vec<&'static str>>,
}

static DICTIONARY: LazyLock<Dictionary> = LazyLock::new(|| {
    let mut rank = HashMap::new();
    let mut by_key: HashMap<String, Vec<&'static str>> = HashMap::new();
    for (i, w) in WORDS.lines().filter(|w| !w.is_empty()).enumerate() {
        rank.entry(w).or_insert(i);
        by_key.entry(key(w)).or_default().push(w);
    }
    Dictionary { rank, by_key }
});

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// The first letter and the consonants after it: "come" and "cme" -> "cm", "over" -> "ovr".
fn key(word: &str) -> String {
    let mut chars = word.chars();
    let mut out: String = chars.next().into_iter().collect();
    out.extend(chars.filter(|c| !is_vowel(*c)));
    out
}

/// Whether `word` is in the dictionary.
fn in_dictionary(word: &str) -> bool {
    DICTIONARY.rank.contains_key(word)
}

/// Endings the tokenizer's vocabulary leaves off (it splits "pics" into "pic" and "##s").
const ENDINGS: [&str; 9] = ["s", "es", "ed", "d", "ing", "er", "ers", "ly", "y"];

/// Whether `word` is a dictionary word, or one with a common ending ("pics", "dms", "texted").
pub fn is_word(word: &str) -> bool {
    in_dictionary(word)
        || ENDINGS.iter().any(|end| {
            // Two-letter stems only take a plural ("dms"): "bby" is not "bb" + "y".
            let shortest = if *end == "s" { 2 } else { 3 };
            word.strip_suffix(end)
                .is_some_and(|stem| stem.len() >= shortest && in_dictionary(stem))
        })
}

/// Rule 4 only reaches the most frequent words: among rarer ones, dropped vowels put back
/// find names and technical words ("omg" -> "omega", "brb" -> "barbie") more often than
/// what was meant.
const VOWELS_BACK_MAX_RANK: usize = 5000;

/// The dictionary word `token` most likely stands for, or `None` when it is a word already,
/// out of this stage's reach (too short or long, not lowercase ASCII letters and digits, one
/// letter repeated), or no rule lands on a word.
pub fn respell_word(token: &str) -> Option<String> {
    let len = token.chars().count();
    let letters = || token.chars().filter(char::is_ascii_lowercase);
    if !(MIN_LEN..=MAX_LEN).contains(&len)
        || !token
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        || letters().next().is_none()
        || letters().all(|c| Some(c) == letters().next())
        || is_word(token)
    {
        return None;
    }
    if token.chars().any(|c| c.is_ascii_digit()) {
        return spoken_digits(token);
    }
    // Rule 1: runs of three or more to two ("goood"), then those and a doubled last letter to
    // one ("yesss", "snapp"). A doubled letter inside a word ("ppv", "noor") is left alone.
    let twice = collapse_runs(token, 2);
    let once = collapse_runs(token, 1);
    let exact = [&twice, &once]
        .into_iter()
        .find(|w| **w != token && in_dictionary(w));
    let with_ending = || [&twice, &once].into_iter().find(|w| **w != token && is_word(w));
    if let Some(w) = exact.or_else(with_ending) {
        return Some(w.clone());
    }
    for form in [token, once.as_str()] {
        // Rule 3.
        if let Some(stem) = form.strip_suffix("ite") {
            let night = format!("{stem}ight");
            if in_dictionary(&night) {
                return Some(night);
            }
        }
        // Rule 4, for tokens written without vowels (a final "e" aside: "cme", "hse").
        let inner = form.get(1..).unwrap_or("");
        if !inner.strip_suffix('e').unwrap_or(inner).chars().any(is_vowel) {
            if let Some(w) = with_vowels_back(form) {
                return Some(w.to_string());
            }
        }
    }
    None
}

/// Rule 2: digits read as sounds, when that spells a word. Ordinals, plurals and units
/// ("4th", "90s", "8pm") are numbers, not words.
fn spoken_digits(token: &str) -> Option<String> {
    let digits_end = token.find(|c: char| !c.is_ascii_digit()).unwrap_or(token.len());
    let suffix = &token[digits_end..];
    let is_number = digits_end > 0
        && suffix.chars().all(|c| c.is_ascii_lowercase())
        && ["st", "nd", "rd", "th", "s", "am", "pm", "k", "h", "m", "x"].contains(&suffix);
    if is_number {
        return None;
    }
    let spoken: String = token
        .chars()
        .map(|c| match c {
            '8' => "ate".to_string(),
            '2' => "to".to_string(),
            '4' => "for".to_string(),
            other => other.to_string(),
        })
        .collect();
    in_dictionary(&spoken).then_some(spoken)
}

/// Runs of three or more letters cut to `most`; with `most` 1, a doubled last letter too.
fn collapse_runs(token: &str, most: usize) -> String {
    let chars: Vec<char> = token.chars().collect();
    let mut out = String::with_capacity(token.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let at_end = i + run == chars.len();
        let keep = if run >= 3 || (run == 2 && at_end && most == 1) {
            most
        } else {
            run
        };
        out.extend(std::iter::repeat_n(c, keep));
        i += run;
    }
    out
}

/// Rule 4: the most frequent word with `form`'s first letter and consonants that contains
/// `form`'s letters in order and adds at most [`MAX_ADDED_VOWELS`] vowels.
fn with_vowels_back(form: &str) -> Option<&'static str> {
    let candidates = DICTIONARY.by_key.get(&key(form))?;
    let n = form.chars().count();
    candidates
        .iter()
        .take_while(|w| DICTIONARY.rank.get(*w).is_some_and(|&r| r < VOWELS_BACK_MAX_RANK))
        .find(|w| {
            let m = w.chars().count();
            m > n && m - n <= MAX_ADDED_VOWELS && is_subsequence(form, w)
        })
        .copied()
}

fn is_subsequence(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    short.chars().all(|c| rest.any(|l| l == c))
}

/// `text` with every word the rules reach respelled; everything else, spacing and punctuation
/// included, is kept. Expects lowercase text (the chat-spelling expansion's output).
pub fn respell(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match respell_word(word) {
            Some(w) => out.push_str(&w),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_lands_on_a_dictionary_word() {
        for (token, want) in [
            ("yesss", "yes"),
            ("pleasee", "please"),
            ("snapp", "snap"),
            ("goood", "good"),
            ("l8r", "later"),
            ("2gether", "together"),
            ("4ever", "forever"),
            ("nite", "night"),
            ("cme", "came"),
            ("ovr", "over"),
            ("bby", "baby"),
            ("txt", "text"),
            ("nxt", "next"),
            ("wknd", "weekend"),
        ] {
            assert_eq!(respell_word(token).as_deref(), Some(want), "{token}");
        }
    }

    #[test]
    fn words_short_tokens_and_what_no_rule_reaches_stay() {
        for token in [
            "come", "night", "pics", "dms", "onlyfans", "ig", "sc", "x7q", "lmaooo", "123", "Come", "kik",
            "tok", "4th", "90s", "8pm", "omg", "brb", "ppv", "zzzz",
        ] {
            assert_eq!(respell_word(token), None, "{token}");
        }
    }

    #[test]
    fn text_keeps_its_spacing_and_punctuation() {
        assert_eq!(
            respell("wna cme ovr l8r?? pleasee, bby!"),
            "wna came over later?? please, baby!"
        );
        assert_eq!(respell(""), "");
        assert_eq!(respell("  ok  "), "  ok  ");
    }

    #[test]
    fn the_dictionary_is_ordered_by_frequency() {
        let rank = |w: &str| DICTIONARY.rank.get(w).copied();
        assert!(rank("the") < rank("house"));
        assert!(rank("house") < rank("salamanca"));
    }
}
