//! The training-data format: parsing, validation and the examples drawn from it.
//!
//! Owns the schema of `conversations.json` (the DSPy trainset shape plus optional `sent_at`, `fan`
//! and `id`), every check on it, the expansion of each creator turn into an [`Example`], duplicate
//! removal and the deterministic hold-out split. It does not read files: callers hand it bytes.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::transcript;
use super::{Conversation, Example, FanProfile, Message, MAX_MESSAGE_CHARS};

/// A dataset problem, with the place it was found.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct DatasetError {
    /// Where: a JSON path such as `[3].chat_history.messages[1].content`, or `line 4, column 2`.
    pub place: String,
    /// What is wrong and what to do.
    pub problem: String,
}

#[derive(Deserialize)]
struct RawConversation {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    fan: Option<FanProfile>,
    chat_history: RawHistory,
    output: String,
    #[serde(default)]
    output_sent_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct RawHistory {
    messages: Vec<Message>,
}

/// Parses and validates a dataset.
///
/// Streams the top-level list: each conversation is read, checked and converted before the next
/// one is read, so a large dataset is never held as a whole JSON tree besides the result.
pub fn parse(bytes: &[u8]) -> Result<Vec<Conversation>, DatasetError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(&bytes[..e.valid_up_to()]);
        DatasetError {
            place: format!("line {line}, column {col}"),
            problem: "the file is not valid UTF-8; save it as UTF-8".into(),
        }
    })?;
    // Another JSON value at the top is a shape error; anything else is left to the parser, which
    // names the line and column.
    if let Some(kind) = text.trim_start().chars().next().and_then(kind_starting_with) {
        return Err(DatasetError {
            place: "top level".into(),
            problem: format!(
                "expected a JSON list of conversations, found {kind}; wrap the conversations in [ ... ]"
            ),
        });
    }
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let syntax = |e: serde_json::Error| DatasetError {
        place: format!("line {}, column {}", e.line(), e.column()),
        problem: format!("not valid JSON ({e}); fix the syntax there"),
    };
    let parsed = serde::Deserializer::deserialize_seq(
        &mut deserializer,
        Conversations {
            failure: &mut failure,
        },
    );
    if let Some(problem) = failure {
        return Err(problem);
    }
    let conversations = parsed.map_err(syntax)?;
    deserializer.end().map_err(syntax)?;
    if conversations.is_empty() {
        return Err(DatasetError {
            place: "top level".into(),
            problem: "the list of conversations is empty; add at least one conversation".into(),
        });
    }
    Ok(conversations)
}

/// Visits the top-level list one conversation at a time; a schema problem is kept in `failure`
/// (with its place) and stops the parse.
struct Conversations<'a> {
    failure: &'a mut Option<DatasetError>,
}

impl<'de> serde::de::Visitor<'de> for Conversations<'_> {
    type Value = Vec<Conversation>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON list of conversations")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            let i = out.len();
            let checked = serde_path_to_error::deserialize::<_, RawConversation>(&value)
                .map_err(|e| {
                    let inner = e.path().to_string();
                    let path = if inner == "." {
                        format!("[{i}]")
                    } else {
                        format!("[{i}].{inner}")
                    };
                    DatasetError {
                        place: json_path(&path),
                        problem: format!(
                            "{}; each item needs `chat_history.messages` (a list of \
                             {{\"from_creator\": bool, \"content\": string}}) and `output` (a string)",
                            e.inner()
                        ),
                    }
                })
                .and_then(|raw| validate(i, raw));
            match checked {
                Ok(c) => out.push(c),
                Err(problem) => {
                    *self.failure = Some(problem);
                    return Err(serde::de::Error::custom("invalid conversation"));
                }
            }
        }
        Ok(out)
    }
}

/// What a JSON value starting with `first` is, for every value but a list.
fn kind_starting_with(first: char) -> Option<&'static str> {
    match first {
        '{' => Some("an object"),
        '"' => Some("a string"),
        't' | 'f' => Some("a boolean"),
        'n' => Some("null"),
        c if c == '-' || c.is_ascii_digit() => Some("a number"),
        _ => None,
    }
}

fn validate(index: usize, raw: RawConversation) -> Result<Conversation, DatasetError> {
    let id = match raw.id {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(DatasetError {
                place: format!("[{index}].id"),
                problem: format!("expected a string or number, found {}", kind_of(&other)),
            })
        }
    };
    let mut messages = raw.chat_history.messages;
    messages.push(Message {
        from_creator: true,
        content: raw.output,
        sent_at: raw.output_sent_at,
    });
    let last = messages.len() - 1;
    for (m, message) in messages.iter().enumerate() {
        let place = if m == last {
            format!("[{index}].output")
        } else {
            format!("[{index}].chat_history.messages[{m}].content")
        };
        if message.content.trim().is_empty() {
            return Err(DatasetError {
                place,
                problem: "the message is empty; remove it or give it text".into(),
            });
        }
        let chars = message.content.chars().count();
        if chars > MAX_MESSAGE_CHARS {
            return Err(DatasetError {
                place,
                problem: format!(
                    "the message has {chars} characters, over the cap of {MAX_MESSAGE_CHARS}; \
                     shorten or split it"
                ),
            });
        }
    }
    Ok(Conversation {
        id,
        fan: raw.fan,
        messages,
    })
}

/// The examples of a dataset: every creator message that follows at least one message, in the
/// conversations `keep` accepts (by index).
///
/// Returns the examples and the number of duplicates dropped (same inputs, same reply) among the
/// kept conversations; a conversation left out never causes a kept one's example to be dropped.
pub fn examples(
    conversations: &[Conversation],
    window: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<Example>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut duplicates = 0;
    for (c, conversation) in conversations.iter().enumerate().filter(|(c, _)| keep(*c)) {
        for (t, message) in conversation.messages.iter().enumerate() {
            if !message.from_creator || t == 0 {
                continue;
            }
            let key = (
                transcript::embedding_text(&conversation.messages[..t], window),
                message.content.trim().to_string(),
            );
            if seen.insert(key) {
                out.push(Example {
                    conversation: c as u32,
                    turn: t as u32,
                });
            } else {
                duplicates += 1;
            }
        }
    }
    (out, duplicates)
}

/// A content hash of one conversation, independent of its position and formatting.
pub fn conversation_hash(conversation: &Conversation) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for message in &conversation.messages {
        hasher.update([u8::from(message.from_creator)]);
        hasher.update((message.content.len() as u64).to_le_bytes());
        hasher.update(message.content.as_bytes());
    }
    hasher.finalize().into()
}

/// Whether a conversation is held out for evaluation at this fraction.
///
/// The decision depends only on the conversation's content, so adding conversations never moves
/// an existing one between the index and the held-out set.
pub fn is_held_out(conversation: &Conversation, fraction: f64) -> bool {
    let hash = conversation_hash(conversation);
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash[..8]);
    let position = u64::from_be_bytes(head) as f64 / (u64::MAX as f64 + 1.0);
    position < fraction
}

fn line_col(prefix: &[u8]) -> (usize, usize) {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = prefix.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&prefix[line_start..]).chars().count() + 1;
    (line, col)
}

fn json_path(path: &str) -> String {
    // serde_path_to_error prints `[3].chat_history.messages[1].content`; `.` alone means the root.
    if path == "." || path.is_empty() {
        "top level".into()
    } else {
        path.to_string()
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"[{"chat_history":{"messages":[
        {"from_creator":false,"content":"hi"},
        {"from_creator":true,"content":"hey you"},
        {"from_creator":false,"content":"how are you"}]},
      "output":"good, you?"}]"#;

    #[test]
    fn parses_and_rejects_a_table_of_inputs() {
        // (case, input, Ok(conversations) or Err(substring of the place))
        let long = format!(
            r#"[{{"chat_history":{{"messages":[{{"from_creator":false,"content":"{}"}}]}},"output":"x"}}]"#,
            "a".repeat(MAX_MESSAGE_CHARS + 1)
        );
        let cases: Vec<(&str, Vec<u8>, Result<usize, &str>)> = vec![
            ("minimal", GOOD.into(), Ok(1)),
            (
                "optional keys and unknown keys",
                br#"[{"id":7,"fan":{"name":"mike","age":30},"extra":1,"chat_history":{"messages":[
                    {"from_creator":false,"content":"hi","sent_at":"2026-01-02T03:04:05Z","mood":"x"}]},
                    "output":"hey"}]"#
                    .to_vec(),
                Ok(1),
            ),
            ("not json", b"hello".to_vec(), Err("line 1, column 1")),
            ("truncated", GOOD[..40].into(), Err("line 2")),
            ("object at top", br#"{"a":1}"#.to_vec(), Err("top level")),
            ("empty list", b"[]".to_vec(), Err("top level")),
            ("missing output", br#"[{"chat_history":{"messages":[]}}]"#.to_vec(), Err("[0]")),
            (
                "mistyped from_creator",
                br#"[{"chat_history":{"messages":[{"from_creator":"yes","content":"x"}]},"output":"y"}]"#
                    .to_vec(),
                Err("[0].chat_history.messages[0].from_creator"),
            ),
            (
                "empty content",
                br#"[{"chat_history":{"messages":[{"from_creator":false,"content":"  "}]},"output":"y"}]"#
                    .to_vec(),
                Err("[0].chat_history.messages[0].content"),
            ),
            (
                "empty output",
                br#"[{"chat_history":{"messages":[{"from_creator":false,"content":"a"}]},"output":""}]"#
                    .to_vec(),
                Err("[0].output"),
            ),
            (
                "bad timestamp",
                br#"[{"chat_history":{"messages":[{"from_creator":false,"content":"a","sent_at":"yesterday"}]},"output":"b"}]"#
                    .to_vec(),
                Err("[0].chat_history.messages[0].sent_at"),
            ),
            ("invalid utf-8", b"[\n  \"\xff\"]".to_vec(), Err("line 2, column 4")),
            (
                "a later item is wrong",
                format!(r#"[{0},{0},{{"chat_history":{{"messages":[]}},"output":3}}]"#, &GOOD[1..GOOD.len() - 1])
                    .into_bytes(),
                Err("[2].output"),
            ),
            ("a list item that is not an object", br#"[1]"#.to_vec(), Err("[0]")),
            ("garbage after the list", format!("{GOOD} x").into_bytes(), Err("line")),
            ("too long", long.into_bytes(), Err("[0].chat_history.messages[0].content")),
        ];
        for (name, input, expected) in cases {
            match (parse(&input), expected) {
                (Ok(conversations), Ok(n)) => assert_eq!(conversations.len(), n, "{name}"),
                (Err(e), Err(place)) => {
                    let text = e.to_string();
                    assert!(text.contains(place), "{name}: `{text}` should name `{place}`");
                }
                (got, want) => panic!("{name}: got {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn every_creator_turn_after_the_first_message_is_an_example() {
        let conversations = parse(GOOD.as_bytes()).unwrap();
        let (examples, duplicates) = examples(&conversations, 6, |_| true);
        assert_eq!(duplicates, 0);
        assert_eq!(
            examples,
            vec![
                Example {
                    conversation: 0,
                    turn: 1
                },
                Example {
                    conversation: 0,
                    turn: 3
                }
            ]
        );
    }

    #[test]
    fn duplicate_examples_are_dropped_and_counted() {
        let twice = format!("[{},{}]", &GOOD[1..GOOD.len() - 1], &GOOD[1..GOOD.len() - 1]);
        let conversations = parse(twice.as_bytes()).unwrap();
        let (examples, duplicates) = examples(&conversations, 6, |_| true);
        assert_eq!((examples.len(), duplicates), (2, 2));
    }

    #[test]
    fn a_left_out_twin_never_removes_a_kept_example() {
        let twice = format!("[{},{}]", &GOOD[1..GOOD.len() - 1], &GOOD[1..GOOD.len() - 1]);
        let conversations = parse(twice.as_bytes()).unwrap();
        // The first copy is held out: the second keeps both of its examples.
        let (examples, duplicates) = examples(&conversations, 6, |c| c != 0);
        assert_eq!((examples.len(), duplicates), (2, 0));
        assert!(examples.iter().all(|e| e.conversation == 1));
    }

    #[test]
    fn hold_out_depends_on_content_only() {
        let conversations = parse(GOOD.as_bytes()).unwrap();
        let c = &conversations[0];
        let mut moved = c.clone();
        moved.id = Some("other".into());
        assert_eq!(is_held_out(c, 0.5), is_held_out(&moved, 0.5));
        assert!(!is_held_out(c, 0.0));
        assert!(is_held_out(c, 1.0));
    }
}
