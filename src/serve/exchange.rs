//! One fan turn against the stored history: the order every answering route follows.
//!
//! The fan's rate limit is counted first, then the request is admitted to the queue or refused at
//! once with 503, before any store or embedding work, so an overloaded server spends nothing on
//! requests it will not answer (a refused retry whose answer is stored gets it replayed). A fan's turns run one at a time, in arrival order (per creator and fan); under that turn the
//! history is loaded, a retried request with a known `Idempotency-Key` gets the first answer
//! back, the pipeline answers within the queue and concurrency limits, and the fan's message,
//! the reply, any handoff and the idempotent response are stored in one transaction. Nothing is
//! stored before the reply exists, so a request refused with 429/503 or timed out before the
//! model answered leaves no trace. The fan's turn is released only after the commit, even when
//! the client has gone: the next message of that fan always sees this exchange. In review mode
//! the turn ends with a pending draft instead of a reply (see [`super::review`]).

use std::sync::Arc;

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::errors::ApiError;
use super::AppState;
use crate::answer::{Answer, DemoMode, Persona, Sampling, Turn};
use crate::conversation::{FanProfile, Message};
use crate::history::{Exchange, FanRef};
use crate::llm::ChatModel;
use crate::safety::Handoff;

/// A fan's new message, as a route received it.
pub(super) struct Incoming {
    /// The fan's id.
    pub fan_id: String,
    /// The fan's message, with the time it was sent.
    pub message: Message,
    /// A profile the request carries; it replaces the stored one.
    pub profile: Option<FanProfile>,
    /// How many candidates, at what temperature.
    pub sampling: Sampling,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The conversation a front end sent along (the OpenAI route), to tell a regenerate from a
    /// new message.
    pub sent: Option<Vec<Message>>,
}

/// The answer to a turn, as stored: what `/v1/reply` returns and chat completions render.
pub(super) struct Outcome {
    /// The [`Answer`] as JSON.
    pub answer: Value,
    /// Whether it is the stored answer to an earlier request with the same idempotency key.
    pub replayed: bool,
    /// Whether it is a pending draft (review mode), answered with `202`.
    pub draft: bool,
}

/// Runs a fan's turn: see the module documentation for the order.
pub(super) async fn run<M: ChatModel + Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    persona: Arc<Persona>,
    incoming: Incoming,
) -> Result<Outcome, ApiError> {
    let creator = persona.creator().to_string();
    state.rates.check(
        &format!("fan\u{1f}{creator}\u{1f}{}", incoming.fan_id),
        state.options.rate_per_minute,
        &format!("fan `{}`", incoming.fan_id),
    )?;
    let admitted = match admit(state) {
        Ok(admitted) => admitted,
        // A retry whose answer is already stored is answered from the store even when the
        // queue is full: replaying costs one read, and the client was told to retry.
        Err(refused) => return replay_or(state, &creator, &incoming, refused).await,
    };
    let turn = state.fans.enter(&creator, &incoming.fan_id).await;
    let (c, f, key) = (
        creator.clone(),
        incoming.fan_id.clone(),
        incoming.idempotency_key.clone(),
    );
    let (stored, stored_profile, handoff, replay) = state
        .with_store(move |store| {
            let fan = FanRef::new(&c, &f);
            let replay = match &key {
                Some(key) => store.idempotent_response(fan, key)?,
                None => None,
            };
            let (history, profile) = store.load(fan)?;
            Ok((history, profile, store.stopping_handoff(fan)?, replay))
        })
        .await?;
    if let Some(response) = replay {
        return replayed(&response);
    }
    // In review mode a front end's regenerate is a new draft for the same message: the console's
    // regenerate (see `review`) replaces pending drafts.
    let regenerate = !state.options.review
        && incoming
            .sent
            .as_deref()
            .is_some_and(|sent| is_regenerate(&stored, sent));
    let mut history = stored;
    if regenerate {
        history.truncate(history.len().saturating_sub(2));
    }
    history.push(incoming.message.clone());
    let profile = incoming.profile.clone().or(stored_profile);
    let answer = answer(
        state,
        &admitted,
        persona.clone(),
        history,
        profile,
        handoff,
        incoming.sampling,
    )
    .await?;
    if state.options.review {
        let ending = super::review::Ending {
            message: &incoming.message,
            profile: incoming.profile.as_ref(),
            idempotency_key: incoming.idempotency_key.as_deref(),
            regenerates: None,
        };
        return super::review::store_draft(state, turn, &persona, &incoming.fan_id, answer, ending).await;
    }
    let value = serde_json::to_value(&answer).map_err(|e| ApiError::from_pipeline(e.into()))?;
    let response = value.to_string();
    state
        .with_store(move |store| {
            // The fan's turn ends with the commit, whatever happened to the request meanwhile.
            let _turn = turn;
            let fan = FanRef::new(&creator, &incoming.fan_id);
            let exchange = Exchange {
                profile: incoming.profile.as_ref(),
                handoff: answer.handoff.as_ref(),
                idempotency: incoming
                    .idempotency_key
                    .as_deref()
                    .map(|k| (k, response.as_str())),
                replaces_last: regenerate,
                ..Exchange::new(&incoming.message, &answer.reply, Timestamp::now())
            };
            store.record_exchange(fan, &exchange)
        })
        .await?;
    Ok(Outcome {
        answer: value,
        replayed: false,
        draft: false,
    })
}

/// The stored answer to a request's `Idempotency-Key`, if there is one; else `refused`.
async fn replay_or<M: ChatModel + Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    creator: &str,
    incoming: &Incoming,
    refused: ApiError,
) -> Result<Outcome, ApiError> {
    let Some(key) = incoming.idempotency_key.clone() else {
        return Err(refused);
    };
    let (c, f) = (creator.to_string(), incoming.fan_id.clone());
    let stored = state
        .with_store(move |store| store.idempotent_response(FanRef::new(&c, &f), &key))
        .await?;
    match stored {
        Some(response) => replayed(&response),
        None => Err(refused),
    }
}

/// The outcome of a replay from its stored response.
fn replayed(response: &str) -> Result<Outcome, ApiError> {
    let answer: Value = serde_json::from_str(response).map_err(|e| {
        ApiError::from_pipeline(anyhow::anyhow!("a stored idempotent response is unreadable: {e}"))
    })?;
    Ok(Outcome {
        draft: answer.get("draft_id").is_some(),
        answer,
        replayed: true,
    })
}

/// Marks a response that replays an earlier answer (`Idempotent-Replayed: true`).
pub(super) fn mark_replayed(response: &mut axum::response::Response, replayed: bool) {
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
}

/// Whether a front end's conversation asks again for the answer to the last stored fan message
/// (its "regenerate"): its last message repeats that message, and it holds one reply fewer than
/// the store, so the stored reply is the one being replaced.
pub(super) fn is_regenerate(stored: &[Message], sent: &[Message]) -> bool {
    let [.., fan, reply] = stored else {
        return false;
    };
    let Some(last) = sent.last().filter(|m| !m.from_creator) else {
        return false;
    };
    let replies = |h: &[Message]| h.iter().filter(|m| m.from_creator).count();
    !fan.from_creator
        && reply.from_creator
        && fan.content.trim() == last.content.trim()
        && replies(sent) + 1 == replies(stored)
}

/// A request's place in the queue of requests the server works on at once (`--max-queue`): held
/// from admission to the end of the request, and required to run the pipeline.
pub(super) struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Admits a request to the queue, or refuses it with 503 and `Retry-After` when the queue is full.
pub(super) fn admit<M>(state: &AppState<M>) -> Result<Admitted, ApiError> {
    let permit = state.queue.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests are waiting for the language model; retry shortly",
        );
        e.retry_after = Some(1);
        e
    })?;
    Ok(Admitted { _permit: permit })
}

/// Runs the pipeline for one fan turn of an admitted request, within the LLM concurrency limit.
pub(super) async fn answer<M: ChatModel + Send + Sync + 'static>(
    state: &Arc<AppState<M>>,
    _admitted: &Admitted,
    persona: Arc<Persona>,
    history: Vec<Message>,
    fan: Option<FanProfile>,
    handoff: Option<Handoff>,
    sampling: Sampling,
) -> Result<Answer, ApiError> {
    let now = history
        .last()
        .and_then(|m| m.sent_at)
        .unwrap_or_else(Timestamp::now);
    let prefill = state.options.prefill;
    let preparing = persona.clone();
    // Embedding is CPU work: keep it off the async workers.
    let prepared = tokio::task::spawn_blocking(move || {
        let turn = Turn {
            history: &history,
            fan: fan.as_ref(),
            now,
            prefill,
            demos: DemoMode::Nearest,
            handoff: handoff.as_ref(),
        };
        preparing.prepare(&turn)
    })
    .await
    .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("prepare task failed: {e}")))?
    .map_err(ApiError::from_pipeline)?;
    let _llm = state
        .llm
        .acquire()
        .await
        .map_err(|e| ApiError::from_pipeline(anyhow::anyhow!("{e}")))?;
    persona
        .answer(&state.model, &prepared, sampling)
        .await
        .map_err(ApiError::from_pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(from_creator: bool, text: &str) -> Message {
        Message {
            from_creator,
            content: text.into(),
            sent_at: None,
        }
    }

    #[test]
    fn a_regenerate_is_told_from_a_repeated_message() {
        let stored = vec![
            m(false, "hi"),
            m(true, "hey you"),
            m(false, "pets?"),
            m(true, "a cat"),
        ];
        let regenerate = vec![m(false, "hi"), m(true, "hey you"), m(false, "pets?")];
        assert!(is_regenerate(&stored, &regenerate));
        let asked_again = vec![
            m(false, "hi"),
            m(true, "hey you"),
            m(false, "pets?"),
            m(true, "a cat"),
            m(false, "pets?"),
        ];
        assert!(!is_regenerate(&stored, &asked_again), "the fan asked twice");
        let new = vec![m(false, "hi"), m(true, "hey you"), m(false, "dogs?")];
        assert!(!is_regenerate(&stored, &new));
        assert!(!is_regenerate(&[], &regenerate));
    }
}
