//! The route handlers: thin callers of the answer pipeline for HTTP clients.
//!
//! Each handler authorizes, reads and checks its body, and hands the work to [`super::exchange`]
//! (a fan's turn against the stored history) or the store; the OpenAI route is in
//! [`super::openai`]. Store work runs off the async workers.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::{json_body, ApiError};
use super::exchange::{self, Incoming};
use super::limits::authorize;
use super::AppState;
use crate::answer::{self, Sampling};
use crate::conversation::{FanProfile, Message};
use crate::history::{self, FanRef};
use crate::llm::ChatModel;

/// The sampling a request asks for, validated.
pub(super) fn sampling<M>(state: &AppState<M>, n: Option<u32>) -> Result<Sampling, ApiError> {
    Ok(Sampling::new(
        n.unwrap_or(1),
        state.options.temperature,
        state.options.seed,
    )?)
}

/// The request's `Idempotency-Key`, checked: 1 to 255 printable ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= 255 => Ok(Some(key.trim().to_string())),
        _ => Err(ApiError::bad_request(
            "the Idempotency-Key header must be 1 to 255 printable ASCII characters",
        )),
    }
}

/// The body of `POST /v1/reply`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    pub fan_id: String,
    pub message: String,
    #[serde(default)]
    creator: Option<String>,
    #[serde(default)]
    sent_at: Option<Timestamp>,
    #[serde(default)]
    fan: Option<FanProfile>,
    #[serde(default)]
    pub n: Option<u32>,
}

/// `POST /v1/reply`: answers a fan from their stored history and stores the exchange; in review
/// mode, stores the fan's message with a draft and answers `202` with the draft.
pub(super) async fn reply<M: ChatModel + Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    body: Result<Json<ReplyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let req = json_body(body)?;
    history::check_fan_id(&req.fan_id).map_err(|e| ApiError::bad_request(format!("fan_id: {e}")))?;
    answer::check_message(&req.message)?;
    let persona = state.creators.select(req.creator.as_deref())?;
    let sampling = sampling(&state, req.n)?;
    let key = idempotency_key(&headers)?;
    let incoming = Incoming {
        message: Message {
            from_creator: false,
            content: req.message.trim().to_string(),
            sent_at: Some(req.sent_at.unwrap_or_else(Timestamp::now)),
        },
        fan_id: req.fan_id,
        profile: req.fan,
        sampling,
        idempotency_key: key,
        sent: None,
    };
    let budget = state.options.request_timeout * req.n.unwrap_or(1).max(1);
    let outcome = super::within(budget, exchange::run(&state, persona, incoming)).await?;
    let mut response = match outcome.draft {
        true => super::review::accepted(outcome.answer),
        false => Json(outcome.answer).into_response(),
    };
    exchange::mark_replayed(&mut response, outcome.replayed);
    Ok(response)
}

/// The `?creator=` of the fan routes: which creator's fans, when the server has several.
#[derive(Deserialize)]
pub(super) struct CreatorQuery {
    #[serde(default)]
    creator: Option<String>,
}

/// The creator a listing is narrowed to (`?creator=`, checked), or every creator.
pub(super) fn creator_filter<M>(state: &AppState<M>, name: Option<&str>) -> Result<Option<String>, ApiError> {
    name.map(|n| Ok(state.creators.select(Some(n))?.creator().to_string()))
        .transpose()
}

/// `GET /v1/models`: the creators this server speaks as.
pub(super) async fn models<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let data: Vec<Value> = state
        .creators
        .all()
        .iter()
        .map(|p| {
            json!({
                "id": p.creator(),
                "object": "model",
                "created": p.artifact.manifest.created_at.parse::<Timestamp>().map_or(0, |t| t.as_second()),
                "owned_by": "persona",
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

fn no_such_fan(fan: FanRef<'_>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no {fan}"))
}

/// `GET /v1/fans/{id}/messages`: a fan's stored history and profile.
pub(super) async fn fan_messages<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
    Query(q): Query<CreatorQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let creator = state.creators.select(q.creator.as_deref())?.creator().to_string();
    let (c, f) = (creator.clone(), fan_id.clone());
    let found = state
        .with_store(move |store| {
            let fan = FanRef::new(&c, &f);
            if !store.exists(fan)? {
                return Ok(None);
            }
            store.load(fan).map(Some)
        })
        .await?;
    let Some((messages, profile)) = found else {
        return Err(no_such_fan(FanRef::new(&creator, &fan_id)));
    };
    Ok(Json(json!({
        "creator": creator,
        "fan_id": fan_id,
        "profile": profile,
        "messages": messages,
    })))
}

/// `GET /v1/fans`: the fans (of `?creator=` when given), most recently active first, with their
/// last message, open handoffs, whether they came back after a silence, and pending drafts.
pub(super) async fn fans<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Query(q): Query<CreatorQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let creator = creator_filter(&state, q.creator.as_deref())?;
    let fans = state
        .with_store(move |store| store.fans(creator.as_deref()))
        .await?;
    let data: Vec<Value> = fans
        .into_iter()
        .map(|f| {
            let time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
            let returning = match (time(&f.last_at), time(&f.previous_at)) {
                (Some(last), Some(previous)) => {
                    last.as_second() - previous.as_second() >= answer::context::SESSION_GAP_SECONDS
                }
                _ => false,
            };
            let mut row = json!(f);
            row["returning"] = json!(returning);
            row
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `PUT /v1/fans/{id}/profile`: replaces a fan's profile (creating the fan if needed).
pub(super) async fn set_profile<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
    Query(q): Query<CreatorQuery>,
    body: Result<Json<FanProfile>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let profile = json_body(body)?;
    history::check_fan_id(&fan_id).map_err(|e| ApiError::bad_request(format!("fan id: {e}")))?;
    let creator = state.creators.select(q.creator.as_deref())?.creator().to_string();
    let (c, f, p) = (creator.clone(), fan_id.clone(), profile.clone());
    state
        .with_store(move |store| store.set_profile(FanRef::new(&c, &f), &p))
        .await?;
    Ok(Json(
        json!({"creator": creator, "fan_id": fan_id, "profile": profile}),
    ))
}

/// `GET /v1/handoffs`: every fan waiting for a human, oldest first; `?creator=` narrows it.
pub(super) async fn handoffs<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Query(q): Query<CreatorQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let creator = creator_filter(&state, q.creator.as_deref())?;
    let open = state
        .with_store(move |store| store.all_open_handoffs(creator.as_deref()))
        .await?;
    let data: Vec<Value> = open
        .into_iter()
        .map(|(creator, fan_id, h)| json!({"creator": creator, "fan_id": fan_id, "handoff": h}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `DELETE /v1/fans/{id}/handoff`: a human has taken over; the persona answers the fan again.
pub(super) async fn clear_handoff<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(fan_id): Path<String>,
    Query(q): Query<CreatorQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let creator = state.creators.select(q.creator.as_deref())?.creator().to_string();
    let (c, f) = (creator.clone(), fan_id.clone());
    let cleared = state
        .with_store(move |store| store.clear_handoff(FanRef::new(&c, &f), Timestamp::now()))
        .await?;
    match cleared {
        Some(n) => Ok(Json(json!({"creator": creator, "fan_id": fan_id, "cleared": n}))),
        None => Err(no_such_fan(FanRef::new(&creator, &fan_id))),
    }
}

/// `GET /healthz`: the creators served and whether the LLM answers (probed at most every few
/// seconds, however often this is called).
pub(super) async fn healthz<M: Send + Sync + 'static>(State(state): State<Arc<AppState<M>>>) -> Json<Value> {
    let llm = state.llm_reachable().await;
    let creators: Vec<Value> = state
        .creators
        .all()
        .iter()
        .map(|p| {
            let m = &p.artifact.manifest;
            json!({
                "creator": p.creator(),
                "examples": m.examples,
                "embedding": m.embedding.model_id,
                "created_at": m.created_at,
                "persona_version": m.persona_version,
                // The embedding model is shared: its counters cover every creator.
                "embedding_counters": p.embed_stats(),
            })
        })
        .collect();
    Json(json!({
        "status": if llm { "ok" } else { "degraded" },
        "llm_reachable": llm,
        "creators": creators,
    }))
}

/// Any other path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
