//! The generate-check-retry loop around the chat model, in the manner of DSPy's Refine.
//!
//! Owns what happens between the rendered prompt and the reply a fan sees: ask the model, parse
//! the reply (asking again when nothing usable comes back), check it with the topic filter, and
//! on a violation ask again with a hint naming what was wrong, up to the configured attempts;
//! then fall back to a clean deflection. A blocked draft never leaves this module except inside
//! its verdict's report. The checker and the prompt builder are passed in, so the loop is tested
//! with a stand-in model.
//!
//! The loop's result is a [`CleanReply`], which only this module can construct: every path that
//! puts text in front of a fan, into the history store or into an API `reply` field takes one, so
//! a reply that skipped the filter does not compile.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::filter::Verdict;
use crate::llm::{ChatMessage, ChatModel, Usage};

/// Model calls per attempt when the answer holds no usable reply.
pub const EMPTY_REPLY_RETRIES: u32 = 3;

/// What the filter decided along the way, for `--json` and the service.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FilterReport {
    /// The verdict on the fan's message.
    pub input: Verdict,
    /// The verdict on each draft, in order.
    pub output: Vec<Verdict>,
    /// Drafts generated.
    pub attempts: u32,
    /// Whether the reply is a fallback deflection rather than a generated draft.
    pub fallback: bool,
}

/// A reply that passed the output filter. Its field is private and only the refine loop makes
/// one, so holding a `CleanReply` proves the text was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CleanReply(String);

impl CleanReply {
    /// A reply for unit tests of the stores that keep one; not compiled into the program.
    #[cfg(test)]
    pub(crate) fn for_tests(text: &str) -> Self {
        CleanReply(text.into())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CleanReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's own text (an edited draft in review mode), checked like a draft: the clean reply,
/// or the verdict that blocked it. Only the answer module calls it, with the persona's checks.
pub(super) fn checked(
    text: &str,
    check: &mut (dyn FnMut(&str) -> Result<Verdict> + Send),
) -> Result<std::result::Result<CleanReply, Verdict>> {
    let verdict = check(text)?;
    Ok(match verdict.blocked {
        true => Err(verdict),
        false => Ok(CleanReply(text.to_string())),
    })
}

/// The reply and how it was reached.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The reply the fan sees; it passed the filter.
    pub reply: CleanReply,
    /// Model calls made.
    pub calls: u32,
    /// Tokens those calls used.
    pub usage: Usage,
    /// The filter's verdicts.
    pub filter: FilterReport,
}

/// The loop's inputs.
pub struct Refine<'a> {
    /// Generation attempts allowed before the fallback.
    pub attempts: u32,
    /// Builds the prompt, given the hints collected so far.
    pub prompt: &'a (dyn Fn(&[String]) -> Vec<ChatMessage> + Sync),
    /// Pulls the reply out of a model answer.
    pub parse: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// Checks a reply.
    pub check: &'a mut (dyn FnMut(&str) -> Result<Verdict> + Send),
    /// Candidate fallbacks, best first; the first clean one is used.
    pub fallbacks: Vec<String>,
    /// The verdict on the fan's message.
    pub input: Verdict,
    /// The LLM judge, when on: the prompt for a draft, and the parser of its answer. It runs on
    /// drafts the check passed.
    pub judge: Option<Judge<'a>>,
}

/// The LLM judge stage's two halves.
pub struct Judge<'a> {
    /// The judge's prompt for a draft.
    pub prompt: &'a (dyn Fn(&str) -> Vec<ChatMessage> + Sync),
    /// The verdict in its answer; `None` leaves the check's verdict.
    pub parse: &'a (dyn Fn(&str) -> Option<Verdict> + Sync),
}

/// A fixed reply (a safety category's) checked like a draft, with no model call. A blocked one
/// is an error, never a reply: compile refuses such replies, so this only guards the type.
pub fn fixed(
    text: &str,
    check: &mut (dyn FnMut(&str) -> Result<Verdict> + Send),
    input: Verdict,
) -> Result<Outcome> {
    let verdict = check(text)?;
    if verdict.blocked {
        bail!(
            "the configured safety reply is blocked by the topic filter ({}); rewrite it in `[safety]` and recompile",
            verdict.reason
        );
    }
    Ok(Outcome {
        reply: CleanReply(text.to_string()),
        calls: 0,
        usage: Usage::default(),
        filter: FilterReport {
            input,
            output: vec![verdict],
            attempts: 0,
            fallback: false,
        },
    })
}

/// Runs the loop.
pub async fn run<M: ChatModel>(model: &M, r: Refine<'_>) -> Result<Outcome> {
    let mut hints: Vec<String> = Vec::new();
    let mut verdicts = Vec::new();
    let mut calls = 0;
    let mut usage = Usage::default();
    for _ in 0..r.attempts.max(1) {
        let messages = (r.prompt)(&hints);
        let mut draft = None;
        let mut last = String::new();
        for _ in 0..EMPTY_REPLY_RETRIES {
            calls += 1;
            let completion = model.complete(&messages, 1).await?;
            usage += completion.usage;
            last = completion.texts.into_iter().next().unwrap_or_default();
            if let Some(reply) = (r.parse)(&last) {
                draft = Some(reply);
                break;
            }
        }
        let Some(draft) = draft else {
            bail!(
                "the LLM gave no usable reply in {calls} calls (last answer: `{}`); try another model or raise `[llm] max_tokens`",
                last.chars().take(120).collect::<String>()
            );
        };
        let mut verdict = (r.check)(&draft)?;
        if let (false, Some(judge)) = (verdict.blocked, &r.judge) {
            calls += 1;
            let answer = model.complete(&(judge.prompt)(&draft), 1).await?;
            usage += answer.usage;
            if let Some(judged) = answer.texts.first().and_then(|a| (judge.parse)(a)) {
                verdict = judged;
            }
        }
        let blocked = verdict.blocked;
        if blocked {
            hints.push(format!(
                "a draft reply was rejected because it {} ({}); write a different message that keeps the chat on this platform and never suggests meeting",
                verdict.reason,
                verdict.category.as_deref().unwrap_or("blocked")
            ));
        }
        verdicts.push(verdict);
        if !blocked {
            let attempts = verdicts.len() as u32;
            return Ok(Outcome {
                reply: CleanReply(draft),
                calls,
                usage,
                filter: FilterReport {
                    input: r.input,
                    output: verdicts,
                    attempts,
                    fallback: false,
                },
            });
        }
    }
    let attempts = verdicts.len() as u32;
    for candidate in r.fallbacks {
        if !(r.check)(&candidate)?.blocked {
            return Ok(Outcome {
                reply: CleanReply(candidate),
                calls,
                usage,
                filter: FilterReport {
                    input: r.input,
                    output: verdicts,
                    attempts,
                    fallback: true,
                },
            });
        }
    }
    bail!("every draft and every fallback reply was blocked by the filter; add a clean entry to `[filter] fallbacks`")
}

#[cfg(test)]
mod tests {
    //! A stand-in chat model that answers from a script, to drive the loop into each branch.

    use super::*;
    use crate::filter::{Filter, FilterSettings};
    use crate::llm::{Completion, LlmError};
    use std::sync::Mutex;

    struct Scripted(Mutex<Vec<&'static str>>);

    impl ChatModel for Scripted {
        fn with_sampling(&self, _: f32, _: u64) -> Self {
            let script = self.0.lock().unwrap().clone();
            Scripted(Mutex::new(script))
        }

        async fn complete(&self, _: &[ChatMessage], _: u32) -> Result<Completion, LlmError> {
            let mut script = self.0.lock().unwrap();
            let text = if script.is_empty() { "" } else { script.remove(0) };
            Ok(Completion {
                texts: vec![text.to_string()],
                attempts: 1,
                usage: Default::default(),
            })
        }
    }

    async fn drive(script: Vec<&'static str>, fallbacks: Vec<&str>) -> (Result<Outcome>, Vec<Vec<String>>) {
        let filter = Filter::new(FilterSettings::default()).unwrap();
        let seen = Mutex::new(Vec::new());
        let prompt = |hints: &[String]| {
            seen.lock().unwrap().push(hints.to_vec());
            vec![ChatMessage::new("user", "hi")]
        };
        let parse = |t: &str| (!t.trim().is_empty()).then(|| t.trim().to_string());
        let mut check = |t: &str| Ok(filter.check_lexical(t));
        let model = Scripted(Mutex::new(script));
        let result = run(
            &model,
            Refine {
                attempts: 3,
                prompt: &prompt,
                parse: &parse,
                check: &mut check,
                fallbacks: fallbacks.into_iter().map(String::from).collect(),
                input: filter.check_lexical("what's your snap?"),
                judge: None,
            },
        )
        .await;
        (result, seen.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_violation_is_retried_with_a_hint_naming_it() {
        let (outcome, prompts) = drive(
            vec!["add me on insta babe", "mm i only live right here, petal"],
            vec![],
        )
        .await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.reply.as_str(), "mm i only live right here, petal");
        assert_eq!(outcome.filter.attempts, 2);
        assert!(outcome.filter.output[0].blocked && !outcome.filter.output[1].blocked);
        assert!(outcome.filter.input.blocked);
        assert!(!outcome.filter.fallback);
        assert!(prompts[0].is_empty());
        assert!(
            prompts[1][0].contains("add me on") && prompts[1][0].contains("social_platform"),
            "{:?}",
            prompts[1]
        );
    }

    #[tokio::test]
    async fn persistent_violations_end_in_a_clean_fallback() {
        let script = vec!["add me on insta", "my snap is wren", "let's grab coffee together"];
        let fallbacks = vec!["text me at 555 201 8890", "hehe you've got me right here 🌙"];
        let (outcome, _) = drive(script, fallbacks).await;
        let outcome = outcome.unwrap();
        assert_eq!(
            outcome.reply.as_str(),
            "hehe you've got me right here 🌙",
            "the blocked fallback is skipped"
        );
        assert!(outcome.filter.fallback);
        assert_eq!(outcome.filter.output.len(), 3);
        assert!(outcome.filter.output.iter().all(|v| v.blocked));
    }

    #[tokio::test]
    async fn empty_answers_are_asked_again_then_reported() {
        let (outcome, _) = drive(vec!["", "  ", "hey you"], vec![]).await;
        let outcome = outcome.unwrap();
        assert_eq!((outcome.reply.as_str(), outcome.calls), ("hey you", 3));
        let (outcome, _) = drive(vec!["", "", ""], vec![]).await;
        assert!(outcome.unwrap_err().to_string().contains("no usable reply"));
    }

    #[tokio::test]
    async fn no_clean_fallback_is_an_error_not_a_blocked_reply() {
        let (outcome, _) = drive(vec!["add me on insta"; 3], vec!["add me on snap"]).await;
        assert!(outcome.unwrap_err().to_string().contains("fallbacks"));
    }
}
