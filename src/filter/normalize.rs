//! Text normalization for the topic filter: undo the ways people disguise words.
//!
//! Owns the pipeline NFKC -> drop invisible characters -> strip accents -> lowercase ->
//! leetspeak and symbol substitutions -> join single letters split by separators ("s.n.a.p",
//! "t i k t o k") -> collapse whitespace. It also spells out number words for the phone check.
//! Pure functions, table-tested; the matcher in `filter` decides what the result means.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing and are used to split words invisibly.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}')
}

/// Lowercased, accent-free, invisible-free text with NFKC compatibility forms folded
/// (fullwidth and styled letters become ASCII). Symbols are kept: handles and links need them.
pub fn fold(text: &str) -> String {
    let nfkc: String = text.nfkc().filter(|c| !is_invisible(*c)).collect();
    nfkc.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase()
}

/// The form the lexicon is matched against: [`fold`], then leetspeak undone, then letters split
/// by separators joined, then every run of non-alphanumerics turned into one space. A question
/// mark is kept as its own token, since "dinner friday?" proposes and "dinner friday." reports.
pub fn normalize(text: &str) -> String {
    let folded = fold(text);
    let unleet = unleet(&folded);
    let joined = join_spelled_out(&unleet);
    let mut out = String::with_capacity(joined.len());
    let mut space = true;
    for c in joined.chars() {
        if c.is_alphanumeric() {
            out.push(c);
            space = false;
        } else if c == '?' {
            if !space {
                out.push(' ');
            }
            out.push_str("? ");
            space = true;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    out.trim_end().to_string()
}

/// Leetspeak and symbol substitutions inside words: `1nst4` -> `insta`, `sn@p` -> `snap`.
///
/// A digit is only replaced when a letter touches it and a symbol only between letters, so phone
/// numbers, prices, handles and punctuation stay what they are.
pub fn unleet(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let letter_before = |i: usize| {
        i.checked_sub(1)
            .and_then(|j| chars.get(j))
            .is_some_and(|c| c.is_alphabetic())
    };
    let letter_after = |i: usize| chars.get(i + 1).is_some_and(|c| c.is_alphabetic());
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let sub = match c {
                '0' => 'o',
                '1' | '!' | '|' => 'i',
                '3' => 'e',
                '4' | '@' => 'a',
                '5' | '$' => 's',
                '7' | '+' => 't',
                '8' => 'b',
                '9' => 'g',
                _ => return c,
            };
            // A digit touching a letter is a letter (`1nst4`); a symbol only inside a word
            // (`sn@p`), so `insta!`, `@name` and `$5` keep their symbols.
            let inside = if c.is_ascii_digit() {
                letter_before(i) || letter_after(i)
            } else {
                letter_before(i) && letter_after(i)
            };
            if inside {
                sub
            } else {
                c
            }
        })
        .collect()
}

/// Joins runs of three or more single letters split by one separator each: "s.n.a.p" and
/// "t i k t o k" become "snap" and "tiktok". Words of two or more letters are left alone.
pub fn join_spelled_out(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let is_sep =
        |c: char| c.is_whitespace() || matches!(c, '.' | '-' | '_' | '*' | '·' | '/' | ',' | '~' | '+');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // A single letter: alphanumeric with no alphanumeric neighbour in the run.
        let single_at = |j: usize| {
            chars.get(j).is_some_and(|c| c.is_alphanumeric())
                && j.checked_sub(1)
                    .and_then(|k| chars.get(k))
                    .is_none_or(|c| !c.is_alphanumeric())
                && chars.get(j + 1).is_none_or(|c| !c.is_alphanumeric())
        };
        if single_at(i) {
            let mut letters = vec![chars[i]];
            let mut j = i + 1;
            while j + 1 < chars.len() && is_sep(chars[j]) && single_at(j + 1) {
                letters.push(chars[j + 1]);
                j += 2;
            }
            if letters.len() >= 3 {
                out.extend(letters);
                i = j;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Number words spelled out as digits, for finding phone numbers written as words.
pub fn digits_from_words(text: &str) -> String {
    const WORDS: [(&str, char); 11] = [
        ("zero", '0'),
        ("oh", '0'),
        ("one", '1'),
        ("two", '2'),
        ("three", '3'),
        ("four", '4'),
        ("five", '5'),
        ("six", '6'),
        ("seven", '7'),
        ("eight", '8'),
        ("nine", '9'),
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| match WORDS.iter().find(|(word, _)| *word == w) {
            Some((_, d)) => d.to_string(),
            None => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        // (case, input, normalized)
        let cases = [
            ("plain", "Add me on Insta!", "add me on insta"),
            ("fullwidth", "ｉｎｓｔａ", "insta"),
            ("zero-width space", "sn\u{200B}ap", "snap"),
            ("accents", "ìnstà", "insta"),
            ("leet", "1nst4 and t3l3gram", "insta and telegram"),
            ("symbols", "sn@p wh@tsapp", "snap whatsapp"),
            ("dotted letters", "my s.n.a.p is", "my snap is"),
            ("spaced letters", "t i k t o k", "tiktok"),
            ("dashed letters", "k-i-k me", "kik me"),
            ("two letters stay apart", "i m ok", "i m ok"),
            ("numbers stay numbers", "call 555 201 8890", "call 555 201 8890"),
            ("handle keeps its letters", "@wren_alder", "wren alder"),
            ("styled letters", "𝓲𝓷𝓼𝓽𝓪", "insta"),
            (
                "question mark kept",
                "dinner friday?? my treat",
                "dinner friday ? ? my treat",
            ),
            ("spelled words", "s e e  y o u  friday", "see you friday"),
        ];
        for (name, input, expected) in cases {
            assert_eq!(normalize(input), expected, "{name}");
        }
    }

    #[test]
    fn fold_keeps_symbols_for_handles_and_links() {
        assert_eq!(fold("Ｍｙ @Wren.Alder @ t.me/x"), "my @wren.alder @ t.me/x");
    }

    #[test]
    fn number_words_become_digits() {
        assert_eq!(digits_from_words("five five five, two oh one"), "5 5 5 2 0 1");
    }
}
