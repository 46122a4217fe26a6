//! Drafts of review mode: replies the persona wrote that wait for a person's decision.
//!
//! Owns what a draft is and the rules of deciding one, which every backend applies inside its
//! transaction: a draft is decided once (approved, rejected, or superseded by a regenerated
//! one); an approval is refused when the fan wrote again since the draft was made (the draft
//! answers an older message) or when the fan was handed to a human meanwhile (unless the draft
//! is that handoff's own notice, approved unedited). The fan's message enters the history when the draft is made;
//! the reply only when it is approved, and only as a [`CleanReply`].

use serde::Serialize;

use crate::answer::refine::CleanReply;
use crate::conversation::{FanProfile, Message};
use crate::safety::Handoff;

/// What recording a draft stores, in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct NewDraft<'a> {
    /// The draft's id (see [`new_id`]).
    pub id: &'a str,
    /// The fan's message it answers; stored in the history unless `regenerates` is set.
    pub fan_message: &'a Message,
    /// The reply proposed.
    pub draft: &'a CleanReply,
    /// Why: the answer as JSON (demos, context, verdicts, candidates).
    pub answer: &'a str,
    /// When the draft was made.
    pub created_at: jiff::Timestamp,
    /// The handoff the answer made, opened now: a person must see it whatever they decide.
    pub handoff: Option<&'a Handoff>,
    /// The request's idempotency key and the response to give a retry with that key.
    pub idempotency: Option<(&'a str, &'a str)>,
    /// A profile the request carried (replacing the fan's).
    pub profile: Option<&'a FanProfile>,
    /// The pending draft this one replaces (a regenerate): it becomes superseded, and the fan's
    /// message, already stored, is not stored again.
    pub regenerates: Option<&'a str>,
}

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftStatus {
    /// Waiting for a person.
    Pending,
    /// Sent: its reply is in the history.
    Approved,
    /// Not sent.
    Rejected,
    /// Replaced by a regenerated draft.
    Superseded,
}

impl DraftStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DraftStatus::Pending => "pending",
            DraftStatus::Approved => "approved",
            DraftStatus::Rejected => "rejected",
            DraftStatus::Superseded => "superseded",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "pending" => DraftStatus::Pending,
            "approved" => DraftStatus::Approved,
            "rejected" => DraftStatus::Rejected,
            "superseded" => DraftStatus::Superseded,
            other => anyhow::bail!("a stored draft has the unknown status `{other}`"),
        })
    }
}

/// A stored draft, as the drafts API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDraft {
    /// Its id.
    pub draft_id: String,
    /// The creator.
    pub creator: String,
    /// The fan.
    pub fan_id: String,
    /// The fan's message it answers.
    pub fan_message: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// Where it stands.
    pub status: DraftStatus,
    /// The reply the persona proposed.
    pub draft: String,
    /// The text sent, once approved (the draft or a person's edit of it).
    pub reply: Option<String>,
    /// Why: the answer as JSON.
    pub answer: serde_json::Value,
    /// The stored fan message's row, to tell whether the fan wrote again since.
    #[serde(skip)]
    pub message_id: i64,
    /// Whether the draft is the reply of the handoff its turn made.
    #[serde(skip)]
    pub handoff_reply: bool,
}

/// What a person decided.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// Send this reply (the draft or an edit, checked by the filter).
    Approve(&'a CleanReply),
    /// Do not send anything.
    Reject,
}

/// Why a decision was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such draft.
    NotFound,
    /// It was decided already.
    Decided(DraftStatus),
    /// The fan was handed to a human after the draft was made.
    HandedOff,
    /// The fan wrote again since: the draft answers an older message.
    Stale,
}

/// A draft write refused by the rules (a regenerate of a draft that was decided meanwhile, or whose
/// fan wrote again): the error a store's `record_draft` returns, for the caller to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict(pub Refusal);

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the draft cannot be regenerated: {:?}", self.0)
    }
}

impl std::error::Error for Conflict {}

/// The rule for replacing a draft with a regenerated one, given its stored row (status and fan
/// message row) and the fan's newest stored message row: it must be pending and still answer the
/// newest message.
pub fn supersedable(row: Option<(String, i64)>, newest_message: i64) -> anyhow::Result<i64> {
    let Some((status, message_id)) = row else {
        return Err(Conflict(Refusal::NotFound).into());
    };
    let status = DraftStatus::parse(&status)?;
    if status != DraftStatus::Pending {
        return Err(Conflict(Refusal::Decided(status)).into());
    }
    if newest_message != message_id {
        return Err(Conflict(Refusal::Stale).into());
    }
    Ok(message_id)
}

/// The rule every backend applies before storing a decision, given the draft, the fan's newest
/// stored message row and whether the fan has an open handoff that stops the bot.
pub fn refusal(
    draft: &StoredDraft,
    decision: Decision<'_>,
    newest_message: i64,
    stopped: bool,
) -> Option<Refusal> {
    if draft.status != DraftStatus::Pending {
        return Some(Refusal::Decided(draft.status));
    }
    match decision {
        Decision::Reject => None,
        // A handoff is named first: it says a person must take over. While it is open, only the
        // handoff's own notice may be sent, unedited.
        Decision::Approve(reply) if stopped && (!draft.handoff_reply || reply.as_str() != draft.draft) => {
            Some(Refusal::HandedOff)
        }
        Decision::Approve(_) if newest_message > draft.message_id => Some(Refusal::Stale),
        Decision::Approve(_) => None,
    }
}

/// A new draft id: `dr_` and 16 random hex digits (from the standard library's per-process
/// random hash keys, mixed with the clock and a counter), unique across servers sharing a store.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i128(jiff::Timestamp::now().as_nanosecond());
    h.write_u32(std::process::id());
    format!("dr_{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(status: DraftStatus, handoff_reply: bool) -> StoredDraft {
        StoredDraft {
            draft_id: "dr_1".into(),
            creator: "Wren".into(),
            fan_id: "f".into(),
            fan_message: "hi".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            status,
            draft: "hey you".into(),
            reply: None,
            answer: serde_json::Value::Null,
            message_id: 7,
            handoff_reply,
        }
    }

    #[test]
    fn a_decision_is_refused_once_decided_stale_or_handed_off() {
        let reply = CleanReply::for_tests("hey you");
        let approve = Decision::Approve(&reply);
        let pending = draft(DraftStatus::Pending, false);
        assert_eq!(refusal(&pending, approve, 7, false), None);
        assert_eq!(
            refusal(&pending, Decision::Reject, 9, true),
            None,
            "a reject is always possible"
        );
        assert_eq!(refusal(&pending, approve, 8, false), Some(Refusal::Stale));
        assert_eq!(refusal(&pending, approve, 7, true), Some(Refusal::HandedOff));
        let own = draft(DraftStatus::Pending, true);
        assert_eq!(
            refusal(&own, approve, 7, true),
            None,
            "the handoff's own notice may be sent"
        );
        let edit = CleanReply::for_tests("aw you seem older");
        assert_eq!(
            refusal(&own, Decision::Approve(&edit), 7, true),
            Some(Refusal::HandedOff),
            "but not edited"
        );
        for status in [
            DraftStatus::Approved,
            DraftStatus::Rejected,
            DraftStatus::Superseded,
        ] {
            let decided = draft(status, false);
            assert_eq!(
                refusal(&decided, approve, 7, false),
                Some(Refusal::Decided(status))
            );
            assert_eq!(
                refusal(&decided, Decision::Reject, 7, false),
                Some(Refusal::Decided(status))
            );
            assert_eq!(DraftStatus::parse(status.as_str()).unwrap(), status);
        }
    }

    #[test]
    fn draft_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 19 && id.starts_with("dr_")));
    }
}
