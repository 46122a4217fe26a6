//! Copy detection: how much of a generated reply is a verbatim run of words from a demo or from
//! any of the creator's training replies.
//!
//! A real creator does not repeat herself word for word, and a small model that parrots its
//! nearest demo would otherwise score well on style. The measure is the longest common span of
//! consecutive words (lowercased, punctuation trimmed from each word's ends). A reply is a
//! **near-verbatim copy** when that span, against any training reply, is at least
//! [`MIN_SPAN`] words and at least [`COPY_SHARE`] of the reply's words; `voice_fidelity` gives
//! such a reply no style credit (see [`super::metrics::voice_fidelity`]). Pure functions.

/// A copied span shorter than this many words is a coincidence ("haha yes i know"), not a copy.
pub const MIN_SPAN: usize = 5;

/// The share of a reply's words the copied span must cover for the reply to count as a copy.
pub const COPY_SHARE: f64 = 0.6;

/// A text's words for span matching: lowercased, with punctuation trimmed from each end.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The length of the longest run of consecutive words `a` and `b` share.
pub fn longest_common_span(a: &[String], b: &[String]) -> usize {
    // One row of the classic dynamic programme: run[j] is the shared run ending at a[i], b[j].
    let mut run = vec![0usize; b.len() + 1];
    let mut best = 0;
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = run[j + 1];
            run[j + 1] = if x == y { diagonal + 1 } else { 0 };
            best = best.max(run[j + 1]);
            diagonal = above;
        }
    }
    best
}

/// The longest span a reply shares with any of `texts` (already split into words).
pub fn longest_span_with_any(reply: &[String], texts: &[Vec<String>]) -> usize {
    texts
        .iter()
        .map(|t| longest_common_span(reply, t))
        .max()
        .unwrap_or(0)
}

/// Whether a reply of `reply_words` words with a copied span of `span` words is a near-verbatim
/// copy.
pub fn is_copy(span: usize, reply_words: usize) -> bool {
    span >= MIN_SPAN && span as f64 >= COPY_SHARE * reply_words as f64
}

/// How a reply copies: its longest span shared with the demos it was shown and with any
/// training reply, and whether that makes it a near-verbatim copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Copying {
    /// Longest span shared with one of the reply's demos (0 without demos).
    pub demo_span: usize,
    /// Longest span shared with any training reply.
    pub train_span: usize,
    /// The reply's word count.
    pub words: usize,
    /// Whether it is a near-verbatim copy of a training reply.
    pub copied: bool,
}

/// Measures a reply against its demos and the training replies (all split into words).
pub fn measure(reply: &str, demos: &[Vec<String>], training: &[Vec<String>]) -> Copying {
    let w = words(reply);
    let demo_span = longest_span_with_any(&w, demos);
    let train_span = longest_span_with_any(&w, training).max(demo_span);
    Copying {
        demo_span,
        train_span,
        words: w.len(),
        copied: is_copy(train_span, w.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<String> {
        words(text)
    }

    #[test]
    fn words_are_lowercased_and_trimmed_of_punctuation() {
        assert_eq!(
            words("Mm, HI petal... 🍵 how's it?"),
            ["mm", "hi", "petal", "how's", "it"]
        );
    }

    #[test]
    fn the_longest_common_span_by_hand() {
        // "the kettle is on and" is the longest run both share: the comma is not a word.
        let a = w("mm the kettle is on and biscuit naps");
        let b = w("oh the kettle is on, and you?");
        assert_eq!(longest_common_span(&a, &b), 5);
        let b = w("the kettle is off and biscuit naps");
        assert_eq!(
            longest_common_span(&a, &b),
            3,
            "'the kettle is' and 'and biscuit naps': 3 words each"
        );
        assert_eq!(longest_common_span(&a, &w("nothing alike here")), 0);
        assert_eq!(longest_common_span(&a, &a), a.len());
        assert_eq!(longest_common_span(&[], &a), 0);
    }

    #[test]
    fn a_copy_needs_five_words_and_most_of_the_reply() {
        assert!(!is_copy(4, 4), "four shared words are a coincidence");
        assert!(is_copy(5, 8), "5 of 8 words (0.625)");
        assert!(!is_copy(5, 9), "5 of 9 words (0.56) is quoting, not copying");
    }

    #[test]
    fn a_reply_is_measured_against_its_demos_and_every_training_reply() {
        let training = vec![
            w("mm the kettle is on and biscuit is yelling for breakfast"),
            w("haha stop it"),
        ];
        let demos = vec![w("haha stop it")];
        let m = measure("the kettle is on and biscuit is yelling!!", &demos, &training);
        assert_eq!(
            m,
            Copying {
                demo_span: 0,
                train_span: 8,
                words: 8,
                copied: true
            }
        );
        let m = measure("haha stop it you", &demos, &training);
        assert_eq!(
            m,
            Copying {
                demo_span: 3,
                train_span: 3,
                words: 4,
                copied: false
            }
        );
    }
}
