//! Fan histories: fans, their profiles, every message with its timestamp, handoffs to a human,
//! and the responses kept for idempotent retries, per (creator, fan).
//!
//! Owns the [`Store`] contract every backend keeps: one transaction per exchange (the fan's
//! message with the reply it got, plus its handoff and idempotent response), so a process killed
//! at any point leaves every committed exchange intact and no half of one; only a
//! [`CleanReply`] is ever stored as the creator's message; review mode's [`drafts`] wait for a
//! person's decision in the same store; schemas are versioned and migrated
//! once even when two processes open a database at once. Backends: [`sqlite`] (the embedded
//! default, a file) and [`postgres`] (one history shared by several servers). `ask --fan`,
//! `fans` and `serve` use it. It knows nothing of prompts or models.

pub mod drafts;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use jiff::Timestamp;

use crate::answer::refine::CleanReply;
use crate::conversation::{FanProfile, Message};
use crate::safety::Handoff;

pub use self::drafts::{Decision, DraftStatus, NewDraft, Refusal, StoredDraft};

/// The longest fan id accepted.
pub const MAX_FAN_ID_CHARS: usize = 128;

/// An open history store of any backend.
pub type HistoryStore = Box<dyn Store>;

/// What a history backend does. Every write is one transaction.
pub trait Store: Send {
    /// Where the store lives, for messages (a path, or a URL without its password).
    fn describe(&self) -> String;

    /// Assigns the fans stored before histories were kept per creator to `creator`, so a
    /// single-creator `ask` or `serve` keeps its history across the upgrade. A fan `creator`
    /// already has under the same id stays unassigned. Returns how many fans moved.
    fn claim_unassigned(&mut self, creator: &str) -> Result<usize>;

    /// How many fans have no creator (stored before histories were kept per creator).
    fn unassigned(&mut self) -> Result<usize>;

    /// A fan's messages, oldest first, and profile; empty for an unknown fan.
    fn load(&mut self, fan: FanRef<'_>) -> Result<(Vec<Message>, Option<FanProfile>)>;

    /// Whether a fan has any record.
    fn exists(&mut self, fan: FanRef<'_>) -> Result<bool>;

    /// The response stored with the exchange a request with this idempotency key made, if any.
    fn idempotent_response(&mut self, fan: FanRef<'_>, key: &str) -> Result<Option<String>>;

    /// Records one exchange, the fan's message and the reply it got, in one transaction: both
    /// are stored or neither is, so a failed or refused answer leaves no trace and a retry
    /// stores the message once. Creates the fan if needed. In the same transaction: a handoff
    /// the answer made is opened (unless the fan already has an open one of that category), the
    /// response is kept under the request's idempotency key (a key is used once), a profile the
    /// request carried replaces the fan's, and a regenerated exchange replaces the last one (refused when the last exchange is not the one
    /// being answered again).
    fn record_exchange(&mut self, fan: FanRef<'_>, exchange: &Exchange<'_>) -> Result<()>;

    /// Sets a fan's profile, creating the fan if needed.
    fn set_profile(&mut self, fan: FanRef<'_>, profile: &FanProfile) -> Result<()>;

    /// Open handoffs as (creator, fan, handoff), oldest first, narrowed to a creator and a fan
    /// when given.
    fn handoffs(
        &mut self,
        creator: Option<&str>,
        fan: Option<&str>,
    ) -> Result<Vec<(String, String, Handoff)>>;

    /// Closes a fan's open handoffs; `None` when there is no such fan, else how many closed.
    fn clear_handoff(&mut self, fan: FanRef<'_>, at: Timestamp) -> Result<Option<usize>>;

    /// Every fan (of one creator when given) with their message count and last message, the
    /// most recently active first; `handoffs` left empty (see [`Store::fans`]).
    fn fan_rows(&mut self, creator: Option<&str>) -> Result<Vec<FanSummary>>;

    /// Forgets a fan's messages and drafts (the profile stays); returns how many messages were
    /// deleted.
    fn reset(&mut self, fan: FanRef<'_>) -> Result<usize>;

    /// Records a draft in one transaction: the fan's message (unless it regenerates a draft,
    /// which becomes superseded; refused when that one is no longer pending), the draft, its
    /// handoff, idempotent response and profile. Creates the fan if needed.
    fn record_draft(&mut self, fan: FanRef<'_>, draft: &NewDraft<'_>) -> Result<()>;

    /// Pending drafts, oldest first, narrowed to a creator and a fan when given.
    fn pending_drafts(&mut self, creator: Option<&str>, fan: Option<&str>) -> Result<Vec<StoredDraft>>;

    /// A draft by id, whatever its status.
    fn draft(&mut self, id: &str) -> Result<Option<StoredDraft>>;

    /// Decides a draft in one transaction, under the rules of [`drafts::refusal`]: an approval
    /// stores its reply as the creator's message. Returns the decided draft, or why not.
    fn decide_draft(
        &mut self,
        id: &str,
        decision: Decision<'_>,
        at: Timestamp,
    ) -> Result<std::result::Result<StoredDraft, Refusal>>;

    /// A fan's open handoffs, oldest first.
    fn open_handoffs(&mut self, fan: FanRef<'_>) -> Result<Vec<Handoff>> {
        Ok(self
            .handoffs(Some(fan.creator), Some(fan.id))?
            .into_iter()
            .map(|(_, _, h)| h)
            .collect())
    }

    /// The open handoff that stops the bot for this fan, if any.
    fn stopping_handoff(&mut self, fan: FanRef<'_>) -> Result<Option<Handoff>> {
        Ok(self.open_handoffs(fan)?.into_iter().find(|h| h.stop))
    }

    /// Every open handoff with its creator and fan, oldest first; of one creator when given.
    fn all_open_handoffs(&mut self, creator: Option<&str>) -> Result<Vec<(String, String, Handoff)>> {
        self.handoffs(creator, None)
    }

    /// Every fan (of one creator when given) with their open handoffs, most recent first.
    fn fans(&mut self, creator: Option<&str>) -> Result<Vec<FanSummary>> {
        let mut rows = self.fan_rows(creator)?;
        for (c, fan, h) in self.all_open_handoffs(creator)? {
            if let Some(row) = rows.iter_mut().find(|r| r.creator == c && r.id == fan) {
                row.handoffs.push(h);
            }
        }
        Ok(rows)
    }
}

/// Where a history lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Location {
    /// `postgres://...` or `postgresql://...` is a database, anything else a file path.
    pub fn parse(text: &str) -> Location {
        let t = text.trim();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            Location::Postgres(t.to_string())
        } else {
            Location::File(PathBuf::from(text))
        }
    }

    /// The flag's location, else the configured one, else the default file.
    pub fn resolve(flag: Option<&str>, configured: Option<&str>) -> Location {
        flag.or(configured)
            .map_or_else(|| Location::File(default_path()), Location::parse)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

/// Opens (creating and migrating if needed) the store at `location`.
pub fn open(location: &Location) -> Result<HistoryStore> {
    Ok(match location {
        Location::File(path) => Box::new(sqlite::SqliteStore::open(path)?),
        Location::Postgres(url) => Box::new(postgres::PostgresStore::open(url)?),
    })
}

/// The default database under the per-user data directory.
pub fn default_path() -> PathBuf {
    crate::paths::data_dir().join("history.sqlite3")
}

/// One fan of one creator: the key of every history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FanRef<'a> {
    /// The creator's name, as in the artifact (`""` for histories stored before creators).
    pub creator: &'a str,
    /// The fan's id.
    pub id: &'a str,
}

impl<'a> FanRef<'a> {
    /// Fan `id` of `creator`.
    pub fn new(creator: &'a str, id: &'a str) -> Self {
        FanRef { creator, id }
    }
}

impl std::fmt::Display for FanRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.creator.is_empty() {
            write!(f, "fan `{}`", self.id)
        } else {
            write!(f, "fan `{}` of {}", self.id, self.creator)
        }
    }
}

/// What one exchange stores.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The fan's message.
    pub fan_message: &'a Message,
    /// The reply it got.
    pub reply: &'a CleanReply,
    /// When the reply was sent.
    pub replied_at: Timestamp,
    /// The handoff the answer made, if any.
    pub handoff: Option<&'a Handoff>,
    /// The request's idempotency key and the response to give a retry with that key.
    pub idempotency: Option<(&'a str, &'a str)>,
    /// Whether this exchange answers the fan's last message again and replaces its reply.
    pub replaces_last: bool,
    /// A profile the request carried, stored with the exchange (replacing the fan's).
    pub profile: Option<&'a FanProfile>,
}

impl<'a> Exchange<'a> {
    /// A plain exchange: no handoff, no idempotency key, replacing nothing.
    pub fn new(fan_message: &'a Message, reply: &'a CleanReply, replied_at: Timestamp) -> Self {
        Exchange {
            fan_message,
            reply,
            replied_at,
            handoff: None,
            idempotency: None,
            replaces_last: false,
            profile: None,
        }
    }

    /// Checks what every backend refuses before writing: a bad fan id, or an exchange that does
    /// not start with the fan. Returns the times to store: the fan's message's, and the reply's
    /// (never before the message, even when a clock went backwards).
    fn checked(&self, fan: FanRef<'_>) -> Result<(Timestamp, Timestamp)> {
        check_fan_id(fan.id)?;
        if self.fan_message.from_creator {
            bail!("the first message of an exchange must be the fan's");
        }
        let sent_at = self.fan_message.sent_at.unwrap_or(self.replied_at);
        Ok((sent_at, self.replied_at.max(sent_at)))
    }
}

/// A fan as `persona fans list` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FanSummary {
    /// The creator the fan talks to (`""` for histories stored before creators).
    pub creator: String,
    /// The fan id.
    pub id: String,
    /// Messages stored.
    pub messages: usize,
    /// The last message, either side.
    pub last_message: Option<String>,
    /// When it was sent (RFC 3339).
    pub last_at: Option<String>,
    /// When the message before it was sent, to tell a fan returning after a silence.
    #[serde(skip)]
    pub previous_at: Option<String>,
    /// Review mode's drafts waiting for a person.
    pub pending_drafts: usize,
    /// Open handoffs, oldest first.
    pub handoffs: Vec<Handoff>,
}

/// Checks a fan id: non-empty, printable, at most [`MAX_FAN_ID_CHARS`].
pub fn check_fan_id(fan_id: &str) -> Result<()> {
    if fan_id.trim().is_empty()
        || fan_id.chars().count() > MAX_FAN_ID_CHARS
        || fan_id.chars().any(char::is_control)
    {
        bail!("the fan id `{fan_id}` must be 1 to {MAX_FAN_ID_CHARS} printable characters");
    }
    // `.` and `..` would name other paths in the fan routes' URLs.
    if fan_id.trim_matches('.').is_empty() {
        bail!("the fan id `{fan_id}` must not be only dots");
    }
    Ok(())
}

/// A stored message row, read back: every backend stores times as RFC 3339 text.
fn message(fan: FanRef<'_>, from_creator: bool, content: String, sent_at: &str) -> Result<Message> {
    let sent_at: Timestamp = sent_at
        .parse()
        .with_context(|| format!("reading a timestamp `{sent_at}` of {fan}"))?;
    Ok(Message {
        from_creator,
        content,
        sent_at: Some(sent_at),
    })
}

/// A stored profile, read back.
fn profile(fan: FanRef<'_>, text: Option<String>) -> Result<Option<FanProfile>> {
    text.map(|t| serde_json::from_str(&t).with_context(|| format!("reading {fan}'s profile")))
        .transpose()
}

/// A stored open handoff, read back.
fn handoff(fan: &str, category: String, reason: String, stop: bool, at: &str) -> Result<Handoff> {
    let at: Timestamp = at
        .parse()
        .with_context(|| format!("reading the time `{at}` of a handoff of fan `{fan}`"))?;
    Ok(Handoff {
        category,
        reason,
        at,
        stop,
    })
}

/// The rule of a regenerated exchange: the last two stored messages must be the fan's message
/// being answered again and its reply.
fn check_replaceable(fan: FanRef<'_>, last_two: &[(bool, String)], content: &str) -> Result<()> {
    match last_two {
        [(true, _), (false, text)] if text == content => Ok(()),
        _ => bail!("{fan}'s last exchange changed while it was being answered again; retry"),
    }
}

#[cfg(test)]
mod tests {
    //! The [`Store`] contract, checked on both backends: SQLite in a temp file, PostgreSQL on the
    //! server `PERSONA_TEST_POSTGRES_URL` names (`scripts/test.sh` starts a throwaway one). Each
    //! run uses a creator name of its own, so runs sharing a database never see each other.

    use super::*;

    pub(super) fn postgres_url() -> String {
        std::env::var("PERSONA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!("PERSONA_TEST_POSTGRES_URL is unset: run the tests with scripts/test.sh, which starts a throwaway PostgreSQL (scripts/pg.sh)")
        })
    }

    /// Runs `check` on a fresh SQLite store and on the PostgreSQL store, with a unique creator.
    fn on_both(check: impl Fn(&mut dyn Store, &str)) {
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = sqlite::SqliteStore::open(&dir.path().join("h.sqlite3")).unwrap();
        let creator = format!("Wren-{}", Timestamp::now().as_nanosecond());
        check(&mut sqlite, &creator);
        let mut pg = postgres::PostgresStore::open(&postgres_url()).unwrap();
        check(&mut pg, &creator);
    }

    pub(super) fn fan(content: &str, at: &str) -> Message {
        Message {
            from_creator: false,
            content: content.into(),
            sent_at: Some(at.parse().unwrap()),
        }
    }

    pub(super) fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    pub(super) fn ex<'a>(
        message: &'a Message,
        reply: &'a CleanReply,
        at: Timestamp,
        handoff: Option<&'a Handoff>,
    ) -> Exchange<'a> {
        Exchange {
            handoff,
            ..Exchange::new(message, reply, at)
        }
    }

    #[test]
    fn exchanges_and_profiles_are_stored_per_creator_and_fan() {
        on_both(|store, c| {
            let k = |id| FanRef::new(c, id);
            let reply = CleanReply::for_tests("hey you");
            store
                .record_exchange(
                    k("mike"),
                    &ex(
                        &fan("hi", "2026-01-01T10:00:00Z"),
                        &reply,
                        at("2026-01-01T10:01:00Z"),
                        None,
                    ),
                )
                .unwrap();
            let mut profile = FanProfile::new();
            profile.insert("name".into(), "Mike".into());
            store.set_profile(k("mike"), &profile).unwrap();
            store
                .record_exchange(
                    k("ana"),
                    &ex(
                        &fan("yo", "2026-01-01T11:00:00Z"),
                        &reply,
                        at("2026-01-01T11:00:00Z"),
                        None,
                    ),
                )
                .unwrap();
            let (messages, profile) = store.load(k("mike")).unwrap();
            let stored_reply = Message {
                from_creator: true,
                content: "hey you".into(),
                sent_at: Some(at("2026-01-01T10:01:00Z")),
            };
            assert_eq!(messages, vec![fan("hi", "2026-01-01T10:00:00Z"), stored_reply]);
            assert_eq!(profile.unwrap()["name"], "Mike");
            assert_eq!(store.load(k("ana")).unwrap().0.len(), 2);
            assert!(store.load(k("nobody")).unwrap().0.is_empty());
            assert!(!store.exists(k("nobody")).unwrap());
            let other = format!("{c}-other");
            assert!(
                store.load(FanRef::new(&other, "mike")).unwrap().0.is_empty(),
                "another creator's mike"
            );
            let fans = store.fans(Some(c)).unwrap();
            let ids: Vec<&str> = fans.iter().map(|f| f.id.as_str()).collect();
            assert_eq!(ids, ["ana", "mike"], "most recent first");
        });
    }

    #[test]
    fn a_reply_is_never_stored_before_its_fans_message_and_a_refused_exchange_stores_nothing() {
        on_both(|store, c| {
            let k = FanRef::new(c, "mike");
            let reply = CleanReply::for_tests("hey");
            // A clock that went backwards still stores the reply after the message.
            store
                .record_exchange(
                    k,
                    &ex(
                        &fan("hi", "2026-01-01T10:00:00Z"),
                        &reply,
                        at("2026-01-01T09:00:00Z"),
                        None,
                    ),
                )
                .unwrap();
            let (messages, _) = store.load(k).unwrap();
            assert!(messages[1].sent_at >= messages[0].sent_at);
            let creator_first = Message {
                from_creator: true,
                ..fan("hi", "2026-01-01T10:00:00Z")
            };
            assert!(store
                .record_exchange(k, &ex(&creator_first, &reply, at("2026-01-01T10:00:00Z"), None))
                .is_err());
            assert_eq!(store.load(k).unwrap().0.len(), 2);
            let now = at("2026-01-01T10:00:00Z");
            assert_eq!(store.reset(k).unwrap(), 2);
            assert!(store.load(k).unwrap().0.is_empty());
            for bad in ["", &"x".repeat(200)] {
                assert!(store
                    .record_exchange(
                        FanRef::new(c, bad),
                        &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None)
                    )
                    .is_err());
            }
        });
    }

    #[test]
    fn a_handoff_is_opened_once_with_its_exchange_listed_and_cleared() {
        on_both(|store, c| {
            let k = |id| FanRef::new(c, id);
            let reply = CleanReply::for_tests("take care");
            let now = at("2026-01-01T10:00:00Z");
            let handoff = Handoff {
                category: "minor".into(),
                reason: "matches a `minor` pattern".into(),
                at: now,
                stop: true,
            };
            for _ in 0..2 {
                store
                    .record_exchange(
                        k("kid"),
                        &ex(&fan("im 15", "2026-01-01T10:00:00Z"), &reply, now, Some(&handoff)),
                    )
                    .unwrap();
            }
            store
                .record_exchange(
                    k("ana"),
                    &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None),
                )
                .unwrap();
            assert_eq!(
                store.open_handoffs(k("kid")).unwrap(),
                vec![handoff.clone()],
                "one open per category"
            );
            assert_eq!(store.stopping_handoff(k("kid")).unwrap(), Some(handoff.clone()));
            assert_eq!(
                store.all_open_handoffs(Some(c)).unwrap(),
                vec![(c.to_string(), "kid".to_string(), handoff)]
            );
            let fans = store.fans(Some(c)).unwrap();
            let kid = fans.iter().find(|f| f.id == "kid").unwrap();
            assert_eq!((fans.len(), kid.messages, kid.handoffs.len()), (2, 4, 1));
            assert_eq!(store.clear_handoff(k("nobody"), now).unwrap(), None);
            assert_eq!(store.clear_handoff(k("kid"), now).unwrap(), Some(1));
            assert_eq!(store.stopping_handoff(k("kid")).unwrap(), None);
            assert_eq!(store.clear_handoff(k("kid"), now).unwrap(), Some(0));
        });
    }

    #[test]
    fn a_draft_enters_the_history_once_when_approved_and_never_when_stale_handed_off_or_decided() {
        on_both(|store, c| {
            let k = |id| FanRef::new(c, id);
            let texts = |store: &mut dyn Store, id| -> Vec<String> {
                store
                    .load(k(id))
                    .unwrap()
                    .0
                    .into_iter()
                    .map(|m| m.content)
                    .collect()
            };
            let now = at("2026-01-01T10:00:00Z");
            let proposed = CleanReply::for_tests("hey you");
            let record = |store: &mut dyn Store, fan_id, id, message: &Message, regenerates| {
                let draft = NewDraft {
                    id,
                    fan_message: message,
                    draft: &proposed,
                    answer: r#"{"demos":[]}"#,
                    created_at: now,
                    handoff: None,
                    idempotency: None,
                    profile: None,
                    regenerates,
                };
                store.record_draft(k(fan_id), &draft)
            };
            let hi = fan("hi", "2026-01-01T10:00:00Z");
            record(store, "ana", "dr_a1", &hi, None).unwrap();
            assert_eq!(
                texts(store, "ana"),
                ["hi"],
                "the fan's message is stored, the draft is not"
            );
            let pending = store.pending_drafts(Some(c), None).unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(
                (pending[0].draft.as_str(), pending[0].answer["demos"].is_array()),
                ("hey you", true)
            );

            // A regenerate supersedes the draft and does not store the fan's message again.
            record(store, "ana", "dr_a2", &hi, Some("dr_a1")).unwrap();
            assert!(
                record(store, "ana", "dr_a3", &hi, Some("dr_a1")).is_err(),
                "already superseded"
            );
            assert_eq!(texts(store, "ana"), ["hi"]);
            assert_eq!(
                store.draft("dr_a1").unwrap().unwrap().status,
                DraftStatus::Superseded
            );

            let edited = CleanReply::for_tests("hey you, edited");
            let approved = store
                .decide_draft("dr_a2", Decision::Approve(&edited), now)
                .unwrap()
                .unwrap();
            assert_eq!(
                (approved.status, approved.reply.as_deref()),
                (DraftStatus::Approved, Some("hey you, edited"))
            );
            let twice = store
                .decide_draft("dr_a2", Decision::Approve(&edited), now)
                .unwrap();
            assert_eq!(twice, Err(Refusal::Decided(DraftStatus::Approved)));
            assert_eq!(
                texts(store, "ana"),
                ["hi", "hey you, edited"],
                "one history entry"
            );
            assert_eq!(
                store
                    .decide_draft("dr_a1", Decision::Approve(&edited), now)
                    .unwrap(),
                Err(Refusal::Decided(DraftStatus::Superseded))
            );
            assert_eq!(
                store.decide_draft("dr_none", Decision::Reject, now).unwrap(),
                Err(Refusal::NotFound)
            );

            // The fan wrote again: the older draft answers an older message.
            record(store, "bo", "dr_b1", &fan("hi", "2026-01-01T10:00:00Z"), None).unwrap();
            record(
                store,
                "bo",
                "dr_b2",
                &fan("hello??", "2026-01-01T10:01:00Z"),
                None,
            )
            .unwrap();
            assert_eq!(
                store
                    .decide_draft("dr_b1", Decision::Approve(&proposed), now)
                    .unwrap(),
                Err(Refusal::Stale)
            );
            assert_eq!(
                store
                    .decide_draft("dr_b1", Decision::Reject, now)
                    .unwrap()
                    .unwrap()
                    .status,
                DraftStatus::Rejected
            );
            assert_eq!(store.pending_drafts(Some(c), Some("bo")).unwrap().len(), 1);

            // The fan was handed to a human after the draft was made.
            record(store, "kid", "dr_k1", &fan("hey", "2026-01-01T10:00:00Z"), None).unwrap();
            let handoff = Handoff {
                category: "minor".into(),
                reason: "matches a `minor` pattern".into(),
                at: now,
                stop: true,
            };
            let safe = CleanReply::for_tests("take care");
            let with_handoff = NewDraft {
                id: "dr_k2",
                fan_message: &fan("im 15", "2026-01-01T10:02:00Z"),
                draft: &safe,
                answer: "{}",
                created_at: now,
                handoff: Some(&handoff),
                idempotency: Some(("key-1", r#"{"draft_id":"dr_k2"}"#)),
                profile: None,
                regenerates: None,
            };
            store.record_draft(k("kid"), &with_handoff).unwrap();
            assert_eq!(
                store.idempotent_response(k("kid"), "key-1").unwrap().as_deref(),
                Some(r#"{"draft_id":"dr_k2"}"#)
            );
            assert_eq!(store.stopping_handoff(k("kid")).unwrap(), Some(handoff));
            // dr_k1 is stale as well as handed off: the handoff is named. The handoff's own
            // notice may be sent.
            assert_eq!(
                store
                    .decide_draft("dr_k1", Decision::Approve(&proposed), now)
                    .unwrap(),
                Err(Refusal::HandedOff)
            );
            assert!(store
                .decide_draft("dr_k2", Decision::Approve(&safe), now)
                .unwrap()
                .is_ok());
            record(
                store,
                "kid",
                "dr_k3",
                &fan("hello?", "2026-01-01T10:03:00Z"),
                None,
            )
            .unwrap();
            assert_eq!(
                store
                    .decide_draft("dr_k3", Decision::Approve(&proposed), now)
                    .unwrap(),
                Err(Refusal::HandedOff)
            );

            assert_eq!(store.reset(k("bo")).unwrap(), 2);
            assert!(
                store.draft("dr_b2").unwrap().is_none(),
                "a reset forgets the fan's drafts"
            );
        });
    }

    #[test]
    fn a_regenerated_exchange_replaces_the_last_and_an_idempotency_key_is_kept_once() {
        on_both(|store, c| {
            let k = FanRef::new(c, "ana");
            let (first, second) = (
                CleanReply::for_tests("one cat"),
                CleanReply::for_tests("two cats"),
            );
            let now = at("2026-01-01T10:00:00Z");
            let pets = fan("pets?", "2026-01-01T10:00:00Z");
            let keyed = Exchange {
                idempotency: Some(("k1", "{\"reply\":\"one cat\"}")),
                ..Exchange::new(&pets, &first, now)
            };
            store.record_exchange(k, &keyed).unwrap();
            assert_eq!(
                store.idempotent_response(k, "k1").unwrap().as_deref(),
                Some("{\"reply\":\"one cat\"}")
            );
            assert_eq!(store.idempotent_response(k, "k2").unwrap(), None);
            let mut profile = FanProfile::new();
            profile.insert("name".into(), "Ana".into());
            let refused = Exchange {
                profile: Some(&profile),
                ..keyed
            };
            assert!(store.record_exchange(k, &refused).is_err(), "a key is used once");
            let (messages, stored_profile) = store.load(k).unwrap();
            assert_eq!(
                (messages.len(), stored_profile),
                (2, None),
                "the refused exchange stored nothing, its profile neither"
            );
            let again = Exchange {
                replaces_last: true,
                ..Exchange::new(&pets, &second, now)
            };
            store.record_exchange(k, &again).unwrap();
            let contents: Vec<String> = store.load(k).unwrap().0.into_iter().map(|m| m.content).collect();
            assert_eq!(contents, ["pets?", "two cats"]);
            let other = fan("dogs?", "2026-01-01T10:00:00Z");
            let mismatched = Exchange {
                replaces_last: true,
                ..Exchange::new(&other, &second, now)
            };
            assert!(store.record_exchange(k, &mismatched).is_err());
            assert_eq!(store.load(k).unwrap().0.len(), 2);
        });
    }

    #[test]
    fn locations_are_files_unless_they_are_postgres_urls() {
        assert_eq!(Location::parse("h.sqlite3"), Location::File("h.sqlite3".into()));
        assert!(matches!(
            Location::parse("postgresql://u@h/db"),
            Location::Postgres(_)
        ));
        assert_eq!(
            Location::resolve(None, Some("postgres://u:pw@h/db")).to_string(),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            Location::resolve(Some("x.db"), Some("postgres://h/db")),
            Location::File("x.db".into())
        );
    }
}
