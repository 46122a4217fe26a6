//! The DSPy-style signature: instructions, input fields and the output field.
//!
//! Owns the template's shape and its defaults, which follow the original `Responder` signature.
//! `persona.toml` may override any part; the compiled artifact carries the result, and the prompt
//! renderer reads it. Nothing here renders or does I/O.

use serde::{Deserialize, Serialize};

/// One field of the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Field name as it appears in the `[[ ## name ## ]]` markers.
    pub name: String,
    /// What the field holds, shown to the model.
    pub description: String,
}

/// The template `ask` renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The task, in a few sentences. `{creator}` is replaced by the creator's name.
    pub instructions: String,
    /// Input fields, in order.
    pub inputs: Vec<Field>,
    /// The output field.
    pub output: Field,
}

/// Name of the chat-history input field.
pub const CHAT_HISTORY: &str = "chat_history";
/// Name of the context-facts input field.
pub const CONTEXT: &str = "context";
/// Name of the fan-profile input field.
pub const FAN_PROFILE: &str = "fan_profile";
/// Name of the output field.
pub const OUTPUT: &str = "output";

impl Default for Signature {
    fn default() -> Self {
        let field = |name: &str, description: &str| Field {
            name: name.into(),
            description: description.into(),
        };
        Signature {
            instructions: "You are {creator}, a creator chatting with a fan on {platform}, deciding what \
                           your message should be. Write it the way {creator} writes in the examples: same \
                           length, casing, punctuation, emoji and pet names."
                .into(),
            inputs: vec![
                field(
                    CHAT_HISTORY,
                    "the chat history, oldest first; YOU are the creator, THE FAN is the fan",
                ),
                field(
                    CONTEXT,
                    "facts about this moment: the creator's local time, how long the chat has gone on, notes",
                ),
                field(FAN_PROFILE, "what is known about the fan"),
            ],
            output: field(OUTPUT, "the exact text of the message you will send to the fan"),
        }
    }
}

impl Signature {
    /// The instructions with the creator's name filled in.
    pub fn instructions_for(&self, creator: &str) -> String {
        self.instructions.replace("{creator}", creator)
    }

    /// The signature with `{platform}` in the instructions replaced by the creator's platform.
    pub fn for_platform(&self, platform: &str) -> Signature {
        Signature {
            instructions: self.instructions.replace("{platform}", platform),
            ..self.clone()
        }
    }

    /// Checks the template for mistakes a user can make in `persona.toml`.
    pub fn validate(&self) -> Result<(), String> {
        if self.instructions.trim().is_empty() {
            return Err(
                "`signature.instructions` is empty; write one or two sentences describing the task".into(),
            );
        }
        let mut names: Vec<&str> = self.inputs.iter().map(|f| f.name.as_str()).collect();
        names.push(&self.output.name);
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "signature field name `{name}` must be non-empty letters, digits or `_`"
                ));
            }
            if names[..i].contains(name) {
                return Err(format!(
                    "signature field `{name}` is declared twice; field names must be unique"
                ));
            }
        }
        if !self.inputs.iter().any(|f| f.name == CHAT_HISTORY) {
            return Err(format!(
                "the signature needs an input field named `{CHAT_HISTORY}`"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named_fields_are_checked() {
        assert_eq!(Signature::default().validate(), Ok(()));
        let mut twice = Signature::default();
        twice.inputs.push(twice.inputs[0].clone());
        assert!(twice.validate().unwrap_err().contains("twice"));
        let mut spaced = Signature::default();
        spaced.output.name = "my output".into();
        assert!(spaced.validate().unwrap_err().contains("my output"));
    }
}
