//! Fan histories in SQLite: fans, their profiles and every message with its timestamp.
//!
//! Owns the schema (versioned with `PRAGMA user_version`), WAL mode, and one transaction per
//! exchange (the fan's message with the reply it got), so a process killed at any point leaves
//! every committed exchange intact and no half of one. `ask --fan` and `serve` use it. It knows
//! nothing of prompts or models.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use crate::answer::refine::CleanReply;
use crate::conversation::{FanProfile, Message};
use crate::safety::Handoff;

const SCHEMA_VERSION: i32 = 3;

/// The longest fan id accepted.
pub const MAX_FAN_ID_CHARS: usize = 128;

/// A history database.
pub struct HistoryStore {
    conn: Connection,
    path: PathBuf,
}

impl HistoryStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the history directory `{}`", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the history database `{}`", path.display()))?;
        let store = HistoryStore {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate().with_context(|| {
            format!(
                "preparing the history database `{}`; if it is damaged, move it aside and retry",
                path.display()
            )
        })?;
        Ok(store)
    }

    /// The default database under the per-user data directory.
    pub fn default_path() -> PathBuf {
        crate::paths::data_dir().join("history.sqlite3")
    }

    fn migrate(&self) -> Result<()> {
        self.conn.pragma_update(None, "journal_mode", "WAL")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Tables are rebuilt with their keys changed: foreign keys are checked again after.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        // The version is read inside the write lock, so two processes opening one database at
        // once migrate it once: the second waits and finds it done.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)?;
        let version: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            bail!("the history database has schema version {version}, newer than this persona ({SCHEMA_VERSION}); upgrade persona");
        }
        if version < 1 {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS fans (
                     id TEXT PRIMARY KEY,
                     profile TEXT,
                     created_at TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS messages (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     fan_id TEXT NOT NULL REFERENCES fans(id) ON DELETE CASCADE,
                     from_creator INTEGER NOT NULL,
                     content TEXT NOT NULL,
                     sent_at TEXT NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS messages_by_fan ON messages(fan_id, id);
                 PRAGMA user_version = 1;
",
            )?;
        }
        if version < 2 {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS handoffs (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     fan_id TEXT NOT NULL REFERENCES fans(id) ON DELETE CASCADE,
                     category TEXT NOT NULL,
                     reason TEXT NOT NULL,
                     stop INTEGER NOT NULL,
                     at TEXT NOT NULL,
                     cleared_at TEXT
                 );
                 CREATE INDEX IF NOT EXISTS open_handoffs ON handoffs(fan_id) WHERE cleared_at IS NULL;
                 PRAGMA user_version = 2;
",
            )?;
        }
        if version < 3 {
            // Histories become per (creator, fan): every table is rebuilt with the creator in
            // its key; rows stored before have no creator (`''`) until `claim_unassigned`.
            tx.execute_batch(
                "CREATE TABLE fans_v3 (
                     creator TEXT NOT NULL DEFAULT '',
                     id TEXT NOT NULL,
                     profile TEXT,
                     created_at TEXT NOT NULL,
                     PRIMARY KEY (creator, id)
                 );
                 INSERT INTO fans_v3 (creator, id, profile, created_at) SELECT '', id, profile, created_at FROM fans;
                 CREATE TABLE messages_v3 (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     creator TEXT NOT NULL DEFAULT '',
                     fan_id TEXT NOT NULL,
                     from_creator INTEGER NOT NULL,
                     content TEXT NOT NULL,
                     sent_at TEXT NOT NULL,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 INSERT INTO messages_v3 (id, creator, fan_id, from_creator, content, sent_at)
                     SELECT id, '', fan_id, from_creator, content, sent_at FROM messages;
                 CREATE TABLE handoffs_v3 (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     creator TEXT NOT NULL DEFAULT '',
                     fan_id TEXT NOT NULL,
                     category TEXT NOT NULL,
                     reason TEXT NOT NULL,
                     stop INTEGER NOT NULL,
                     at TEXT NOT NULL,
                     cleared_at TEXT,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 INSERT INTO handoffs_v3 (id, creator, fan_id, category, reason, stop, at, cleared_at)
                     SELECT id, '', fan_id, category, reason, stop, at, cleared_at FROM handoffs;
                 CREATE TABLE idempotency (
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     key TEXT NOT NULL,
                     response TEXT NOT NULL,
                     at TEXT NOT NULL,
                     PRIMARY KEY (creator, fan_id, key),
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 DROP TABLE handoffs;
                 DROP TABLE messages;
                 DROP TABLE fans;
                 ALTER TABLE fans_v3 RENAME TO fans;
                 ALTER TABLE messages_v3 RENAME TO messages;
                 ALTER TABLE handoffs_v3 RENAME TO handoffs;
                 CREATE INDEX messages_by_fan ON messages(creator, fan_id, id);
                 CREATE INDEX open_handoffs ON handoffs(creator, fan_id) WHERE cleared_at IS NULL;
                 PRAGMA user_version = 3;
",
            )?;
        }
        tx.commit()?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Assigns the fans stored before histories were kept per creator to `creator`, so a
    /// single-creator `ask` or `serve` keeps its history across the upgrade. A fan `creator`
    /// already has under the same id stays unassigned. Returns how many fans moved.
    pub fn claim_unassigned(&mut self, creator: &str) -> Result<usize> {
        if creator.is_empty() {
            return Ok(0);
        }
        let n = self.conn.execute(
            "UPDATE OR IGNORE fans SET creator = ?1 WHERE creator = ''",
            [creator],
        )?;
        Ok(n)
    }

    /// How many fans have no creator (stored before histories were kept per creator).
    pub fn unassigned(&self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM fans WHERE creator = ''", [], |r| r.get(0))?)
    }

    /// A fan's messages, oldest first, and profile; empty for an unknown fan.
    pub fn load(&self, fan: FanRef<'_>) -> Result<(Vec<Message>, Option<FanProfile>)> {
        let profile: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT profile FROM fans WHERE creator = ?1 AND id = ?2",
                [fan.creator, fan.id],
                |r| r.get(0),
            )
            .optional()?;
        let profile = match profile.flatten() {
            Some(text) => Some(serde_json::from_str(&text).with_context(|| format!("reading {fan}'s profile"))?),
            None => None,
        };
        let mut stmt = self.conn.prepare(
            "SELECT from_creator, content, sent_at FROM messages WHERE creator = ?1 AND fan_id = ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map([fan.creator, fan.id], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (from_creator, content, sent_at) = row?;
            let sent_at: Timestamp = sent_at
                .parse()
                .with_context(|| format!("reading a timestamp `{sent_at}` of {fan}"))?;
            messages.push(Message {
                from_creator,
                content,
                sent_at: Some(sent_at),
            });
        }
        Ok((messages, profile))
    }

    /// Whether a fan has any record.
    pub fn exists(&self, fan: FanRef<'_>) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM fans WHERE creator = ?1 AND id = ?2",
                [fan.creator, fan.id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The response stored with the exchange a request with this idempotency key made, if any.
    pub fn idempotent_response(&self, fan: FanRef<'_>, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT response FROM idempotency WHERE creator = ?1 AND fan_id = ?2 AND key = ?3",
                [fan.creator, fan.id, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records one exchange, the fan's message and the reply it got, in one transaction: both are
    /// stored or neither is, so a failed or refused answer leaves no trace and a retry stores the
    /// message once. Creates the fan if needed. Only a [`CleanReply`] can be stored as the
    /// creator's message. In the same transaction: a handoff the answer made is opened (unless
    /// the fan already has an open one of that category), the response is kept under the
    /// request's idempotency key, and a regenerated exchange replaces the last one.
    pub fn record_exchange(&mut self, fan: FanRef<'_>, exchange: &Exchange<'_>) -> Result<()> {
        check_fan_id(fan.id)?;
        let fan_message = exchange.fan_message;
        if fan_message.from_creator {
            bail!("the first message of an exchange must be the fan's");
        }
        let replied_at = exchange.replied_at;
        let sent_at = fan_message.sent_at.unwrap_or(replied_at);
        let tx = self.conn.transaction()?;
        if exchange.replaces_last {
            replace_last(&tx, fan, &fan_message.content)?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO fans (creator, id, profile, created_at) VALUES (?1, ?2, NULL, ?3)",
            params![fan.creator, fan.id, sent_at.to_string()],
        )?;
        let insert = "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES (?1, ?2, ?3, ?4, ?5)";
        tx.execute(
            insert,
            params![fan.creator, fan.id, false, fan_message.content, sent_at.to_string()],
        )?;
        tx.execute(
            insert,
            params![
                fan.creator,
                fan.id,
                true,
                exchange.reply.as_str(),
                replied_at.max(sent_at).to_string()
            ],
        )?;
        if let Some(h) = exchange.handoff {
            tx.execute(
                "INSERT INTO handoffs (creator, fan_id, category, reason, stop, at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6
                 WHERE NOT EXISTS (SELECT 1 FROM handoffs
                                   WHERE creator = ?1 AND fan_id = ?2 AND category = ?3 AND cleared_at IS NULL)",
                params![fan.creator, fan.id, h.category, h.reason, h.stop, h.at.to_string()],
            )?;
        }
        if let Some((key, response)) = exchange.idempotency {
            tx.execute(
                "INSERT INTO idempotency (creator, fan_id, key, response, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![fan.creator, fan.id, key, response, replied_at.to_string()],
            )
            .with_context(|| format!("the idempotency key `{key}` of {fan} was already used"))?;
        }
        tx.commit()
            .with_context(|| format!("saving an exchange of {fan} to `{}`", self.path.display()))?;
        Ok(())
    }

    /// Sets a fan's profile, creating the fan if needed.
    pub fn set_profile(&mut self, fan: FanRef<'_>, profile: &FanProfile) -> Result<()> {
        check_fan_id(fan.id)?;
        let text = serde_json::to_string(profile)?;
        self.conn.execute(
            "INSERT INTO fans (creator, id, profile, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(creator, id) DO UPDATE SET profile = excluded.profile",
            params![fan.creator, fan.id, text, Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    /// A fan's open handoffs, oldest first.
    pub fn open_handoffs(&self, fan: FanRef<'_>) -> Result<Vec<Handoff>> {
        Ok(self
            .handoffs(Some(fan.creator), Some(fan.id))?
            .into_iter()
            .map(|(_, _, h)| h)
            .collect())
    }

    /// The open handoff that stops the bot for this fan, if any.
    pub fn stopping_handoff(&self, fan: FanRef<'_>) -> Result<Option<Handoff>> {
        Ok(self.open_handoffs(fan)?.into_iter().find(|h| h.stop))
    }

    /// Every open handoff with its creator and fan, oldest first; of one creator when given.
    pub fn all_open_handoffs(&self, creator: Option<&str>) -> Result<Vec<(String, String, Handoff)>> {
        self.handoffs(creator, None)
    }

    fn handoffs(&self, creator: Option<&str>, fan_id: Option<&str>) -> Result<Vec<(String, String, Handoff)>> {
        let mut stmt = self.conn.prepare(
            "SELECT creator, fan_id, category, reason, stop, at FROM handoffs
             WHERE cleared_at IS NULL AND (?1 IS NULL OR creator = ?1) AND (?2 IS NULL OR fan_id = ?2)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![creator, fan_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (creator, fan, category, reason, stop, at) = row?;
            let at: Timestamp = at
                .parse()
                .with_context(|| format!("reading the time `{at}` of a handoff of fan `{fan}`"))?;
            out.push((
                creator,
                fan,
                Handoff {
                    category,
                    reason,
                    at,
                    stop,
                },
            ));
        }
        Ok(out)
    }

    /// Closes a fan's open handoffs; `None` when there is no such fan, else how many closed.
    pub fn clear_handoff(&mut self, fan: FanRef<'_>, at: Timestamp) -> Result<Option<usize>> {
        if !self.exists(fan)? {
            return Ok(None);
        }
        let n = self.conn.execute(
            "UPDATE handoffs SET cleared_at = ?3 WHERE creator = ?1 AND fan_id = ?2 AND cleared_at IS NULL",
            params![fan.creator, fan.id, at.to_string()],
        )?;
        Ok(Some(n))
    }

    /// Every fan (of one creator when given) with their message count, last message and open
    /// handoffs, the most recently active first.
    pub fn fans(&self, creator: Option<&str>) -> Result<Vec<FanSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT f.creator, f.id, COUNT(m.id),
                    (SELECT content FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1),
                    (SELECT sent_at FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1)
             FROM fans f LEFT JOIN messages m ON m.creator = f.creator AND m.fan_id = f.id
             WHERE ?1 IS NULL OR f.creator = ?1
             GROUP BY f.creator, f.id ORDER BY 5 DESC, f.creator, f.id",
        )?;
        let rows = stmt.query_map([creator], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, usize>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut open: std::collections::HashMap<(String, String), Vec<Handoff>> =
            std::collections::HashMap::new();
        for (c, fan, h) in self.all_open_handoffs(creator)? {
            open.entry((c, fan)).or_default().push(h);
        }
        let mut out = Vec::new();
        for row in rows {
            let (creator, id, messages, last_message, last_at) = row?;
            let handoffs = open.remove(&(creator.clone(), id.clone())).unwrap_or_default();
            out.push(FanSummary {
                creator,
                id,
                messages,
                last_message,
                last_at,
                handoffs,
            });
        }
        Ok(out)
    }

    /// Forgets a fan's messages (the profile stays); returns how many were deleted.
    pub fn reset(&mut self, fan: FanRef<'_>) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM messages WHERE creator = ?1 AND fan_id = ?2",
            [fan.creator, fan.id],
        )?)
    }
}

/// Deletes the fan's last exchange, which a regenerated answer replaces; refuses when the last
/// two messages are not that exchange (someone else answered in between).
fn replace_last(tx: &rusqlite::Transaction<'_>, fan: FanRef<'_>, content: &str) -> Result<()> {
    let mut stmt = tx.prepare(
        "SELECT id, from_creator, content FROM messages WHERE creator = ?1 AND fan_id = ?2 ORDER BY id DESC LIMIT 2",
    )?;
    let last: Vec<(i64, bool, String)> = stmt
        .query_map([fan.creator, fan.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    match last.as_slice() {
        [(reply, true, _), (message, false, text)] if text == content => {
            tx.execute("DELETE FROM messages WHERE id IN (?1, ?2)", [reply, message])?;
            Ok(())
        }
        _ => bail!("{fan}'s last exchange changed while it was being answered again; retry"),
    }
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
        }
    }
}

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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan(content: &str, at: &str) -> Message {
        Message {
            from_creator: false,
            content: content.into(),
            sent_at: Some(at.parse().unwrap()),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const C: &str = "Wren";

    fn k(id: &str) -> FanRef<'_> {
        FanRef::new(C, id)
    }

    fn ex<'a>(message: &'a Message, reply: &'a CleanReply, at: Timestamp, handoff: Option<&'a Handoff>) -> Exchange<'a> {
        Exchange {
            handoff,
            ..Exchange::new(message, reply, at)
        }
    }

    #[test]
    fn exchanges_and_profiles_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/history.sqlite3");
        {
            let mut store = HistoryStore::open(&path).unwrap();
            let reply = CleanReply::for_tests("hey you");
            store
                .record_exchange(k("mike"), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, at("2026-01-01T10:01:00Z"), None))
                .unwrap();
            let mut profile = FanProfile::new();
            profile.insert("name".into(), "Mike".into());
            store.set_profile(k("mike"), &profile).unwrap();
            store
                .record_exchange(k("ana"), &ex(&fan("yo", "2026-01-01T11:00:00Z"), &reply, at("2026-01-01T11:00:00Z"), None))
                .unwrap();
        }
        let store = HistoryStore::open(&path).unwrap();
        let (messages, profile) = store.load(k("mike")).unwrap();
        let reply = Message {
            from_creator: true,
            content: "hey you".into(),
            sent_at: Some(at("2026-01-01T10:01:00Z")),
        };
        assert_eq!(messages, vec![fan("hi", "2026-01-01T10:00:00Z"), reply]);
        assert_eq!(profile.unwrap()["name"], "Mike");
        assert_eq!(store.load(k("ana")).unwrap().0.len(), 2);
        assert!(store.load(k("nobody")).unwrap().0.is_empty());
        assert!(!store.exists(k("nobody")).unwrap());
    }

    #[test]
    fn a_reply_is_never_stored_before_its_fans_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
        let reply = CleanReply::for_tests("hey");
        // A clock that went backwards still stores the reply after the message.
        store
            .record_exchange(k("mike"), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, at("2026-01-01T09:00:00Z"), None))
            .unwrap();
        let (messages, _) = store.load(k("mike")).unwrap();
        assert!(messages[1].sent_at >= messages[0].sent_at);
        let creator_first = Message {
            from_creator: true,
            ..fan("hi", "2026-01-01T10:00:00Z")
        };
        assert!(store
            .record_exchange(k("mike"), &ex(&creator_first, &reply, at("2026-01-01T10:00:00Z"), None))
            .is_err());
        assert_eq!(
            store.load(k("mike")).unwrap().0.len(),
            2,
            "a refused exchange stores nothing"
        );
    }

    #[test]
    fn reset_forgets_messages_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
        let reply = CleanReply::for_tests("hey");
        let now = at("2026-01-01T10:00:00Z");
        store
            .record_exchange(k("mike"), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None))
            .unwrap();
        assert_eq!(store.reset(k("mike")).unwrap(), 2);
        assert!(store.load(k("mike")).unwrap().0.is_empty());
        assert!(store
            .record_exchange(k(""), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None))
            .is_err());
        assert!(store
            .record_exchange(k(&"x".repeat(200)), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None))
            .is_err());
    }

    #[test]
    fn a_handoff_is_opened_once_with_its_exchange_listed_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
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
                .record_exchange(k("kid"), &ex(&fan("im 15", "2026-01-01T10:00:00Z"), &reply, now, Some(&handoff)))
                .unwrap();
        }
        store
            .record_exchange(k("ana"), &ex(&fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None))
            .unwrap();
        assert_eq!(
            store.open_handoffs(k("kid")).unwrap(),
            vec![handoff.clone()],
            "one open per category"
        );
        assert_eq!(store.stopping_handoff(k("kid")).unwrap(), Some(handoff.clone()));
        assert_eq!(
            store.all_open_handoffs(None).unwrap(),
            vec![(C.to_string(), "kid".to_string(), handoff)]
        );
        let fans = store.fans(None).unwrap();
        assert_eq!(fans.len(), 2);
        let kid = fans.iter().find(|f| f.id == "kid").unwrap();
        assert_eq!((kid.messages, kid.handoffs.len()), (4, 1));
        assert_eq!(store.clear_handoff(k("nobody"), now).unwrap(), None);
        assert_eq!(store.clear_handoff(k("kid"), now).unwrap(), Some(1));
        assert_eq!(store.stopping_handoff(k("kid")).unwrap(), None);
        assert_eq!(store.clear_handoff(k("kid"), now).unwrap(), Some(0));
    }

    #[test]
    fn a_version_2_database_is_migrated_and_its_fans_claimed_by_the_creator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE fans (id TEXT PRIMARY KEY, profile TEXT, created_at TEXT NOT NULL);
                 CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     fan_id TEXT NOT NULL REFERENCES fans(id) ON DELETE CASCADE,
                     from_creator INTEGER NOT NULL, content TEXT NOT NULL, sent_at TEXT NOT NULL);
                 CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     fan_id TEXT NOT NULL REFERENCES fans(id) ON DELETE CASCADE,
                     category TEXT NOT NULL, reason TEXT NOT NULL, stop INTEGER NOT NULL,
                     at TEXT NOT NULL, cleared_at TEXT);
                 INSERT INTO fans VALUES ('mike', NULL, '2026-01-01T10:00:00Z');
                 INSERT INTO messages (fan_id, from_creator, content, sent_at)
                     VALUES ('mike', 0, 'hi', '2026-01-01T10:00:00Z'), ('mike', 1, 'hey you', '2026-01-01T10:01:00Z');
                 INSERT INTO handoffs (fan_id, category, reason, stop, at)
                     VALUES ('mike', 'minor', 'said 15', 1, '2026-01-01T10:00:00Z');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let mut store = HistoryStore::open(&path).unwrap();
        assert_eq!(store.unassigned().unwrap(), 1);
        assert!(store.load(k("mike")).unwrap().0.is_empty(), "not yet any creator's");
        assert_eq!(store.claim_unassigned(C).unwrap(), 1);
        assert_eq!(store.load(k("mike")).unwrap().0.len(), 2);
        assert!(store.stopping_handoff(k("mike")).unwrap().is_some(), "handoffs follow their fan");
        assert_eq!(store.load(FanRef::new("Ivy", "mike")).unwrap().0.len(), 0);
        drop(store);
        let newer = Connection::open(&path).unwrap();
        newer.pragma_update(None, "user_version", 99).unwrap();
        drop(newer);
        let err = HistoryStore::open(&path).err().unwrap();
        assert!(format!("{err:#}").contains("newer than this persona"), "{err:#}");
    }

    #[test]
    fn a_regenerated_exchange_replaces_the_last_and_an_idempotency_key_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
        let (first, second) = (CleanReply::for_tests("one cat"), CleanReply::for_tests("two cats"));
        let now = at("2026-01-01T10:00:00Z");
        let pets = fan("pets?", "2026-01-01T10:00:00Z");
        let keyed = Exchange {
            idempotency: Some(("k1", "{\"reply\":\"one cat\"}")),
            ..Exchange::new(&pets, &first, now)
        };
        store.record_exchange(k("ana"), &keyed).unwrap();
        assert_eq!(
            store.idempotent_response(k("ana"), "k1").unwrap().as_deref(),
            Some("{\"reply\":\"one cat\"}")
        );
        assert!(store.record_exchange(k("ana"), &keyed).is_err(), "a key is used once");
        assert_eq!(store.load(k("ana")).unwrap().0.len(), 2, "the refused exchange stored nothing");
        let again = Exchange {
            replaces_last: true,
            ..Exchange::new(&pets, &second, now)
        };
        store.record_exchange(k("ana"), &again).unwrap();
        let contents: Vec<String> = store.load(k("ana")).unwrap().0.into_iter().map(|m| m.content).collect();
        assert_eq!(contents, ["pets?", "two cats"]);
        let other = fan("dogs?", "2026-01-01T10:00:00Z");
        let mismatched = Exchange {
            replaces_last: true,
            ..Exchange::new(&other, &second, now)
        };
        assert!(store.record_exchange(k("ana"), &mismatched).is_err());
        assert_eq!(store.load(k("ana")).unwrap().0.len(), 2);
    }
}
