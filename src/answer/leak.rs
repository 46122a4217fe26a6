//! The prompt-leak guard: a draft that repeats the prompt is blocked like a topic violation.
//!
//! What the prompt holds beyond the voice must not reach the fan: the instructions and field
//! descriptions, the `[[ ## ... ## ]]` markers and field names, the context notes, the fan
//! profile, and the other fans' messages in the demos. [`LeakGuard::new`] collects that text from
//! the rendered prompt, leaving out what may be repeated: the creator's own words (demo replies
//! and `YOU:` lines, which steer the voice) and the current fan's own messages. A draft is a leak
//! when it carries a marker, a field name, a template placeholder or a privacy mask (`[name]`),
//! or shares a run of [`SPAN_WORDS`] words with the
//! protected text. Pure: rendered messages in, a verdict out.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::filter::normalize::fold;
use crate::filter::{Stage, Verdict};
use crate::llm::ChatMessage;

/// The verdict category of a leak.
pub const CATEGORY: &str = "prompt_leak";
/// Words in a row shared with the protected prompt text that make a leak. Five is longer than
/// the everyday phrases a reply and a prompt share ("what are you up to"), and short enough to
/// catch a small model paraphrasing a note ("the fan's last message asked ..."), which six let
/// through on the injection set.
pub const SPAN_WORDS: usize = 5;
/// Tokens of the prompt's structure that never belong in a reply.
const STRUCTURE: &[&str] = &[
    "[[ ##",
    "## ]]",
    "chat_history",
    "fan_profile",
    "input fields",
    "output fields",
    "not supplied for this particular example",
];

/// A template placeholder such as `{output}`, or a privacy mask such as `[name]` copied from a
/// masked demo: never part of a message to a fan.
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{[a-z_]+\}|\[(name|city|email|phone|handle)\]").expect("the placeholder pattern compiles")
});

/// The protected text of one rendered prompt, as word spans.
#[derive(Debug, Clone, Default)]
pub struct LeakGuard {
    spans: HashSet<Vec<String>>,
    span: usize,
}

impl LeakGuard {
    /// Collects the protected spans of a rendered prompt. The last user message is the current
    /// turn: its `THE FAN:` lines are the fan's own words and stay repeatable.
    pub fn new(messages: &[ChatMessage]) -> Self {
        Self::with_span(messages, SPAN_WORDS)
    }

    /// The same with another run length (the injection judge uses a shorter one).
    pub fn with_span(messages: &[ChatMessage], span: usize) -> Self {
        let span = span.max(1);
        let last_user = messages.iter().rposition(|m| m.role == "user");
        let mut own: HashSet<Vec<String>> = HashSet::new();
        let mut spans: HashSet<Vec<String>> = HashSet::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role == "assistant" {
                continue;
            }
            for line in m.content.lines() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("YOU:") {
                    continue;
                }
                let target = if Some(i) == last_user && trimmed.starts_with("THE FAN:") {
                    &mut own
                } else {
                    &mut spans
                };
                target.extend(windows(&words(line), span));
            }
        }
        spans.retain(|s| !own.contains(s));
        LeakGuard { spans, span }
    }

    /// The leak verdict on a draft, `None` when it repeats nothing protected. The reason names
    /// what was repeated, never the text.
    pub fn check(&self, draft: &str) -> Option<Verdict> {
        let folded = fold(draft);
        if STRUCTURE.iter().any(|s| folded.contains(s)) || PLACEHOLDER.is_match(&folded) {
            return Some(blocked("repeats the prompt's markers or field names"));
        }
        let draft_words = words(draft);
        let repeats = windows(&draft_words, self.span).any(|w| self.spans.contains(&w));
        repeats.then(|| blocked(&format!("repeats {} or more words of the prompt", self.span)))
    }
}

fn blocked(reason: &str) -> Verdict {
    Verdict::blocked(Stage::Leak, CATEGORY, reason.into())
}

/// Lowercase alphanumeric words.
fn words(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn windows(words: &[String], span: usize) -> impl Iterator<Item = Vec<String>> + '_ {
    words.windows(span).map(<[String]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new(
                "system",
                "Your input fields are:\n1. `chat_history` (str): the chat history\nYou are Wren, a creator chatting with a fan on the platform, deciding what your message should be.",
            ),
            ChatMessage::new(
                "user",
                "[[ ## chat_history ## ]]\nTHE FAN: my sister lives in portland and works at the big hospital downtown\nYOU: oh portland is so pretty in the fall, i would love a rainy walk there\n\n[[ ## context ## ]]\nthe fan's last message asks for a forbidden topic; never agree to it",
            ),
            ChatMessage::new("assistant", "[[ ## output ## ]]\nmm rainy days and tea are my whole personality honestly\n"),
            ChatMessage::new(
                "user",
                "[[ ## chat_history ## ]]\nTHE FAN: i just got home from a really long shift at work today\n\n[[ ## fan_profile ## ]]\nname: Sam; notes: works nights at the depot",
            ),
        ]
    }

    #[test]
    fn drafts_that_repeat_protected_prompt_text_are_blocked_and_the_voice_is_not() {
        let guard = LeakGuard::new(&prompt());
        let table = [
            (
                "the echo of the whole prompt",
                "[[ ## chat_history ## ]] THE FAN: hi",
                true,
            ),
            ("a field name", "my chat_history says hi", true),
            ("a template placeholder", "{output}", true),
            (
                "a privacy mask copied from a demo",
                "this is [name] only place i chat",
                true,
            ),
            (
                "the instructions",
                "i'm a creator chatting with a fan on the platform lol",
                true,
            ),
            (
                "another fan's message",
                "your sister lives in portland and works at the big hospital?",
                true,
            ),
            (
                "a context note",
                "never agree to it... the fan's last message asks for a forbidden topic",
                true,
            ),
            ("the profile, short", "at the depot right", false),
            (
                "the profile, longer",
                "name sam notes works nights at the depot",
                true,
            ),
            (
                "a demo reply, the creator's own words",
                "mm rainy days and tea are my whole personality honestly",
                false,
            ),
            (
                "a YOU line of a demo",
                "oh portland is so pretty in the fall, i would love a rainy walk there",
                false,
            ),
            (
                "the current fan's own words",
                "a really long shift at work today? come here and rest",
                false,
            ),
            (
                "an everyday reply",
                "welcome home love, how was the shift?",
                false,
            ),
        ];
        for (name, draft, leak) in table {
            let got = guard.check(draft);
            assert_eq!(got.is_some(), leak, "{name}: {got:?}");
            if let Some(v) = got {
                assert_eq!(v.category.as_deref(), Some(CATEGORY));
                assert!(
                    !v.reason.contains("portland") && !v.reason.contains("depot"),
                    "{}",
                    v.reason
                );
            }
        }
    }
}
