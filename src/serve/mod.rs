//! `persona serve`: the persona as an HTTP service (axum on tokio).
//!
//! Owns the routes (`POST /v1/reply`, `POST /v1/chat/completions`, `GET /v1/models`,
//! `GET /v1/fans/{id}/messages`, `GET /v1/handoffs`, `DELETE /v1/fans/{id}/handoff`,
//! `GET /healthz`), the shared state, the limits applied as layers
//! (body size, request timeout) and graceful shutdown. The handlers are in `handlers`, the error
//! responses in `errors`, authentication and the rate limit in `limits`. Answers come from the
//! same [`crate::answer`] pipeline `ask` uses; fan histories live in the SQLite `history` store.
//! The chat model is a type parameter, so the router is tested with a scripted model.

mod errors;
mod handlers;
mod limits;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::Semaphore;

use crate::answer::Persona;
use crate::history::HistoryStore;
use crate::llm::ChatModel;

pub use self::errors::ApiError;

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
    /// Whether replies are prefilled (see `llm::Preset::prefill`).
    pub prefill: bool,
    /// The configured temperature, for best-of-N (see [`crate::answer::Sampling`]).
    pub temperature: f32,
    /// The configured seed, if any.
    pub seed: Option<u64>,
    /// The LLM's base URL, probed by `/healthz`; `None` reports it reachable without a probe.
    pub llm_base_url: Option<String>,
    /// Upper bound on a whole request, LLM included.
    pub request_timeout: Duration,
}

/// What every handler shares.
pub struct AppState<M> {
    persona: Persona,
    model: M,
    store: Mutex<HistoryStore>,
    options: ServeOptions,
    queue: Arc<Semaphore>,
    llm: Arc<Semaphore>,
    rates: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl<M> AppState<M> {
    /// The state of a server answering with `model` and keeping histories in `store`.
    pub fn new(persona: Persona, model: M, store: HistoryStore, options: ServeOptions) -> Self {
        AppState {
            queue: Arc::new(Semaphore::new(options.max_queue.max(1))),
            llm: Arc::new(Semaphore::new(options.llm_concurrency.max(1))),
            rates: Mutex::new(HashMap::new()),
            store: Mutex::new(store),
            persona,
            model,
            options,
        }
    }
}

/// The router with every route and layer.
pub fn router<M: ChatModel + Send + Sync + 'static>(state: Arc<AppState<M>>) -> Router {
    let timeout = state.options.request_timeout;
    let limit = state.options.body_limit;
    Router::new()
        .route("/v1/reply", post(handlers::reply::<M>))
        .route("/v1/chat/completions", post(handlers::chat_completions::<M>))
        .route("/v1/models", get(handlers::models::<M>))
        .route("/v1/fans/{fan_id}/messages", get(handlers::fan_messages::<M>))
        .route("/v1/fans/{fan_id}/handoff", delete(handlers::clear_handoff::<M>))
        .route("/v1/handoffs", get(handlers::handoffs::<M>))
        .route("/healthz", get(handlers::healthz::<M>))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight.
pub fn run<M: ChatModel + Send + Sync + 'static>(state: AppState<M>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let addr = state.options.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}; is another server using the port? choose another with --addr"))?;
        let addr = listener.local_addr()?;
        eprintln!("persona serve: listening on http://{addr} (POST /v1/reply, POST /v1/chat/completions, GET /healthz)");
        axum::serve(listener, router(Arc::new(state)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")?;
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
    //! The router with the in-memory persona and a scripted model, called with `oneshot`: real
    //! routing, extractors, limits and history store, no socket and no model files.

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::answer::testing::{self, Scripted};

    fn state(model: Scripted, dir: &std::path::Path) -> Arc<AppState<Scripted>> {
        let options = ServeOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Some("secret".into()),
            body_limit: 64 * 1024,
            rate_per_minute: 3,
            max_queue: 4,
            llm_concurrency: 1,
            prefill: false,
            temperature: 0.0,
            seed: Some(1),
            llm_base_url: None,
            request_timeout: Duration::from_secs(30),
        };
        let store = HistoryStore::open(&dir.join("h.sqlite3")).unwrap();
        Arc::new(AppState::new(testing::persona(), model, store, options))
    }

    async fn call(
        state: &Arc<AppState<Scripted>>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer secret")
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn reply_answers_stores_the_exchange_and_returns_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["add me on snapchat", "pancakes and slow jazz, perfect"]);
        let state = state(model, dir.path());
        let (status, body) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"fan_id": "ana", "message": "i made pancakes"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["reply"], "pancakes and slow jazz, perfect");
        assert_eq!(body["filter"]["output"][0]["blocked"], true);
        assert!(
            !body.to_string().contains("snapchat"),
            "a blocked draft is not quoted: {body}"
        );
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        let messages = history["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (
                messages[0]["content"].as_str(),
                messages[1]["from_creator"].as_bool()
            ),
            (Some("i made pancakes"), Some(true))
        );
    }

    #[tokio::test]
    async fn a_refused_request_leaves_no_trace_in_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(Scripted::new(&["sure", "sure", "sure", "sure"]), dir.path());
        for _ in 0..3 {
            let (status, _) = call(
                &state,
                "POST",
                "/v1/reply",
                Some(json!({"fan_id": "bo", "message": "hi"})),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, body) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"fan_id": "bo", "message": "hi again"})),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let (_, history) = call(&state, "GET", "/v1/fans/bo/messages", None).await;
        assert_eq!(
            history["messages"].as_array().unwrap().len(),
            6,
            "three exchanges, nothing of the refused one"
        );
    }

    #[tokio::test]
    async fn bad_requests_get_the_right_status() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(Scripted::new(&[]), dir.path());
        let cases: &[(&str, Value, StatusCode)] = &[
            (
                "empty message",
                json!({"fan_id": "a", "message": "  "}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "n out of range",
                json!({"fan_id": "a", "message": "hi", "n": 9}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "unknown field",
                json!({"fan_id": "a", "message": "hi", "mood": 1}),
                StatusCode::BAD_REQUEST,
            ),
            (
                "too long",
                json!({"fan_id": "a", "message": "a".repeat(5000)}),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (name, body, want) in cases {
            let (status, err) = call(&state, "POST", "/v1/reply", Some(body.clone())).await;
            assert_eq!(status, *want, "{name}: {err}");
            assert!(err["error"]["message"].is_string(), "{name}: {err}");
        }
        let unauthorized = Request::builder().uri("/v1/models").body(Body::empty()).unwrap();
        let response = router(state.clone()).oneshot(unauthorized).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn chat_completions_answers_the_conversation_in_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["just one old cat, she naps all day"]);
        let state = state(model.clone(), dir.path());
        let body = json!({"model": "Wren", "messages": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "hey"},
            {"role": "assistant", "content": "hey you"},
            {"role": "user", "content": [{"type": "text", "text": "do you have pets?"}]},
        ], "temperature": 0.3});
        let (status, out) = call(&state, "POST", "/v1/chat/completions", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(
            out["choices"][0]["message"]["content"],
            "just one old cat, she naps all day"
        );
        let prompt = crate::answer::prompt::to_text(&model.calls()[0].prompt);
        assert!(
            prompt.contains("YOU: hey you") && prompt.contains("THE FAN: do you have pets?"),
            "{prompt}"
        );
        assert!(!prompt.contains("ignored"));
    }

    #[tokio::test]
    async fn a_minor_is_handed_off_listed_refused_until_cleared_then_answered() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["mm hi petal, how was your day"]);
        let state = state(model.clone(), dir.path());
        let say = |text: &str| json!({"fan_id": "kid", "message": text});
        let (status, body) = call(&state, "POST", "/v1/reply", Some(say("i'm 15 btw"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["handoff"]["category"], "minor");
        let notice = body["reply"].as_str().unwrap().to_string();

        let (_, list) = call(&state, "GET", "/v1/handoffs", None).await;
        assert_eq!(list["data"][0]["fan_id"], "kid");
        assert_eq!(list["data"][0]["handoff"]["stop"], true);

        let (_, body) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(say("so what are you doing tonight")),
        )
        .await;
        assert_eq!(body["reply"], notice.as_str(), "the bot stays stopped");
        assert!(model.calls().is_empty(), "no model call while handed off");

        let (status, _) = call(&state, "DELETE", "/v1/fans/nobody/handoff", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = call(&state, "DELETE", "/v1/fans/kid/handoff", None).await;
        assert_eq!((status, body["cleared"].as_u64()), (StatusCode::OK, Some(1)));
        let (_, list) = call(&state, "GET", "/v1/handoffs", None).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 0);

        let (_, body) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(say("so what are you doing tonight")),
        )
        .await;
        assert_eq!(body["reply"], "mm hi petal, how was your day");
        assert!(body.get("handoff").is_none());
        let (_, history) = call(&state, "GET", "/v1/fans/kid/messages", None).await;
        assert_eq!(
            history["messages"].as_array().unwrap().len(),
            6,
            "every exchange stored once"
        );
    }
}
