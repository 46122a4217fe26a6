//! `POST /v1/chat/completions`: the OpenAI-compatible route chat front ends speak.
//!
//! Reading a request: user messages are the fan's, assistant messages the creator's, a client's
//! system prompt is not used (the persona's signature steers). Unknown OpenAI fields are accepted
//! and ignored. `n` is honoured (every choice passed the filter; choice 0 is the one the persona
//! would send), `seed` is honoured, `stream` and `stream_options.include_usage` are honoured;
//! `temperature`, `top_p`, `max_tokens`, `stop` and the penalties are ignored, because the
//! creator's voice is tuned in the persona's own settings.
//!
//! In review mode (`serve --review`) a request that names its fan gets `202` with a pending draft
//! instead of a completion, streamed or not, and one that names no fan is a 400.
//!
//! Fan identity: `user`, or Open WebUI's `X-OpenWebUI-User-Id` header, names the fan. Then the
//! server's stored history is the conversation, extended exactly as `/v1/reply` does: the
//! request's last user message is the fan's new message, the request's earlier messages are not
//! imported (the history holds only what this server answered and filtered), and a request that
//! repeats the last stored fan message with one reply fewer than the store is a regenerate: its
//! answer replaces the stored reply. Without an id, the request's own messages are the
//! conversation and nothing is stored.
//!
//! Streaming starts only after the reply has passed every filter and safety stage; the chunks
//! are cut from the finished, clean reply. The rendering here is pure.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{json_body, ApiError};
use super::exchange::{self, Incoming};
use super::handlers::{idempotency_key, sampling};
use super::limits::authorize;
use super::AppState;
use crate::answer;
use crate::conversation::Message;
use crate::history;
use crate::llm::ChatModel;

/// The body of `POST /v1/chat/completions`; unknown OpenAI fields are ignored.
#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    /// The conversation as the front end holds it.
    pub messages: Vec<ChatMessageIn>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// One message of a chat completions request.
#[derive(Deserialize)]
pub struct ChatMessageIn {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

fn content_text(i: usize, content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        // The content-parts form: keep the text parts.
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(ApiError::bad_request(format!(
            "messages[{i}].content must be a string or a list of text parts"
        ))),
    }
}

/// The conversation of a request, its last message the fan's (checked) with the time now.
pub fn chat_history(messages: &[ChatMessageIn]) -> Result<Vec<Message>, ApiError> {
    let mut history = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(i, &m.content)?;
        let from_creator = match m.role.as_str() {
            "user" => false,
            "assistant" => true,
            "system" | "developer" | "tool" => continue,
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role `{other}` is not one of user, assistant, system"
                )))
            }
        };
        history.push(Message {
            from_creator,
            content: text,
            sent_at: None,
        });
    }
    let Some(last) = history.last_mut().filter(|m| !m.from_creator) else {
        return Err(ApiError::bad_request(
            "the last message must be from the user (the fan)",
        ));
    };
    answer::check_message(&last.content)?;
    last.content = last.content.trim().to_string();
    last.sent_at = Some(Timestamp::now());
    Ok(history)
}

/// The fan a request names: `user`, else the `X-OpenWebUI-User-Id` header.
pub fn fan_id(req: &ChatRequest, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let (id, field) = match (&req.user, headers.get("x-openwebui-user-id")) {
        (Some(user), _) if !user.trim().is_empty() => (user.trim().to_string(), "`user`"),
        (_, Some(header)) => (
            header
                .to_str()
                .map_err(|_| ApiError::bad_request("the X-OpenWebUI-User-Id header is not text"))?
                .trim()
                .to_string(),
            "the X-OpenWebUI-User-Id header",
        ),
        _ => return Ok(None),
    };
    history::check_fan_id(&id).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
    Ok(Some(id))
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions<M: ChatModel + Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let req = json_body(body)?;
    let stream = req.stream == Some(true);
    let n = req.n.unwrap_or(1);
    if stream && n > 1 {
        return Err(ApiError::bad_request(
            "`stream: true` with `n` > 1 is not supported; stream one choice or drop `stream`",
        ));
    }
    let persona = state.creators.select(req.model.as_deref())?;
    let mut sampling = sampling(&state, Some(n))?;
    if let Some(seed) = req.seed {
        sampling = sampling.reseeded(seed);
    }
    let history = chat_history(&req.messages)?;
    let fan = fan_id(&req, &headers)?;
    let key = idempotency_key(&headers)?;
    let budget = state.options.request_timeout * n.max(1);
    let (answer, replayed) = match fan {
        Some(fan_id) => {
            let message = history
                .last()
                .cloned()
                .ok_or_else(|| ApiError::bad_request("no fan message"))?;
            let incoming = Incoming {
                fan_id,
                message,
                profile: None,
                sampling,
                idempotency_key: key,
                sent: Some(history),
            };
            let outcome = super::within(budget, exchange::run(&state, persona.clone(), incoming)).await?;
            if outcome.draft {
                // Review mode: nothing is sent to the fan yet, streamed or not.
                let mut response = super::review::accepted(outcome.answer);
                exchange::mark_replayed(&mut response, outcome.replayed);
                return Ok(response);
            }
            (outcome.answer, outcome.replayed)
        }
        None if state.options.review => return Err(ApiError::bad_request(
            "review mode keeps a draft per fan: name the fan in `user` (or the X-OpenWebUI-User-Id header)",
        )),
        None => {
            let admitted = exchange::admit(&state)?;
            let answer = super::within(
                budget,
                exchange::answer(&state, &admitted, persona.clone(), history, None, None, sampling),
            )
            .await?;
            let value = serde_json::to_value(&answer).map_err(|e| ApiError::from_pipeline(e.into()))?;
            (value, false)
        }
    };
    let model = persona.creator().to_string();
    let completion = Completion::from_answer(&answer, &model);
    let mut response = if stream {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let mut r = Response::new(Body::from(completion.sse(include_usage)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    } else {
        Json(completion.json()).into_response()
    };
    exchange::mark_replayed(&mut response, replayed);
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// A finished completion, ready to render as one JSON object or as a stream of chunks.
struct Completion {
    id: String,
    created: i64,
    model: String,
    /// The choices' texts, the reply the persona sends first.
    choices: Vec<String>,
    usage: Value,
}

impl Completion {
    /// The completion of an [`crate::answer::Answer`] (as JSON): its reply first, then the other
    /// best-of-N candidates in sampling order.
    fn from_answer(answer: &Value, model: &str) -> Self {
        let reply = answer["reply"].as_str().unwrap_or_default().to_string();
        let mut choices = vec![reply.clone()];
        let mut skipped_chosen = false;
        for c in answer["candidates"].as_array().into_iter().flatten() {
            let text = c["reply"].as_str().unwrap_or_default();
            if text == reply && !skipped_chosen {
                skipped_chosen = true;
                continue;
            }
            choices.push(text.to_string());
        }
        let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        let completion = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        let now = Timestamp::now();
        Completion {
            id: format!("chatcmpl-{}", now.as_nanosecond()),
            created: now.as_second(),
            model: model.to_string(),
            choices,
            usage: json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }),
        }
    }

    fn json(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .map(|(i, text)| {
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": "stop",
                })
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The whole event stream of the first choice: the role, the text a few words at a time,
    /// the finish reason, the usage when asked for, and `[DONE]`.
    fn sse(&self, include_usage: bool) -> String {
        let mut events = vec![self.chunk(json!({"role": "assistant", "content": ""}), None, include_usage)];
        let text = self.choices.first().map(String::as_str).unwrap_or_default();
        for piece in pieces(text, 4) {
            events.push(self.chunk(json!({"content": piece}), None, include_usage));
        }
        events.push(self.chunk(json!({}), Some("stop"), include_usage));
        if include_usage {
            events.push(json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
            }));
        }
        let mut out = String::new();
        for e in events {
            out.push_str("data: ");
            out.push_str(&e.to_string());
            out.push_str("\n\n");
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

/// `text` cut into pieces of `words` words each, whitespace kept, so the pieces join back to it.
fn pieces(text: &str, words: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen = 0;
    let mut in_word = false;
    for (i, ch) in text.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                seen += 1;
                in_word = false;
                if seen == words {
                    out.push(&text[start..i]);
                    start = i;
                    seen = 0;
                }
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_back_to_the_text() {
        for text in [
            "",
            "hey",
            "hey you  there, how's   it going today? 😘 ok",
            " lead and trail ",
        ] {
            let p = pieces(text, 2);
            assert_eq!(p.concat(), text);
            assert!(p.iter().all(|p| p.split_whitespace().count() <= 2), "{p:?}");
        }
    }

    #[test]
    fn the_event_stream_carries_the_reply_and_usage_in_openai_form() {
        let answer = json!({"reply": "just one old cat, she naps all day",
                            "usage": {"prompt_tokens": 40, "completion_tokens": 9}});
        let c = Completion::from_answer(&answer, "Wren");
        let sse = c.sse(true);
        assert!(sse.ends_with("data: [DONE]\n\n"));
        let events: Vec<Value> = sse
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "just one old cat, she naps all day");
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        let last = events.last().unwrap();
        assert_eq!(last["usage"]["total_tokens"], 49);
        assert_eq!(last["choices"].as_array().unwrap().len(), 0);
        assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"));
        assert!(!c.sse(false).contains("usage"));
    }

    #[test]
    fn choices_put_the_sent_reply_first() {
        let answer = json!({"reply": "b", "candidates": [{"reply": "a"}, {"reply": "b"}, {"reply": "c"}]});
        let c = Completion::from_answer(&answer, "Wren");
        assert_eq!(c.choices, vec!["b", "a", "c"]);
        assert_eq!(c.json()["choices"][2]["index"], 2);
    }
}
