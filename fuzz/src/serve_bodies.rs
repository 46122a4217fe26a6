//! The HTTP service's request bodies and the pure checks run on them.
//!
//! The bytes are decoded as the server decodes a body (axum's `Json` extractor) into the
//! OpenAI route's `ChatRequest` and into `/v1/reply`'s `ReplyRequest`; on what decodes, the
//! checks the handlers run before any work: the conversation and the fan's last message, the fan
//! id, the `Idempotency-Key`, the message and the number of candidates. Input bytes before a NUL,
//! when there is one, are also sent as the `X-OpenWebUI-User-Id` and `Idempotency-Key` headers.

use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use persona::answer::{self, Sampling};
use persona::history;
use persona::serve::handlers::{idempotency_key, ReplyRequest};
use persona::serve::openai::{chat_history, fan_id, ChatRequest};

/// Decodes `data` as both bodies and checks what decodes; refused when neither is usable.
pub fn run(data: &[u8]) -> Result<(), String> {
    let (header, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = header.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        headers.insert("x-openwebui-user-id", value.clone());
        headers.insert("idempotency-key", value);
    }
    let _ = idempotency_key(&headers);

    let mut accepted = false;
    if let Ok(Json(req)) = Json::<ChatRequest>::from_bytes(body) {
        if let Ok(history) = chat_history(&req.messages) {
            accepted = true;
            let last = history
                .last()
                .expect("a checked history ends with the fan's message");
            assert!(!last.from_creator && last.content == last.content.trim());
            assert!(answer::check_message(&last.content).is_ok());
        }
        if let Ok(Some(id)) = fan_id(&req, &headers) {
            assert!(history::check_fan_id(&id).is_ok());
        }
    }

    if let Ok(Json(req)) = Json::<ReplyRequest>::from_bytes(body) {
        if history::check_fan_id(&req.fan_id).is_ok() && answer::check_message(&req.message).is_ok() {
            accepted |= Sampling::new(req.n.unwrap_or(1), 0.5, Some(7)).is_ok();
        }
    }
    if accepted {
        Ok(())
    } else {
        Err("neither body is usable".into())
    }
}
