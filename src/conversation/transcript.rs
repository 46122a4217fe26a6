//! Rendering a conversation as speaker-tagged text.
//!
//! One function decides what text stands for "the conversation so far" when it is embedded, at
//! compile time for every example and at answer time for the incoming chat, so the two can never
//! drift apart. The prompt's chat-history field uses the same speaker tags. No I/O here.

use crate::conversation::Message;

/// Tag for the creator's lines, as in the original prototype.
pub const CREATOR_TAG: &str = "YOU";
/// Tag for the fan's lines.
pub const FAN_TAG: &str = "THE FAN";

/// Character budget of the embedded text: MiniLM reads at most 256 tokens, and the tokenizer
/// truncates from the end, so the newest messages are kept and the oldest dropped first.
pub const EMBED_CHAR_BUDGET: usize = 900;

/// One message as a transcript line: `THE FAN: hi` or `YOU: hey`.
pub fn line(message: &Message) -> String {
    let tag = if message.from_creator {
        CREATOR_TAG
    } else {
        FAN_TAG
    };
    // Newlines inside a message would read as new speakers.
    let content = message.content.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{tag}: {content}")
}

/// The text embedded for "the conversation so far": the last `window` messages, newest kept first
/// within [`EMBED_CHAR_BUDGET`].
pub fn embedding_text(history: &[Message], window: usize) -> String {
    let start = history.len().saturating_sub(window.max(1));
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for message in history[start..].iter().rev() {
        let l = line(message);
        let n = l.chars().count() + 1;
        if !lines.is_empty() && used + n > EMBED_CHAR_BUDGET {
            break;
        }
        used += n;
        lines.push(l);
    }
    lines.reverse();
    lines.join("\n")
}

/// The whole history, one line per message, for the prompt.
pub fn history_text(history: &[Message]) -> String {
    history.iter().map(line).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(from_creator: bool, content: &str) -> Message {
        Message {
            from_creator,
            content: content.into(),
            sent_at: None,
        }
    }

    #[test]
    fn tags_speakers_and_flattens_newlines() {
        assert_eq!(line(&m(false, "hi\nthere")), "THE FAN: hi there");
        assert_eq!(line(&m(true, "hey")), "YOU: hey");
    }

    #[test]
    fn keeps_the_newest_messages_within_window_and_budget() {
        let history = vec![m(false, "one"), m(true, "two"), m(false, "three")];
        assert_eq!(embedding_text(&history, 2), "YOU: two\nTHE FAN: three");
        let long = "x".repeat(EMBED_CHAR_BUDGET);
        let history = vec![m(false, "old"), m(false, &long)];
        assert_eq!(embedding_text(&history, 6), format!("THE FAN: {long}"));
    }
}
