//! `persona serve`: the persona as an HTTP service (axum on tokio).
//!
//! Owns the routes (`POST /v1/reply`, `POST /v1/chat/completions`, `GET /v1/models`,
//! `GET /v1/fans/{id}/messages`, `GET /healthz`), authentication, limits (body size, per-fan rate,
//! a bounded queue towards the LLM), the mapping of failures to status codes with JSON error bodies
//! that name the problem without internals, and graceful shutdown. The answer pipeline is the
//! same `answer::Persona` that `ask` uses; fan histories live in the SQLite `history` store.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::answer::{self, DemoMode, Generated, Persona, Turn};
use crate::conversation::{FanProfile, Message};
use crate::history::{self, HistoryStore};
use crate::llm::{LlmClient, LlmError};

/// Service limits and settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Bearer token required on `/v1/*`, if any.
    pub token: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Requests per fan per minute.
    pub rate_per_minute: usize,
    /// Requests allowed to wait for the LLM at once; more get 503.
    pub max_queue: usize,
    /// Requests talking to the LLM at once.
    pub llm_concurrency: usize,
    /// Demos per answer.
    pub k: usize,
    /// Whether replies are prefilled (see `llm::Preset::prefill`).
    pub prefill: bool,
    /// Upper bound on a whole request, LLM included.
    pub request_timeout: Duration,
}

struct AppState {
    persona: Persona,
    client: LlmClient,
    store: Mutex<HistoryStore>,
    options: ServeOptions,
    queue: Arc<Semaphore>,
    llm: Arc<Semaphore>,
    rates: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// An error response: a status and a JSON body `{"error": {"message", "type"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// Maps a pipeline failure: LLM trouble to 503/504/502, anything else to a 500 without internals.
    fn from_pipeline(err: anyhow::Error) -> Self {
        match err.chain().find_map(|c| c.downcast_ref::<LlmError>()) {
            Some(LlmError::Unreachable { .. }) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "llm_unavailable",
                "the language model is not reachable; try again later",
            ),
            Some(LlmError::Timeout { .. }) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "llm_timeout",
                "the language model did not answer in time",
            ),
            Some(LlmError::Status { status, .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "llm_error",
                format!("the language model answered with HTTP {status}"),
            ),
            Some(LlmError::BadResponse { .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "llm_error",
                "the language model sent an unreadable answer",
            ),
            None => {
                eprintln!("serve: request failed: {err:#}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the reply could not be produced",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"message": self.message, "type": self.kind}})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|r| {
        // Well-formed JSON of the wrong shape is a bad request too.
        let status = if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            r.status()
        };
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_request_error"
        };
        ApiError::new(status, kind, r.body_text())
    })
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.options.token else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing bearer token",
            )
        })?;
    if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "wrong bearer token",
        ))
    }
}

fn rate_limit(state: &AppState, fan: &str) -> Result<(), ApiError> {
    let now = Instant::now();
    let window = Duration::from_secs(60);
    let mut rates = state
        .rates
        .lock()
        .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("rate table poisoned")))?;
    let times = rates.entry(fan.to_string()).or_default();
    while times.front().is_some_and(|t| now.duration_since(*t) > window) {
        times.pop_front();
    }
    if times.len() >= state.options.rate_per_minute {
        let wait = times.front().map_or(60, |t| {
            60u64.saturating_sub(now.duration_since(*t).as_secs()).max(1)
        });
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "fan `{fan}` sent more than {} messages in a minute",
                state.options.rate_per_minute
            ),
        );
        err.retry_after = Some(wait);
        return Err(err);
    }
    times.push_back(now);
    Ok(())
}

fn check_message(text: &str) -> Result<(), ApiError> {
    answer::check_message(text).map_err(|e| {
        if text.chars().count() > crate::conversation::MAX_MESSAGE_CHARS {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", e.to_string())
        } else {
            ApiError::bad_request(e.to_string())
        }
    })
}

/// Runs the pipeline for one fan turn within the queue and concurrency limits.
async fn answer(
    state: &Arc<AppState>,
    history: Vec<Message>,
    fan: Option<FanProfile>,
    n: u32,
) -> Result<(answer::Prepared, Generated), ApiError> {
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
    let prepared = tokio::task::spawn_blocking(move || {
        let s = &prepare_state;
        let turn = Turn {
            history: &history,
            fan: fan.as_ref(),
            now,
            k: s.options.k,
            prefill: s.options.prefill,
            demos: DemoMode::Nearest,
        };
        s.persona.prepare(&turn)
    })
    .await
    .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("prepare task failed: {e}")))?
    .map_err(ApiError::from_pipeline)?;
    let _llm = state
        .llm
        .acquire()
        .await
        .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("{e}")))?;
    let generated = if n > 1 {
        let temperature = state.client.settings().temperature.max(0.5);
        let seed = state
            .client
            .settings()
            .seed
            .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
        state
            .persona
            .best_of(&state.client, &prepared, n, temperature, seed)
            .await
    } else {
        state.persona.generate(&state.client, &prepared).await
    }
    .map_err(ApiError::from_pipeline)?;
    Ok((prepared, generated))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRequest {
    fan_id: String,
    message: String,
    #[serde(default)]
    sent_at: Option<Timestamp>,
    #[serde(default)]
    fan: Option<FanProfile>,
    #[serde(default)]
    n: Option<u32>,
}

async fn reply(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ReplyRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    history::check_fan_id(&req.fan_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_message(&req.message)?;
    let n = req.n.unwrap_or(1);
    if !(1..=8).contains(&n) {
        return Err(ApiError::bad_request(format!(
            "`n` must be between 1 and 8, got {n}"
        )));
    }
    rate_limit(&state, &req.fan_id)?;
    let sent_at = req.sent_at.unwrap_or_else(Timestamp::now);
    let fan_message = Message {
        from_creator: false,
        content: req.message.trim().to_string(),
        sent_at: Some(sent_at),
    };
    // The fan's message is committed before the model runs, so a crash never loses it.
    let (mut history, stored_profile) = {
        let mut store = state
            .store
            .lock()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?;
        if let Some(profile) = &req.fan {
            store
                .set_profile(&req.fan_id, profile)
                .map_err(ApiError::from_pipeline)?;
        }
        let loaded = store.load(&req.fan_id).map_err(ApiError::from_pipeline)?;
        store
            .append(&req.fan_id, &fan_message)
            .map_err(ApiError::from_pipeline)?;
        loaded
    };
    history.push(fan_message);
    let (prepared, generated) = answer(&state, history, req.fan.or(stored_profile), n).await?;
    {
        let mut store = state
            .store
            .lock()
            .map_err(|_| ApiError::from_pipeline(anyhow::anyhow!("history store poisoned")))?;
        let reply = Message {
            from_creator: true,
            content: generated.reply.clone(),
            sent_at: Some(Timestamp::now().max(sent_at)),
        };
        store
            .append(&req.fan_id, &reply)
            .map_err(ApiError::from_pipeline)?;
    }
    Ok(Json(json!({
        "reply": generated.reply,
        "demos": prepared.demos,
        "context": prepared.context,
        "filter": generated.filter,
        "candidates": generated.candidates,
    })))
}

#[derive(Deserialize)]
struct ChatRequest {
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

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    if req.stream == Some(true) {
        let mut e = ApiError::bad_request("streaming is not supported; send `stream: false`");
        e.kind = "invalid_request_error";
        return Err(e);
    }
    let n = req.n.unwrap_or(1);
    if !(1..=8).contains(&n) {
        return Err(ApiError::bad_request(format!(
            "`n` must be between 1 and 8, got {n}"
        )));
    }
    let mut history = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let text = content_text(&m.content)?;
        match m.role.as_str() {
            "user" => history.push(Message {
                from_creator: false,
                content: text,
                sent_at: None,
            }),
            "assistant" => history.push(Message {
                from_creator: true,
                content: text,
                sent_at: None,
            }),
            // The persona's own signature steers it; a client's system prompt is not used.
            "system" | "developer" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role `{other}` is not one of user, assistant, system"
                )))
            }
        }
    }
    let Some(last) = history.last().filter(|m| !m.from_creator) else {
        return Err(ApiError::bad_request(
            "the last message must be from the user (the fan)",
        ));
    };
    check_message(&last.content)?;
    if let Some(stamp) = history.last_mut() {
        stamp.sent_at = Some(Timestamp::now());
    }
    let (_, generated) = answer(&state, history, None, n).await?;
    let model = req.model.unwrap_or_else(|| state.persona.creator().to_string());
    Ok(Json(json!({
        "id": format!("chatcmpl-{}", Timestamp::now().as_nanosecond()),
        "object": "chat.completion",
        "created": Timestamp::now().as_second(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": generated.reply},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    })))
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": state.persona.creator(), "object": "model", "created": 0, "owned_by": "persona"}],
    })))
}

async fn fan_messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
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

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let base = state.client.settings().base_url.clone();
    let llm = tokio::task::spawn_blocking(move || crate::llm::probe(&base))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
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

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The router, for tests and `run`.
fn router(state: Arc<AppState>) -> Router {
    let timeout = state.options.request_timeout;
    let limit = state.options.body_limit;
    Router::new()
        .route("/v1/reply", post(reply))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/fans/{fan_id}/messages", get(fan_messages))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight.
pub fn run(persona: Persona, client: LlmClient, store: HistoryStore, options: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .with_context(|| format!("binding {}; is another server using the port? choose another with --addr", options.addr))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            queue: Arc::new(Semaphore::new(options.max_queue.max(1))),
            llm: Arc::new(Semaphore::new(options.llm_concurrency.max(1))),
            rates: Mutex::new(HashMap::new()),
            store: Mutex::new(store),
            persona,
            client,
            options,
        });
        eprintln!("persona serve: listening on http://{addr} (POST /v1/reply, POST /v1/chat/completions, GET /healthz)");
        axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await.context("serving")?;
        eprintln!("persona serve: stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
