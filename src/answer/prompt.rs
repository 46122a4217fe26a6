//! Rendering the signature as chat messages the way DSPy's ChatAdapter does, and parsing the
//! reply back out.
//!
//! Owns the `[[ ## field ## ]]` layout: a system message describing the fields and the
//! instructions, one user/assistant pair per demo, then the current inputs. The reply parser
//! tolerates models that ignore the markers. Pure functions; no I/O.

use std::collections::BTreeMap;

use crate::answer::signature::Signature;
use crate::llm::ChatMessage;

/// What DSPy writes for an input a demo does not have.
pub const NOT_SUPPLIED: &str = "Not supplied for this particular example.";

/// Values of the input fields, by field name.
pub type Inputs = BTreeMap<String, String>;

/// A few-shot demo: its inputs and the creator's real reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    /// The demo's input values.
    pub inputs: Inputs,
    /// The gold reply.
    pub reply: String,
}

fn marker(name: &str) -> String {
    format!("[[ ## {name} ## ]]")
}

/// The system message: fields, structure, objective.
pub fn system_message(signature: &Signature, creator: &str) -> String {
    let mut out = String::from("Your input fields are:\n");
    for (i, f) in signature.inputs.iter().enumerate() {
        out.push_str(&format!("{}. `{}` (str): {}\n", i + 1, f.name, f.description));
    }
    out.push_str("Your output fields are:\n");
    out.push_str(&format!(
        "1. `{}` (str): {}\n",
        signature.output.name, signature.output.description
    ));
    out.push_str("All interactions will be structured in the following way, with the appropriate values filled in.\n\n");
    for f in &signature.inputs {
        out.push_str(&format!("{}\n{{{}}}\n\n", marker(&f.name), f.name));
    }
    out.push_str(&format!(
        "{}\n{{{}}}\n\n",
        marker(&signature.output.name),
        signature.output.name
    ));
    out.push_str(&format!("{}\n", marker("completed")));
    out.push_str("In adhering to this structure, your objective is: \n        ");
    out.push_str(&signature.instructions_for(creator));
    out
}

fn user_message(signature: &Signature, inputs: &Inputs) -> String {
    let mut out = String::new();
    for f in &signature.inputs {
        let value = inputs
            .get(&f.name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or(NOT_SUPPLIED);
        out.push_str(&format!("{}\n{}\n\n", marker(&f.name), value));
    }
    out.push_str(&format!(
        "Respond with the corresponding output fields, starting with the field `{}`, and then ending with the marker for `{}`.",
        marker(&signature.output.name),
        marker("completed")
    ));
    out
}

fn assistant_message(signature: &Signature, reply: &str) -> String {
    format!(
        "{}\n{}\n\n{}",
        marker(&signature.output.name),
        reply,
        marker("completed")
    )
}

/// The whole conversation sent to the model. With `prefill`, a last assistant message opens the
/// output field, for servers that continue it (small models then stay in the format).
pub fn render(
    signature: &Signature,
    creator: &str,
    demos: &[Demo],
    current: &Inputs,
    prefill: bool,
) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new("system", system_message(signature, creator))];
    for demo in demos {
        messages.push(ChatMessage::new("user", user_message(signature, &demo.inputs)));
        messages.push(ChatMessage::new(
            "assistant",
            assistant_message(signature, &demo.reply),
        ));
    }
    messages.push(ChatMessage::new("user", user_message(signature, current)));
    if prefill {
        messages.push(ChatMessage::new(
            "assistant",
            format!("{}\n", marker(&signature.output.name)),
        ));
    }
    messages
}

/// The prompt as readable text, for `--dry-run` and `/prompt`.
pub fn to_text(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| format!("----- {} -----\n{}", m.role, m.content))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pulls the reply out of a model's answer; `None` when nothing usable is left.
///
/// Accepts the proper `[[ ## output ## ]]` layout, answers without markers, and answers with
/// chatter such as `Your Message:` or a speaker tag in front.
pub fn parse_reply(answer: &str, signature: &Signature, creator: &str) -> Option<String> {
    let output_marker = marker(&signature.output.name);
    let mut text = match answer.find(&output_marker) {
        Some(at) => &answer[at + output_marker.len()..],
        None => answer,
    };
    if let Some(at) = text.find("[[ ##") {
        text = &text[..at];
    }
    // Stop where the model starts writing the next turn itself.
    for speaker in ["\nTHE FAN:", "\nYOU:", "\nUser:", "\nFan:"] {
        if let Some(at) = text.find(speaker) {
            text = &text[..at];
        }
    }
    let mut reply = text.trim();
    let prefixes = [
        "Your Message:",
        "Your message:",
        "YOU:",
        "Output:",
        "output:",
        "Reply:",
        "Message:",
    ];
    let named = format!("{creator}:");
    loop {
        let before = reply;
        for p in prefixes.iter().copied().chain(std::iter::once(named.as_str())) {
            if let Some(rest) = reply.strip_prefix(p) {
                reply = rest.trim_start();
            }
        }
        if before == reply {
            break;
        }
    }
    let reply = reply.trim().trim_matches('"').trim();
    let reply = reply.split("\n\n").next().unwrap_or("").trim();
    (!reply.is_empty() && reply.chars().any(char::is_alphanumeric)).then(|| reply.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Inputs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_the_golden_prompt() {
        let signature = Signature::default().for_platform("Fansly");
        let demos = vec![Demo {
            inputs: inputs(&[("chat_history", "THE FAN: cant sleep again")]),
            reply: "mm come sit with me a while, petal 🌙".into(),
        }];
        let current = inputs(&[
            ("chat_history", "THE FAN: up late?"),
            (
                "context",
                "your local time: Saturday 2026-11-28 23:40 (night, America/New_York)\n1 message so far",
            ),
            ("fan_profile", "name: mike"),
        ]);
        let messages = render(&signature, "Wren", &demos, &current, false);
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let expected = "\
----- system -----
Your input fields are:
1. `chat_history` (str): the chat history, oldest first; YOU are the creator, THE FAN is the fan
2. `context` (str): facts about this moment: the creator's local time, how long the chat has gone on, notes
3. `fan_profile` (str): what is known about the fan
Your output fields are:
1. `output` (str): the exact text of the message you will send to the fan
All interactions will be structured in the following way, with the appropriate values filled in.

[[ ## chat_history ## ]]
{chat_history}

[[ ## context ## ]]
{context}

[[ ## fan_profile ## ]]
{fan_profile}

[[ ## output ## ]]
{output}

[[ ## completed ## ]]
In adhering to this structure, your objective is: 
        You are Wren, a creator chatting with a fan on Fansly, deciding what your message should be. Write it the way Wren writes in the examples: same length, casing, punctuation, emoji and pet names.
----- user -----
[[ ## chat_history ## ]]
THE FAN: cant sleep again

[[ ## context ## ]]
Not supplied for this particular example.

[[ ## fan_profile ## ]]
Not supplied for this particular example.

Respond with the corresponding output fields, starting with the field `[[ ## output ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.
----- assistant -----
[[ ## output ## ]]
mm come sit with me a while, petal 🌙

[[ ## completed ## ]]
----- user -----
[[ ## chat_history ## ]]
THE FAN: up late?

[[ ## context ## ]]
your local time: Saturday 2026-11-28 23:40 (night, America/New_York)
1 message so far

[[ ## fan_profile ## ]]
name: mike

Respond with the corresponding output fields, starting with the field `[[ ## output ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.";
        assert_eq!(to_text(&messages), expected);
    }

    #[test]
    fn parses_replies_with_and_without_markers() {
        let s = Signature::default();
        // (case, model answer, expected reply)
        let cases: [(&str, &str, Option<&str>); 9] = [
            (
                "well formed",
                "[[ ## output ## ]]\nhey petal 🌙\n\n[[ ## completed ## ]]",
                Some("hey petal 🌙"),
            ),
            (
                "marker cut by a stop sequence",
                "[[ ## output ## ]]\nhey petal",
                Some("hey petal"),
            ),
            ("no markers", "hey petal, tea time?", Some("hey petal, tea time?")),
            ("prefix chatter", "Your Message: hey petal", Some("hey petal")),
            ("speaker tag and name", "YOU: Wren: hi honey", Some("hi honey")),
            ("quoted", "\"mm hi there\"", Some("mm hi there")),
            (
                "writes the fan's next line too",
                "hi honey\nTHE FAN: hey",
                Some("hi honey"),
            ),
            (
                "only markers",
                "[[ ## output ## ]]\n\n[[ ## completed ## ]]",
                None,
            ),
            ("empty", "   ", None),
        ];
        for (name, answer, expected) in cases {
            assert_eq!(parse_reply(answer, &s, "Wren").as_deref(), expected, "{name}");
        }
    }
}
