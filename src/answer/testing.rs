//! Test doubles for the answer pipeline and the server: a persona compiled in memory with the
//! hashing embedder, and a scripted chat model that records every call. Compiled only for tests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::Persona;
use crate::commands::compile::build_in_memory;
use crate::config::{Config, RuntimeSettings};
use crate::conversation::{Conversation, FanProfile, Message};
use crate::embed::fake::HashingEmbedder;
use crate::llm::{ChatMessage, ChatModel, Completion, LlmError, Usage};

/// The training exchanges of the test persona: (fan, creator reply).
pub const EXCHANGES: &[(&str, &str)] = &[
    (
        "do you have any pets at home?",
        "just one old cat called pumpkin, she runs the house",
    ),
    (
        "i made pancakes this morning",
        "pancakes on a slow morning, that's the dream",
    ),
    (
        "what music do you listen to",
        "mostly old vinyl, crackles and all",
    ),
    ("what's your snap? add me", "mm i only live right here, petal"),
    ("how was your weekend", "quiet, i read by the window most of it"),
    (
        "do you like the rain",
        "rain is my favourite sound to fall asleep to",
    ),
];

/// A conversation with one exchange, from a fan with a profile.
fn conversation(i: usize, fan: &str, reply: &str) -> Conversation {
    let mut profile = FanProfile::new();
    profile.insert("name".into(), format!("Fan{i}").into());
    profile.insert("location".into(), format!("Town{i}, OH").into());
    Conversation {
        id: Some(format!("c{i}")),
        fan: Some(profile),
        messages: vec![
            Message {
                from_creator: false,
                content: format!("Fan{i} from Town{i} here: {fan}"),
                sent_at: None,
            },
            Message {
                from_creator: true,
                content: reply.into(),
                sent_at: None,
            },
        ],
    }
}

/// The test persona: [`EXCHANGES`] compiled in memory, nothing held out, k = 2.
pub fn persona() -> Persona {
    let mut config = Config::defaults();
    config.compile.holdout = 0.0;
    config.retrieval.k = 2;
    config.creator.name = "Wren".into();
    // The learned stage trains on the built-in corpus; its own tests cover it.
    config.filter.learned = false;
    // The same for the safety and mood classifiers: the lexical safety check stays.
    config.safety.learned = false;
    config.context.mood = false;
    let conversations = EXCHANGES
        .iter()
        .enumerate()
        .map(|(i, (fan, reply))| conversation(i, fan, reply))
        .collect();
    let artifact = build_in_memory(&config, conversations, &[], &mut HashingEmbedder::new()).unwrap();
    Persona::from_parts(
        artifact,
        Box::new(HashingEmbedder::new()),
        &RuntimeSettings::default(),
    )
    .unwrap()
}

/// A fan message at a fixed time.
pub fn fan_says(text: &str) -> Message {
    Message {
        from_creator: false,
        content: text.into(),
        sent_at: Some(now()),
    }
}

/// The fixed moment of the tests.
pub fn now() -> Timestamp {
    "2026-11-28T21:00:00Z".parse().unwrap()
}

/// One call the scripted model received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The prompt.
    pub prompt: Vec<ChatMessage>,
    /// The (temperature, seed) it was sampled with, if resampled.
    pub sampling: Option<(f32, u64)>,
}

/// A chat model that answers from a script, in order, and records every call; copies made by
/// `with_sampling` share the script and the log.
#[derive(Clone)]
pub struct Scripted {
    script: Arc<Mutex<VecDeque<String>>>,
    /// Every call, in order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    sampling: Option<(f32, u64)>,
}

impl Scripted {
    /// A model that gives these answers, then empty ones.
    pub fn new(answers: &[&str]) -> Self {
        Scripted {
            script: Arc::new(Mutex::new(answers.iter().map(|a| a.to_string()).collect())),
            calls: Arc::new(Mutex::new(Vec::new())),
            sampling: None,
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ChatModel for Scripted {
    async fn complete(&self, messages: &[ChatMessage], _n: u32) -> Result<Completion, LlmError> {
        self.calls.lock().unwrap().push(Call {
            prompt: messages.to_vec(),
            sampling: self.sampling,
        });
        let text = self.script.lock().unwrap().pop_front().unwrap_or_default();
        Ok(Completion {
            usage: Usage {
                prompt_tokens: messages
                    .iter()
                    .map(|m| m.content.split_whitespace().count() as u64)
                    .sum(),
                completion_tokens: text.split_whitespace().count() as u64,
            },
            texts: vec![text],
            attempts: 1,
        })
    }

    fn with_sampling(&self, temperature: f32, seed: u64) -> Self {
        Scripted {
            sampling: Some((temperature, seed)),
            ..self.clone()
        }
    }
}
