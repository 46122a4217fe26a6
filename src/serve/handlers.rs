//! The route handlers: thin callers of the answer pipeline for HTTP clients.
//!
//! Each handler authorizes, reads and checks its body, and maps the pipeline's [`Answer`] to its
//! wire format. The fan's message and the reply are stored together, in one transaction, only
//! once the reply exists: a request refused with 429/503, or failing before the model answered,
//! leaves no trace in the history, so a client's retry never stores a message twice.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{json_body, ApiError};
use super::limits::{authorize, rate_limit};
use super::AppState;
use crate::answer::{self, Answer, DemoMode, Sampling, Turn};
use crate::conversation::{FanProfile, Message};
use crate::history;
use crate::llm::ChatModel;
use crate::safety::Handoff;

/// Runs the pipeline for one fan turn within the queue and concurrency limits.
async fn answer<M: ChatModel + Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    history: Vec<Message>,
    fan: Option<FanProfile>,
    handoff: Option<Handoff>,
    sampling: Sampling,
) -> Result<Answer, ApiError> {
    let _slot = state.queue.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests are waiting for the language model; retry shortly",
        );
        e.retry_after = Some(1);
        e
    })?;
    let now = history
        .last()
        .and_then(|m| m.sent_at)
        .unwrap_or_else(Timestamp::now);
    let prepare_state = state.clone();
    // Embedding is CPU work: keep it off the async workers.
    let prepared = tokio::task::spawn_blocking(move || {
        let turn = Turn {
            history: &history,
            fan: fan.as_ref(),
            now,
            prefill: prepare_state.options.prefill,
            demos: DemoMode::Nearest,
            handoff: handoff.as_ref(),
        };
        prepare_state.persona.prepare(&turn)
    })
    .await
    .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("prepare task failed: {e}")))?
    .map_err(ApiError::from_pipeline)?;
    let _llm = state
        .llm
        .acquire()
        .await
        .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("{e}")))?;
    state
        .persona
        .answer(&state.model, &prepared, sampling)
        .await
        .map_err(ApiError::from_pipeline)
}

fn sampling<M>(state: &AppState<M>, n: Option<u32>) -> Result<Sampling, ApiError> {
    Ok(Sampling::new(
        n.unwrap_or(1),
        state.options.temperature,
        state.options.seed,
    )?)
}

/// The body of `POST /v1/reply`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplyRequest {
    fan_id: String,
    message: String,
    #[serde(default)]
    sent_at: Option<Timestamp>,
    #[serde(default)]
    fan: Option<FanProfile>,
    #[serde(default)]
    n: Option<u32>,
}

/// `POST /v1/reply`: answers a fan from their stored history and stores the exchange.
pub(super) async fn reply<M: ChatModel + Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    body: Result<Json<ReplyRequest>, JsonRejection>,
) -> Result<Json<Answer>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let req = json_body(body)?;
    history::check_fan_id(&req.fan_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    answer::check_message(&req.message)?;
    let sampling = sampling(&state, req.n)?;
    rate_limit(&state.rates, state.options.rate_per_minute, &req.fan_id)?;
    let sent_at = req.sent_at.unwrap_or_else(Timestamp::now);
    let fan_message = Message {
        from_creator: false,
        content: req.message.trim().to_string(),
        sent_at: Some(sent_at),
    };
    let (mut history, stored_profile, handoff) = {
        let store = state
            .store
            .lock()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?;
        let (history, profile) = store.load(&req.fan_id).map_err(ApiError::from_pipeline)?;
        let handoff = store
            .stopping_handoff(&req.fan_id)
            .map_err(ApiError::from_pipeline)?;
        (history, profile, handoff)
    };
    history.push(fan_message.clone());
    let profile = req.fan.clone().or(stored_profile);
    let answer = answer(&state, history, profile, handoff, sampling).await?;
    {
        let mut store = state
            .store
            .lock()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?;
        if let Some(profile) = &req.fan {
            store
                .set_profile(&req.fan_id, profile)
                .map_err(ApiError::from_pipeline)?;
        }
        store
            .record_exchange(
                &req.fan_id,
                &fan_message,
                &answer.reply,
                Timestamp::now(),
                answer.handoff.as_ref(),
            )
            .map_err(ApiError::from_pipeline)?;
    }
    Ok(Json(answer))
}

/// The body of `POST /v1/chat/completions`; unknown OpenAI fields are ignored.
#[derive(Deserialize)]
pub(super) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessageIn>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessageIn {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

fn content_text(content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        // The content-parts form: keep the text parts.
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(ApiError::bad_request(
            "`content` must be a string or a list of text parts",
        )),
    }
}

/// The conversation of an OpenAI request: user messages are the fan's, assistant messages the
/// creator's; a client's system prompt is not used, the persona's own signature steers it.
fn chat_history(messages: &[ChatMessageIn]) -> Result<Vec<Message>, ApiError> {
    let mut history = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(&m.content)?;
        let from_creator = match m.role.as_str() {
            "user" => false,
            "assistant" => true,
            "system" | "developer" => continue,
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
    last.sent_at = Some(Timestamp::now());
    Ok(history)
}

/// `POST /v1/chat/completions`: the OpenAI-compatible route; the conversation comes in the
/// request and nothing is stored.
pub(super) async fn chat_completions<M: ChatModel + Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let req = json_body(body)?;
    if req.stream == Some(true) {
        return Err(ApiError::bad_request(
            "streaming is not supported; send `stream: false`",
        ));
    }
    let sampling = sampling(&state, req.n)?;
    let history = chat_history(&req.messages)?;
    let answer = answer(&state, history, None, None, sampling).await?;
    let model = req.model.unwrap_or_else(|| state.persona.creator().to_string());
    Ok(Json(json!({
        "id": format!("chatcmpl-{}", Timestamp::now().as_nanosecond()),
        "object": "chat.completion",
        "created": Timestamp::now().as_second(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.reply},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    })))
}

/// `GET /v1/models`: the creator this server speaks as.
pub(super) async fn models<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": state.persona.creator(), "object": "model", "created": 0, "owned_by": "persona"}],
    })))
}

/// `GET /v1/fans/{id}/messages`: a fan's stored history and profile.
pub(super) async fn fan_messages<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let store = state
        .store
        .lock()
        .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?;
    if !store.exists(&fan_id).map_err(ApiError::from_pipeline)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no fan with id `{fan_id}`"),
        ));
    }
    let (messages, profile) = store.load(&fan_id).map_err(ApiError::from_pipeline)?;
    Ok(Json(
        json!({"fan_id": fan_id, "profile": profile, "messages": messages}),
    ))
}

/// `GET /v1/handoffs`: every fan waiting for a human, oldest first.
pub(super) async fn handoffs<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let open = state
        .store
        .lock()
        .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?
        .all_open_handoffs()
        .map_err(ApiError::from_pipeline)?;
    let data: Vec<Value> = open
        .into_iter()
        .map(|(fan_id, h)| json!({"fan_id": fan_id, "handoff": h}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `DELETE /v1/fans/{id}/handoff`: a human has taken over; the persona answers the fan again.
pub(super) async fn clear_handoff<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let cleared = state
        .store
        .lock()
        .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?
        .clear_handoff(&fan_id, Timestamp::now())
        .map_err(ApiError::from_pipeline)?;
    match cleared {
        Some(n) => Ok(Json(json!({"fan_id": fan_id, "cleared": n}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no fan with id `{fan_id}`"),
        )),
    }
}

/// `GET /healthz`: the artifact served and whether the LLM answers.
pub(super) async fn healthz<M: Send + Sync + 'static>(State(state): State<Arc<AppState<M>>>) -> Json<Value> {
    let llm = match state.options.llm_base_url.clone() {
        Some(base) => tokio::task::spawn_blocking(move || crate::llm::probe(&base))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        None => true,
    };
    let m = &state.persona.artifact.manifest;
    Json(json!({
        "status": if llm { "ok" } else { "degraded" },
        "llm_reachable": llm,
        "artifact": {
            "creator": state.persona.creator(),
            "examples": m.examples,
            "embedding": m.embedding.model_id,
            "created_at": m.created_at,
            "persona_version": m.persona_version,
        },
    }))
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
