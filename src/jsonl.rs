//! Reading JSON-lines files: one object per line, blank lines skipped, and an error that names
//! the file, the line and the shape the line should have.
//!
//! The labelled sets, response files, contrast set and fan-message pools persona reads from files
//! are in this format (`check --jsonl` reads stdin line by line instead, answering as it goes);
//! the checks that depend on a line's meaning (unknown category, empty text, index out of range)
//! stay with the reader of that file, which gets each value with its line number. The whole
//! file is parsed first, so a line that is not the expected JSON is reported before a later
//! check finds fault with an earlier line.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Parses every non-blank line of `content` as a `T`, with its 1-based line number. `name` is
/// the file as errors show it; `shape` describes a line, as in `{"text": string}`.
pub fn parse<T: DeserializeOwned>(name: &str, content: &str, shape: &str) -> Result<Vec<(usize, T)>> {
    content
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let value = serde_json::from_str(line)
                .with_context(|| format!("`{name}` line {}: expected {shape}", n + 1))?;
            Ok((n + 1, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Line {
        text: String,
    }

    #[test]
    fn blank_lines_are_skipped_and_line_numbers_kept() {
        let got: Vec<(usize, Line)> =
            parse("f.jsonl", "{\"text\":\"a\"}\n\n  \n{\"text\":\"b\"}\n", "x").unwrap();
        let want = vec![(1, Line { text: "a".into() }), (4, Line { text: "b".into() })];
        assert_eq!(got, want);
    }

    #[test]
    fn a_bad_line_names_the_file_the_line_and_the_shape() {
        let err =
            parse::<Line>("f.jsonl", "{\"text\":\"a\"}\n{\"txt\":1}", "{\"text\": string}").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("`f.jsonl` line 2: expected {\"text\": string}"),
            "{msg}"
        );
        assert!(msg.contains("missing field `text`"), "{msg}");
    }
}
