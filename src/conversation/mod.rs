//! The conversation data: messages, fan profiles and conversations, the types every layer shares.
//!
//! `dataset` parses and splits the training data, `transcript` renders a conversation as
//! speaker-tagged text. This module only defines the shapes; it does no I/O.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub mod dataset;
pub mod transcript;

/// The longest message accepted, in characters; longer ones are an input error.
pub const MAX_MESSAGE_CHARS: usize = 4_000;

/// One chat message, from the creator or from the fan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `true` when the creator wrote it.
    pub from_creator: bool,
    /// The text of the message.
    pub content: String,
    /// When it was sent, if the data says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
}

/// What is known about a fan: free keys such as `name`, `location`, `interests`.
pub type FanProfile = serde_json::Map<String, serde_json::Value>;

/// One conversation of the training data, with the creator's reply appended as the last message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The `id` from the data, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The fan's profile, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan: Option<FanProfile>,
    /// All messages, `output` included as the final creator message.
    pub messages: Vec<Message>,
}

/// A creator turn used as a few-shot example: the messages before it are its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Index of the conversation in the dataset.
    pub conversation: u32,
    /// Index of the creator's message in that conversation.
    pub turn: u32,
}
