//! The optional LLM judge stage: the configured chat model asked, with a short DSPy-style
//! signature, whether a draft violates a category.
//!
//! Off by default (`[filter] judge = "llm"` turns it on): a small local model is no judge, but a
//! deployment with a strong model can add it after the lexical and learned stages. It runs on
//! drafts that the other stages passed, in the refine loop, so a draft it names is retried with a
//! hint like any other. Pure: the prompt builder and the answer parser; the call is the refine
//! loop's.

use super::{Category, Stage, Verdict};
use crate::llm::ChatMessage;

/// The value of `[filter] judge` that turns the stage on.
pub const LLM: &str = "llm";

/// The judge's prompt for a draft answering `fan_message`.
pub fn prompt(
    categories: &[Category],
    platform: &str,
    fan_message: Option<&str>,
    draft: &str,
) -> Vec<ChatMessage> {
    let names: Vec<&str> = categories.iter().map(|c| c.name.as_str()).collect();
    let system = format!(
        "Your input fields are:\n1. `fan_message` (str): the fan's last message\n2. `reply` (str): the creator's draft reply to it\n\
         3. `rules` (str): the forbidden topics\nYour output fields are:\n1. `violation` (str): the forbidden topic the reply \
         suggests, agrees to or helps with, or `none`; one of: none, {}\nAll interactions will be structured in the following \
         way, with the appropriate values filled in.\n\n[[ ## fan_message ## ]]\n{{fan_message}}\n\n[[ ## reply ## ]]\n{{reply}}\n\n\
         [[ ## rules ## ]]\n{{rules}}\n\n[[ ## violation ## ]]\n{{violation}}\n\n[[ ## completed ## ]]\nIn adhering to this structure, \
         your objective is: \n        Judge whether a creator's reply on {platform} breaks a rule, reading it with the fan's message: \
         agreeing to the fan's proposal counts as suggesting it.",
        names.join(", ")
    );
    let rules: Vec<String> = categories
        .iter()
        .map(|c| format!("- {}: {}", c.name, c.description))
        .collect();
    let user = format!(
        "[[ ## fan_message ## ]]\n{}\n\n[[ ## reply ## ]]\n{draft}\n\n[[ ## rules ## ]]\n{}\n\nRespond with the corresponding \
         output fields, starting with the field `[[ ## violation ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.",
        fan_message.unwrap_or("(none)"),
        rules.join("\n")
    );
    vec![ChatMessage::new("system", system), ChatMessage::new("user", user)]
}

/// The verdict in the judge's answer: a category it names blocks, `none` passes, and anything
/// else is `None` (the other stages' verdict stands).
pub fn parse(answer: &str, categories: &[Category]) -> Option<Verdict> {
    let after = match answer.find("[[ ## violation ## ]]") {
        Some(at) => &answer[at + "[[ ## violation ## ]]".len()..],
        None => answer,
    };
    let word: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_lowercase();
    if word == "none" {
        return Some(Verdict::clean());
    }
    categories
        .iter()
        .find(|c| c.name == word)
        .map(|c| Verdict::blocked(Stage::Judge, &c.name, format!("the LLM judge named `{}`", c.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterSettings;

    #[test]
    fn the_prompt_names_the_rules_and_answers_are_parsed_strictly() {
        let categories = FilterSettings::default().categories;
        let p = prompt(
            &categories,
            "OnlyFans",
            Some("meet me at 8?"),
            "yes!! see you there",
        );
        assert!(p[0].content.contains("in_person_meeting") && p[0].content.contains("on OnlyFans"));
        assert!(p[1].content.contains("meet me at 8?") && p[1].content.contains("see you there"));
        let table = [
            (
                "[[ ## violation ## ]]\nin_person_meeting\n\n[[ ## completed ## ]]",
                Some(Some("in_person_meeting")),
            ),
            ("[[ ## violation ## ]]\nnone", Some(None)),
            ("social_platform", Some(Some("social_platform"))),
            ("I think it might be fine", None),
            ("[[ ## violation ## ]]\nspam", None),
        ];
        for (answer, want) in table {
            let got = parse(answer, &categories);
            assert_eq!(got.as_ref().map(|v| v.category.as_deref()), want, "{answer}");
        }
    }
}
