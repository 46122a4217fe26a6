//! `persona serve`: the persona as an HTTP service (axum on tokio).
//!
//! Owns the routes (`POST /v1/reply`, `POST /v1/chat/completions`, `GET /v1/models`,
//! `GET /v1/fans`, `GET /v1/fans/{id}/messages`, `PUT /v1/fans/{id}/profile`, `GET /v1/handoffs`,
//! `DELETE /v1/fans/{id}/handoff`, review mode's `/v1/drafts`, `GET /v1/console`, `GET /healthz`,
//! and with `--console` the page at `/`), the shared state, the limits applied as layers (body
//! size, a per-client rate limit on `/v1/*`, an overall timeout as a backstop), reloading and
//! graceful shutdown. The creators served are in `creators`, a fan's turn against the history in
//! `exchange` (one at a time per fan, from `fan_turns`), review mode's drafts in `review`, the
//! chatters' page in `console`, the OpenAI route in `openai`, the other handlers in `handlers`,
//! the error responses in `errors`, authentication and rate tables in `limits`. Answers come
//! from the same [`crate::answer`] pipeline `ask` uses; fan histories live in the `history`
//! store. The chat model is a type parameter, so the router is tested with a scripted model.

mod console;
mod creators;
mod errors;
mod exchange;
mod fan_turns;
// Public for the fuzz harness of the request bodies (fuzz/src/serve_bodies.rs).
pub mod handlers;
mod limits;
pub mod openai;
mod review;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use tokio::sync::Semaphore;

use crate::history::HistoryStore;
use crate::llm::ChatModel;

pub use self::creators::{Creators, Loader, Source};
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
    /// Answers per fan per minute.
    pub rate_per_minute: usize,
    /// Requests per client address per minute, on every `/v1/*` route.
    pub client_rate_per_minute: usize,
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
    /// Upper bound on answering with one candidate, every attempt and retry included; a request
    /// for `n` candidates gets `n` times this.
    pub request_timeout: Duration,
    /// How often artifact files are checked for replacement; `None` reloads only on SIGHUP.
    pub reload_every: Option<Duration>,
    /// Review mode: answers are drafts a person approves (see `review`).
    pub review: bool,
    /// Serve the chatters' console at `/` (see `console`).
    pub console: bool,
}

/// How long a `/healthz` probe of the LLM is trusted.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct AppState<M> {
    creators: Creators,
    model: M,
    store: Arc<Mutex<HistoryStore>>,
    options: ServeOptions,
    queue: Arc<Semaphore>,
    llm: Arc<Semaphore>,
    rates: limits::RateTable,
    clients: limits::RateTable,
    fans: fan_turns::FanTurns,
    probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl<M> AppState<M> {
    /// The state of a server speaking as `creators`, answering with `model` and keeping
    /// histories in `store`.
    pub fn new(creators: Creators, model: M, store: HistoryStore, options: ServeOptions) -> Self {
        AppState {
            queue: Arc::new(Semaphore::new(options.max_queue.max(1))),
            llm: Arc::new(Semaphore::new(options.llm_concurrency.max(1))),
            rates: limits::RateTable::default(),
            clients: limits::RateTable::default(),
            fans: fan_turns::FanTurns::default(),
            probe: tokio::sync::Mutex::new(None),
            store: Arc::new(Mutex::new(store)),
            creators,
            model,
            options,
        }
    }

    /// Runs `work` on the history store on a blocking thread.
    async fn with_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut HistoryStore) -> Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| anyhow::anyhow!("the history store is poisoned"))?;
            work(&mut store)
        })
        .await
        .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("history task failed: {e}")))?
        .map_err(ApiError::from_pipeline)
    }

    /// Whether the LLM answered its last probe; probes again when that is older than
    /// [`PROBE_TTL`]. Concurrent callers share one probe.
    async fn llm_reachable(&self) -> bool {
        let Some(base) = self.options.llm_base_url.clone() else {
            return true;
        };
        let mut last = self.probe.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < PROBE_TTL {
                return ok;
            }
        }
        let ok = tokio::task::spawn_blocking(move || crate::llm::probe(&base))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        *last = Some((Instant::now(), ok));
        ok
    }
}

/// `work`, or a 504 when it takes longer than `budget`. A fan's exchange cut off this way is
/// stored only if its reply already existed (see [`exchange`]).
async fn within<T>(
    budget: Duration,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(budget, work).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the reply took longer than {} s; retry with the same Idempotency-Key to get it if it was stored",
                budget.as_secs()
            ),
        ))
    })
}

/// The per-client rate limit on `/v1/*`: by the peer address (unknown peers share one budget).
async fn client_rate<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    state.clients.check(
        &peer,
        state.options.client_rate_per_minute,
        &format!("client {peer}"),
    )?;
    Ok(next.run(request).await)
}

/// The router with every route and layer.
pub fn router<M: ChatModel + Send + Sync + 'static>(state: Arc<AppState<M>>) -> Router {
    // The backstop: the largest budget a request may get (8 candidates) and a margin.
    let backstop = state.options.request_timeout * 8 + Duration::from_secs(30);
    let limit = state.options.body_limit;
    let v1 = Router::new()
        .route("/reply", post(handlers::reply::<M>))
        .route("/chat/completions", post(openai::chat_completions::<M>))
        .route("/models", get(handlers::models::<M>))
        .route("/fans/{fan_id}/messages", get(handlers::fan_messages::<M>))
        .route("/fans/{fan_id}/handoff", delete(handlers::clear_handoff::<M>))
        .route("/handoffs", get(handlers::handoffs::<M>))
        .route("/fans", get(handlers::fans::<M>))
        .route("/fans/{fan_id}/profile", put(handlers::set_profile::<M>))
        .route("/drafts", get(review::list::<M>))
        .route("/drafts/{id}/approve", post(review::approve::<M>))
        .route("/drafts/{id}/reject", post(review::reject::<M>))
        .route("/drafts/{id}/regenerate", post(review::regenerate::<M>))
        .route("/console", get(console::settings::<M>))
        .route_layer(middleware::from_fn_with_state(state.clone(), client_rate::<M>));
    let site = match state.options.console {
        true => console::routes::<M>(),
        false => Router::new(),
    };
    site.nest("/v1", v1)
        .route("/healthz", get(handlers::healthz::<M>))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            backstop,
        ))
        .with_state(state)
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight. Artifacts are reloaded
/// on SIGHUP and when their files are replaced.
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
        let state = Arc::new(state);
        let names: Vec<String> = state.creators.all().iter().map(|p| p.creator().to_string()).collect();
        eprintln!(
            "persona serve: listening on http://{addr} as {} (POST /v1/reply, POST /v1/chat/completions, GET /healthz)",
            names.join(", ")
        );
        tokio::spawn(reload_loop(state.clone()));
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
        eprintln!("persona serve: stopped");
        Ok(())
    })
}

/// Reloads changed artifacts every `reload_every`, and all of them on SIGHUP.
async fn reload_loop<M: Send + Sync + 'static>(state: Arc<AppState<M>>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let every = state.options.reload_every;
    loop {
        let tick = async {
            match every {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let force = tokio::select! {
            _ = tick => false,
            _ = hangup => true,
        };
        let reloading = state.clone();
        if let Ok(log) = tokio::task::spawn_blocking(move || reloading.creators.reload(force)).await {
            for line in log {
                eprintln!("persona serve: {line}");
            }
        }
    }
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
        state_with(model, dir, vec![testing::persona()])
    }

    fn named(name: &str) -> crate::answer::Persona {
        let mut p = testing::persona();
        p.artifact.settings.creator.name = name.into();
        p
    }

    fn state_with(
        model: Scripted,
        dir: &std::path::Path,
        personas: Vec<crate::answer::Persona>,
    ) -> Arc<AppState<Scripted>> {
        let options = ServeOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: Some("secret".into()),
            body_limit: 64 * 1024,
            rate_per_minute: 3,
            client_rate_per_minute: 1000,
            max_queue: 4,
            llm_concurrency: 1,
            prefill: false,
            temperature: 0.0,
            seed: Some(1),
            llm_base_url: None,
            request_timeout: Duration::from_secs(30),
            reload_every: None,
            review: false,
            console: false,
        };
        let store = crate::history::open(&crate::history::Location::File(dir.join("h.sqlite3"))).unwrap();
        let creators = Creators::fixed(personas).unwrap();
        Arc::new(AppState::new(creators, model, store, options))
    }

    async fn call(
        state: &Arc<AppState<Scripted>>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = call_with(state, method, path, body, &[]).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn call_with(
        state: &Arc<AppState<Scripted>>,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer secret")
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, bytes.to_vec())
    }

    /// A server in review mode, with the console on.
    fn reviewing(model: Scripted, dir: &std::path::Path) -> Arc<AppState<Scripted>> {
        let mut state = state(model, dir);
        let options = &mut Arc::get_mut(&mut state).unwrap().options;
        options.review = true;
        options.console = true;
        state
    }

    fn contents(history: &Value) -> Vec<String> {
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_stream_carries_the_filtered_reply_and_the_models_usage() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["add me on snapchat babe", "pancakes and slow jazz, perfect"]);
        let state = state(model, dir.path());
        let body = json!({"model": "Wren", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "i made pancakes"}],
                          "temperature": 1.7, "presence_penalty": 0.5, "logit_bias": {}});
        let (status, headers, bytes) =
            call_with(&state, "POST", "/v1/chat/completions", Some(body), &[]).await;
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(headers["content-type"], "text/event-stream");
        assert!(
            !text.contains("snapchat"),
            "nothing unfiltered is streamed: {text}"
        );
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let streamed: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(streamed, "pancakes and slow jazz, perfect");
        let usage = &events.last().unwrap()["usage"];
        assert!(
            usage["completion_tokens"].as_u64().unwrap() >= 9,
            "both drafts are counted: {usage}"
        );
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
        );

        let (status, _, bytes) = call_with(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(json!({"stream": true, "n": 2, "messages": [{"role": "user", "content": "hi"}]})),
            &[],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    #[tokio::test]
    async fn a_streamed_reply_is_stored_before_its_first_byte_so_a_client_that_leaves_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(Scripted::new(&["hey you"]), dir.path());
        let request = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("authorization", "Bearer secret")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"stream": true, "user": "gone", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The client disconnects without reading a byte of the stream.
        drop(response);
        let (_, history) = call(&state, "GET", "/v1/fans/gone/messages", None).await;
        assert_eq!(contents(&history), ["hi", "hey you"]);
    }

    #[tokio::test]
    async fn a_front_ends_user_gets_the_stored_history_and_a_regenerate_replaces_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["hey you", "one old cat", "two cats actually"]);
        let state = state(model.clone(), dir.path());
        let hi = json!({"messages": [{"role": "user", "content": "hi"}], "user": "fan-7"});
        let (status, out) = call(&state, "POST", "/v1/chat/completions", Some(hi)).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        // Open WebUI names the fan in a header; the front end's copy of the conversation is
        // not imported, the stored one is used.
        let pets = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "an edited reply the server never sent"},
            {"role": "user", "content": "pets?"}]});
        let (status, headers, _) = call_with(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(pets.clone()),
            &[("x-openwebui-user-id", "fan-7")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("idempotent-replayed").is_none());
        let prompt = crate::answer::prompt::to_text(&model.calls()[1].prompt);
        assert!(prompt.contains("YOU: hey you"), "{prompt}");
        assert!(!prompt.contains("edited reply"), "{prompt}");
        let (_, history) = call(&state, "GET", "/v1/fans/fan-7/messages", None).await;
        assert_eq!(contents(&history), ["hi", "hey you", "pets?", "one old cat"]);

        let (_, _, out) = call_with(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(pets),
            &[("x-openwebui-user-id", "fan-7")],
        )
        .await;
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "two cats actually");
        let (_, history) = call(&state, "GET", "/v1/fans/fan-7/messages", None).await;
        assert_eq!(
            contents(&history),
            ["hi", "hey you", "pets?", "two cats actually"],
            "the regenerated reply replaced the stored one"
        );
        let (status, _) = call(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(json!({"messages": [{"role": "user", "content": "hi"}], "user": "\u{7}"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_stores_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["first answer", "second answer"]);
        let state = state(model.clone(), dir.path());
        let body = json!({"fan_id": "ana", "message": "hi"});
        let key = [("idempotency-key", "req-1")];
        let (s1, h1, b1) = call_with(&state, "POST", "/v1/reply", Some(body.clone()), &key).await;
        let (s2, h2, b2) = call_with(&state, "POST", "/v1/reply", Some(body), &key).await;
        assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
        let (b1, b2): (Value, Value) = (
            serde_json::from_slice(&b1).unwrap(),
            serde_json::from_slice(&b2).unwrap(),
        );
        assert_eq!(
            (b1["reply"].as_str(), b2["reply"].as_str()),
            (Some("first answer"), Some("first answer"))
        );
        assert!(h1.get("idempotent-replayed").is_none());
        assert_eq!(h2["idempotent-replayed"], "true");
        assert_eq!(model.calls().len(), 1, "the retry asked no model");
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(contents(&history), ["hi", "first answer"]);
    }

    #[tokio::test]
    async fn concurrent_messages_of_one_fan_are_stored_as_whole_exchanges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["r1", "r2", "r3"]);
        let state = state(model, dir.path());
        let mut tasks = Vec::new();
        for i in 1..=3 {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                call(
                    &state,
                    "POST",
                    "/v1/reply",
                    Some(json!({"fan_id": "ana", "message": format!("m{i}")})),
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0, StatusCode::OK);
        }
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        let c = contents(&history);
        assert_eq!(c.len(), 6);
        for pair in c.chunks(2) {
            assert!(pair[0].starts_with('m') && pair[1].starts_with('r'), "{c:?}");
        }
    }

    #[tokio::test]
    async fn requests_waiting_for_their_fans_turn_fill_the_queue_so_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["r0", "r1", "r2", "r3", "r4", "r5"]);
        let state = state(model, dir.path());
        let dee = json!({"fan_id": "dee", "message": "hi"});
        let key = [("idempotency-key", "k1")];
        let (status, _, first) = call_with(&state, "POST", "/v1/reply", Some(dee.clone()), &key).await;
        assert_eq!(status, StatusCode::OK);
        // Two fans' turns are held, so their requests wait, admitted, for as long as we like.
        let held = (
            state.fans.enter("Wren", "ana").await,
            state.fans.enter("Wren", "cy").await,
        );
        let mut tasks = Vec::new();
        for fan in ["ana", "ana", "cy", "cy"] {
            let state = state.clone();
            tasks.push(tokio::spawn(async move {
                call(
                    &state,
                    "POST",
                    "/v1/reply",
                    Some(json!({"fan_id": fan, "message": "hi"})),
                )
                .await
            }));
        }
        let filled = tokio::time::timeout(Duration::from_secs(10), async {
            while state.queue.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        });
        assert!(filled.await.is_ok(), "the four waiting requests hold the queue");
        let (status, headers, _) = call_with(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"fan_id": "bo", "message": "hi"})),
            &[],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue (4) is full of waiters"
        );
        assert_eq!(headers["retry-after"], "1");
        // A retry whose answer is stored is replayed even now: it costs one read.
        let (status, headers, again) = call_with(&state, "POST", "/v1/reply", Some(dee), &key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(again, first);
        drop(held);
        for t in tasks {
            assert_eq!(t.await.unwrap().0, StatusCode::OK);
        }
        let (status, _) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"fan_id": "bo", "message": "hi"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "answered again once the queue drains");
    }

    #[tokio::test]
    async fn two_creators_are_chosen_by_model_and_keep_separate_histories() {
        let dir = tempfile::tempdir().unwrap();
        let model = Scripted::new(&["wren here", "ivy here"]);
        let state = state_with(model.clone(), dir.path(), vec![named("Wren"), named("Ivy")]);
        let (_, models) = call(&state, "GET", "/v1/models", None).await;
        let ids: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, ["Ivy", "Wren"]);
        let ask = |model: &str| json!({"model": model, "user": "ana", "messages": [{"role": "user", "content": "hi"}]});
        let (status, _) = call(&state, "POST", "/v1/chat/completions", Some(ask("wren"))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"creator": "Ivy", "fan_id": "ana", "message": "hi"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(crate::answer::prompt::to_text(&model.calls()[1].prompt).contains("Ivy"));
        let (_, wren) = call(&state, "GET", "/v1/fans/ana/messages?creator=Wren", None).await;
        let (_, ivy) = call(&state, "GET", "/v1/fans/ana/messages?creator=Ivy", None).await;
        assert_eq!(
            (contents(&wren), contents(&ivy)),
            (
                vec!["hi".to_string(), "wren here".into()],
                vec!["hi".to_string(), "ivy here".into()]
            )
        );

        let (status, err) = call(&state, "POST", "/v1/chat/completions", Some(ask("Nobody"))).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("model_not_found"))
        );
        let (status, err) = call(
            &state,
            "POST",
            "/v1/reply",
            Some(json!({"fan_id": "ana", "message": "hi"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains("Ivy, Wren"),
            "{err}"
        );
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

    #[tokio::test]
    async fn in_review_mode_only_an_approved_text_enters_the_history_and_a_blocked_edit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = reviewing(
            Scripted::new(&["mm tea and rain, you?", "mm still here"]),
            dir.path(),
        );
        let ask = json!({"fan_id": "ana", "message": "what are you up to"});
        let key = [("idempotency-key", "k-1")];
        let (status, headers, bytes) = call_with(&state, "POST", "/v1/reply", Some(ask.clone()), &key).await;
        let draft: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{draft}");
        assert!(headers.get("idempotent-replayed").is_none());
        assert_eq!(
            (draft["status"].as_str(), draft["draft"].as_str()),
            (Some("pending"), Some("mm tea and rain, you?"))
        );
        assert!(
            !draft["answer"]["filter"]["output"].as_array().unwrap().is_empty(),
            "{draft}"
        );
        assert!(
            draft["answer"]["demos"].is_array() && draft["answer"]["style"].is_number(),
            "{draft}"
        );
        let id = draft["draft_id"].as_str().unwrap().to_string();
        let (status, headers, bytes) = call_with(&state, "POST", "/v1/reply", Some(ask), &key).await;
        let again: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (status, again["draft_id"].as_str()),
            (StatusCode::ACCEPTED, Some(id.as_str()))
        );
        assert_eq!(headers["idempotent-replayed"], "true");

        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(
            contents(&history),
            ["what are you up to"],
            "the draft is not sent"
        );
        let (_, pending) = call(&state, "GET", "/v1/drafts", None).await;
        assert_eq!(pending["data"].as_array().unwrap().len(), 1);
        let (_, fans) = call(&state, "GET", "/v1/fans", None).await;
        assert_eq!(fans["data"][0]["pending_drafts"], 1);
        assert_eq!(fans["data"][0]["returning"], false, "one message, no silence");
        let profile = json!({"name": "Ana", "likes": ["rain"]});
        let (status, _) = call(&state, "PUT", "/v1/fans/ana/profile", Some(profile.clone())).await;
        assert_eq!(status, StatusCode::OK);
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(history["profile"], profile);
        let (status, _) = call(
            &state,
            "PUT",
            "/v1/fans/ana/profile",
            Some(json!(["not", "an object"])),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let approve = format!("/v1/drafts/{id}/approve");
        let edit = json!({"text": "add me on snapchat babe, my handle is wren_tea"});
        let (status, body) = call(&state, "POST", &approve, Some(edit)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["type"], "blocked_reply");
        assert_eq!(body["error"]["verdict"]["blocked"], true, "{body}");
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(contents(&history).len(), 1, "a blocked edit stores nothing");

        let (status, body) = call(
            &state,
            "POST",
            &approve,
            Some(json!({"text": "mm that sounds lovely"})),
        )
        .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("approved")),
            "{body}"
        );
        let (status, body) = call(&state, "POST", &approve, Some(json!({}))).await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("draft_decided"))
        );
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(
            contents(&history),
            ["what are you up to", "mm that sounds lovely"],
            "one history entry"
        );
        let (_, pending) = call(&state, "GET", "/v1/drafts", None).await;
        assert!(pending["data"].as_array().unwrap().is_empty());
        let (status, _) = call(&state, "POST", "/v1/drafts/dr_nope/reject", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // A streamed completion is a draft too: nothing streams to the fan before approval.
        let streamed =
            json!({"messages": [{"role": "user", "content": "still there?"}], "user": "ana", "stream": true});
        let (status, headers, bytes) =
            call_with(&state, "POST", "/v1/chat/completions", Some(streamed), &[]).await;
        let draft: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::ACCEPTED, "{draft}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(
            (draft["status"].as_str(), draft["fan_message"].as_str()),
            (Some("pending"), Some("still there?"))
        );
        let anonymous = json!({"messages": [{"role": "user", "content": "hi"}]});
        let (status, _) = call(&state, "POST", "/v1/chat/completions", Some(anonymous)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "review mode needs the fan");
        let (_, history) = call(&state, "GET", "/v1/fans/ana/messages", None).await;
        assert_eq!(
            contents(&history).len(),
            3,
            "the streamed draft stored only the fan's message"
        );
    }

    #[tokio::test]
    async fn a_draft_is_refused_once_its_fan_was_handed_off_or_wrote_again_and_regenerates_supersede() {
        let dir = tempfile::tempdir().unwrap();
        let state = reviewing(Scripted::new(&["hey you"; 6]), dir.path());
        let say = |fan: &str, text: &str| json!({"fan_id": fan, "message": text});
        let draft = |body: &Value| body["draft_id"].as_str().unwrap().to_string();

        let (_, first) = call(&state, "POST", "/v1/reply", Some(say("bo", "hi"))).await;
        let (status, second) = call(&state, "POST", "/v1/reply", Some(say("bo", "hello??"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{second}");
        let (status, body) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/approve", draft(&first)),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("draft_stale")),
            "{body}"
        );
        let (status, body) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/regenerate", draft(&first)),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("draft_stale")),
            "a stale draft is not regenerated either: {body}"
        );
        let (status, fresh) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/regenerate", draft(&second)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{fresh}");
        assert_ne!(draft(&fresh), draft(&second));
        let (status, body) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/approve", draft(&second)),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("draft_decided"))
        );
        let (status, _) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/approve", draft(&fresh)),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, history) = call(&state, "GET", "/v1/fans/bo/messages", None).await;
        assert_eq!(
            contents(&history),
            ["hi", "hello??", "hey you"],
            "a regenerate stores the fan's message once"
        );

        let (_, early) = call(&state, "POST", "/v1/reply", Some(say("kid", "hey"))).await;
        let (status, notice) = call(&state, "POST", "/v1/reply", Some(say("kid", "i'm 15 btw"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(notice["answer"]["handoff"]["category"], "minor", "{notice}");
        let (status, body) = call(
            &state,
            "POST",
            &format!("/v1/drafts/{}/approve", draft(&early)),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("fan_handed_off")),
            "{body}"
        );
        let edited = json!({"text": "aw you seem older"});
        let notice_path = format!("/v1/drafts/{}/approve", draft(&notice));
        let (status, body) = call(&state, "POST", &notice_path, Some(edited)).await;
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (StatusCode::CONFLICT, Some("fan_handed_off")),
            "a handoff's notice cannot be edited into something else: {body}"
        );
        let (status, _) = call(&state, "POST", &notice_path, None).await;
        assert_eq!(status, StatusCode::OK, "the handoff's own notice may be sent");
        let (_, history) = call(&state, "GET", "/v1/fans/kid/messages", None).await;
        let stored = contents(&history);
        assert_eq!(stored.len(), 3, "{stored:?}");
        assert_eq!(stored[2], notice["draft"].as_str().unwrap());
    }

    #[tokio::test]
    async fn the_console_is_served_only_when_asked_with_a_strict_policy() {
        let dir = tempfile::tempdir().unwrap();
        let plain = state(Scripted::new(&["hi"]), dir.path());
        let (status, _, _) = call_with(&plain, "GET", "/", None, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = call(&plain, "GET", "/v1/console", None).await;
        assert_eq!((status, body["review"].as_bool()), (StatusCode::OK, Some(false)));

        let dir = tempfile::tempdir().unwrap();
        let console = reviewing(Scripted::new(&["hi"]), dir.path());
        for (path, kind) in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ] {
            let (status, headers, bytes) = call_with(&console, "GET", path, None, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                headers["content-type"].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            assert_eq!(headers["content-security-policy"], console::CSP);
            assert_eq!(headers["x-frame-options"], "DENY");
            assert!(!bytes.is_empty(), "{path}");
        }
        let (_, _, page) = call_with(&console, "GET", "/", None, &[]).await;
        let page = String::from_utf8(page).unwrap();
        assert!(
            !page.contains("<script>") && !page.contains(" style=\"") && !page.contains(" onclick="),
            "no inline code"
        );
        let request = Request::builder().uri("/v1/console").body(Body::empty()).unwrap();
        let response = router(console.clone()).oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "the page's API needs the token"
        );
    }
}
