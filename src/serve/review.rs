//! Review mode (`serve --review`): the persona drafts, a person decides.
//!
//! Owns the drafts API: `GET /v1/drafts`, `POST /v1/drafts/{id}/approve` (with an optional edited
//! `text`), `/reject` and `/regenerate`, and how a fan's turn ends in review mode: the fan's
//! message is stored with a pending draft (one transaction) and the request gets `202` with the
//! draft instead of a reply. Only an approved text enters the history, and an edited one passes
//! the same output filter as a draft, judged with the fan's message; a blocked edit is refused
//! with its verdict. Deciding is one transaction under the rules of
//! [`crate::history::drafts::refusal`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::exchange::{self, Outcome};
use super::fan_turns::Turn;
use super::limits::authorize;
use super::AppState;
use crate::answer::{self, Answer, Persona};
use crate::conversation::{FanProfile, Message};
use crate::history::{drafts, Decision, DraftStatus, FanRef, NewDraft, Refusal, StoredDraft};
use crate::llm::ChatModel;

/// What the end of a fan's turn stores in review mode, besides the draft.
pub(super) struct Ending<'a> {
    /// The fan's message answered.
    pub message: &'a Message,
    /// A profile the request carried.
    pub profile: Option<&'a FanProfile>,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
    /// The pending draft a regenerate replaces.
    pub regenerates: Option<&'a str>,
}

/// Ends a fan's turn in review mode: stores the fan's message (unless regenerating) and the
/// answer as a pending draft, with its handoff and idempotent response, in one transaction;
/// the fan's turn is released after the commit. Returns the draft, for a `202`.
pub(super) async fn store_draft<M: Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    turn: Turn,
    persona: &Persona,
    fan_id: &str,
    answer: Answer,
    ending: Ending<'_>,
) -> Result<Outcome, ApiError> {
    let value = serde_json::to_value(&answer).map_err(|e| ApiError::from_pipeline(e.into()))?;
    let mut why = value.clone();
    why["style"] = json!(persona.profile().score(answer.reply.as_str()).style);
    let created_at = Timestamp::now();
    let view = StoredDraft {
        draft_id: drafts::new_id(),
        creator: persona.creator().to_string(),
        fan_id: fan_id.to_string(),
        fan_message: ending.message.content.clone(),
        created_at: created_at.to_string(),
        status: DraftStatus::Pending,
        draft: answer.reply.as_str().to_string(),
        reply: None,
        answer: why,
        message_id: 0,
        handoff_reply: answer.handoff.is_some(),
    };
    let response = serde_json::to_value(&view).map_err(|e| ApiError::from_pipeline(e.into()))?;
    let (response_text, answer_text) = (response.to_string(), view.answer.to_string());
    let message = ending.message.clone();
    let profile = ending.profile.cloned();
    let key = ending.idempotency_key.map(str::to_string);
    let regenerates = ending.regenerates.map(str::to_string);
    let (creator, fan_id, id) = (view.creator.clone(), view.fan_id.clone(), view.draft_id.clone());
    state
        .with_store(move |store| {
            let _turn = turn;
            let draft = NewDraft {
                id: &id,
                fan_message: &message,
                draft: &answer.reply,
                answer: &answer_text,
                created_at,
                handoff: answer.handoff.as_ref(),
                idempotency: key.as_deref().map(|k| (k, response_text.as_str())),
                profile: profile.as_ref(),
                regenerates: regenerates.as_deref(),
            };
            match store.record_draft(FanRef::new(&creator, &fan_id), &draft) {
                Ok(()) => Ok(Ok(())),
                Err(e) => match e.downcast_ref::<drafts::Conflict>() {
                    Some(conflict) => Ok(Err(conflict.0)),
                    None => Err(e),
                },
            }
        })
        .await?
        .map_err(|refusal| refused(ending.regenerates.unwrap_or_default(), refusal))?;
    Ok(Outcome {
        answer: response,
        replayed: false,
        draft: true,
    })
}

/// The `202 Accepted` response carrying a draft.
pub(super) fn accepted(draft: Value) -> Response {
    (StatusCode::ACCEPTED, Json(draft)).into_response()
}

/// The query of `GET /v1/drafts`.
#[derive(Deserialize)]
pub(super) struct DraftsQuery {
    #[serde(default)]
    creator: Option<String>,
    #[serde(default)]
    fan_id: Option<String>,
}

/// `GET /v1/drafts`: pending drafts, oldest first; `?creator=` and `?fan_id=` narrow them.
pub(super) async fn list<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Query(q): Query<DraftsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let creator = super::handlers::creator_filter(&state, q.creator.as_deref())?;
    let fan = q.fan_id;
    let pending = state
        .with_store(move |store| store.pending_drafts(creator.as_deref(), fan.as_deref()))
        .await?;
    Ok(Json(json!({"object": "list", "data": pending})))
}

/// The body of `POST /v1/drafts/{id}/approve`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The reply to send instead of the draft: a person's edit.
    #[serde(default)]
    pub text: Option<String>,
}

/// The body of an approval: empty (approve the draft as it is) or an [`ApproveRequest`].
pub fn approve_request(body: &[u8]) -> Result<ApproveRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApproveRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be empty or {{\"text\": \"the edited reply\"}}: {e}"
        ))
    })
}

/// `POST /v1/drafts/{id}/approve`: sends the draft, or the person's edit of it once the filter
/// passes it, into the history.
pub(super) async fn approve<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let req = approve_request(&body)?;
    let draft = find(&state, &id).await?;
    let persona = state.creators.select(Some(&draft.creator))?;
    let text = match req.text {
        Some(text) => {
            answer::check_message(&text).map_err(|e| ApiError::bad_request(format!("text: {e}")))?;
            text.trim().to_string()
        }
        None => draft.draft.clone(),
    };
    let (fan_message, checking) = (draft.fan_message.clone(), persona.clone());
    // The filter embeds the text: CPU work, off the async workers.
    let checked = tokio::task::spawn_blocking(move || checking.check_edit(&text, &fan_message))
        .await
        .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("check task failed: {e}")))?
        .map_err(ApiError::from_pipeline)?;
    let reply = match checked {
        Ok(reply) => reply,
        Err(verdict) => {
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "blocked_reply",
                format!(
                    "the reply is blocked by the filter ({}: {}); edit it and approve again",
                    verdict.category.as_deref().unwrap_or("blocked"),
                    verdict.reason
                ),
            );
            e.detail = Some(Box::new(("verdict", json!(verdict))));
            return Err(e);
        }
    };
    decide(&state, &draft, Some(reply)).await.map(Json)
}

/// `POST /v1/drafts/{id}/reject`: the draft is not sent.
pub(super) async fn reject<M: Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    let draft = find(&state, &id).await?;
    decide(&state, &draft, None).await.map(Json)
}

/// Stores a decision on `draft`: an approval with its clean reply, or a rejection. It waits for
/// the fan's turn, so a fan message still being answered on this server is stored first, and
/// the draft it makes stale is refused.
async fn decide<M: Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    draft: &StoredDraft,
    reply: Option<answer::refine::CleanReply>,
) -> Result<Value, ApiError> {
    let (id, shown) = (draft.draft_id.clone(), draft.draft_id.clone());
    let turn = state.fans.enter(&draft.creator, &draft.fan_id).await;
    let decided = state
        .with_store(move |store| {
            let _turn = turn;
            let decision = match &reply {
                Some(reply) => Decision::Approve(reply),
                None => Decision::Reject,
            };
            store.decide_draft(&id, decision, Timestamp::now())
        })
        .await?;
    match decided {
        Ok(draft) => serde_json::to_value(&draft).map_err(|e| ApiError::from_pipeline(e.into())),
        Err(refusal) => Err(refused(&shown, refusal)),
    }
}

/// The response to a refused decision.
fn refused(id: &str, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotFound => no_such_draft(id),
        Refusal::Decided(status) => ApiError::new(
            StatusCode::CONFLICT,
            "draft_decided",
            format!("the draft `{id}` is {} already", status.as_str()),
        ),
        Refusal::HandedOff => ApiError::new(
            StatusCode::CONFLICT,
            "fan_handed_off",
            format!(
                "the fan of draft `{id}` was handed to a human after it was made; read the handoff (GET /v1/handoffs) and reply yourself"
            ),
        ),
        Refusal::Stale => ApiError::new(
            StatusCode::CONFLICT,
            "draft_stale",
            format!("the fan wrote again since draft `{id}` was made; reject it and answer the newest message"),
        ),
    }
}

fn no_such_draft(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no draft `{id}`"))
}

/// A draft by id, or 404.
async fn find<M: Send + Sync + 'static>(state: &Arc<AppState<M>>, id: &str) -> Result<StoredDraft, ApiError> {
    let key = id.to_string();
    state
        .with_store(move |store| store.draft(&key))
        .await?
        .ok_or_else(|| no_such_draft(id))
}

/// `POST /v1/drafts/{id}/regenerate`: a new draft for the same fan message; the old one is
/// superseded. Refused like an approval when the draft is decided or the fan wrote again.
pub(super) async fn regenerate<M: ChatModel + Send + Sync + 'static>(
    State(state): State<Arc<AppState<M>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(state.options.token.as_deref(), &headers)?;
    if !state.options.review {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "review_off",
            "this server does not run in review mode (serve --review): it makes no drafts; approve or reject the ones left",
        ));
    }
    let found = find(&state, &id).await?;
    let persona = state.creators.select(Some(&found.creator))?;
    let admitted = exchange::admit(&state)?;
    let turn = state.fans.enter(&found.creator, &found.fan_id).await;
    // Read again under the fan's turn: it may have been decided while this request waited.
    let old = find(&state, &id).await?;
    if old.status != DraftStatus::Pending {
        return Err(refused(&id, Refusal::Decided(old.status)));
    }
    let (c, f) = (old.creator.clone(), old.fan_id.clone());
    let (history, profile, handoff) = state
        .with_store(move |store| {
            let fan = FanRef::new(&c, &f);
            let (history, profile) = store.load(fan)?;
            Ok((history, profile, store.stopping_handoff(fan)?))
        })
        .await?;
    // The fan's message is the newest stored one, else the fan wrote again since.
    let Some(message) = history
        .last()
        .filter(|m| !m.from_creator && m.content == old.fan_message)
        .cloned()
    else {
        return Err(refused(&id, Refusal::Stale));
    };
    let sampling = super::handlers::sampling(&state, None)?;
    let answer = super::within(
        state.options.request_timeout,
        exchange::answer(
            &state,
            &admitted,
            persona.clone(),
            history,
            profile,
            handoff,
            sampling,
        ),
    )
    .await?;
    let ending = Ending {
        message: &message,
        profile: None,
        idempotency_key: None,
        regenerates: Some(&id),
    };
    let outcome = store_draft(&state, turn, &persona, &old.fan_id, answer, ending).await?;
    Ok(accepted(outcome.answer))
}
