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

const SCHEMA_VERSION: i32 = 2;

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
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        self.conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i32 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            bail!("the history database has schema version {version}, newer than this persona ({SCHEMA_VERSION}); upgrade persona");
        }
        if version < 1 {
            self.conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS fans (
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
                 COMMIT;",
            )?;
        }
        if version < 2 {
            self.conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS handoffs (
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
                 COMMIT;",
            )?;
        }
        Ok(())
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fan's messages, oldest first, and profile; empty for an unknown fan.
    pub fn load(&self, fan_id: &str) -> Result<(Vec<Message>, Option<FanProfile>)> {
        let profile: Option<Option<String>> = self
            .conn
            .query_row("SELECT profile FROM fans WHERE id = ?1", [fan_id], |r| r.get(0))
            .optional()?;
        let profile = match profile.flatten() {
            Some(text) => Some(
                serde_json::from_str(&text).with_context(|| format!("reading fan `{fan_id}`'s profile"))?,
            ),
            None => None,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT from_creator, content, sent_at FROM messages WHERE fan_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([fan_id], |r| {
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
                .with_context(|| format!("reading a timestamp `{sent_at}` of fan `{fan_id}`"))?;
            messages.push(Message {
                from_creator,
                content,
                sent_at: Some(sent_at),
            });
        }
        Ok((messages, profile))
    }

    /// Whether a fan has any record.
    pub fn exists(&self, fan_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM fans WHERE id = ?1", [fan_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Records one exchange, the fan's message and the reply it got, in one transaction: both are
    /// stored or neither is, so a failed or refused answer leaves no trace and a retry stores the
    /// message once. Creates the fan if needed. Only a [`CleanReply`] can be stored as the
    /// creator's message. A handoff the answer made is opened in the same transaction, unless
    /// the fan already has an open one of that category.
    pub fn record_exchange(
        &mut self,
        fan_id: &str,
        fan_message: &Message,
        reply: &CleanReply,
        replied_at: Timestamp,
        handoff: Option<&Handoff>,
    ) -> Result<()> {
        check_fan_id(fan_id)?;
        if fan_message.from_creator {
            bail!("the first message of an exchange must be the fan's");
        }
        let sent_at = fan_message.sent_at.unwrap_or(replied_at);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO fans (id, profile, created_at) VALUES (?1, NULL, ?2)",
            params![fan_id, sent_at.to_string()],
        )?;
        let insert = "INSERT INTO messages (fan_id, from_creator, content, sent_at) VALUES (?1, ?2, ?3, ?4)";
        tx.execute(
            insert,
            params![fan_id, false, fan_message.content, sent_at.to_string()],
        )?;
        tx.execute(
            insert,
            params![fan_id, true, reply.as_str(), replied_at.max(sent_at).to_string()],
        )?;
        if let Some(h) = handoff {
            tx.execute(
                "INSERT INTO handoffs (fan_id, category, reason, stop, at)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM handoffs WHERE fan_id = ?1 AND category = ?2 AND cleared_at IS NULL)",
                params![fan_id, h.category, h.reason, h.stop, h.at.to_string()],
            )?;
        }
        tx.commit().with_context(|| {
            format!(
                "saving an exchange of fan `{fan_id}` to `{}`",
                self.path.display()
            )
        })?;
        Ok(())
    }

    /// Sets a fan's profile, creating the fan if needed.
    pub fn set_profile(&mut self, fan_id: &str, profile: &FanProfile) -> Result<()> {
        check_fan_id(fan_id)?;
        let text = serde_json::to_string(profile)?;
        self.conn.execute(
            "INSERT INTO fans (id, profile, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET profile = excluded.profile",
            params![fan_id, text, Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    /// A fan's open handoffs, oldest first.
    pub fn open_handoffs(&self, fan_id: &str) -> Result<Vec<Handoff>> {
        Ok(self.handoffs(Some(fan_id))?.into_iter().map(|(_, h)| h).collect())
    }

    /// The open handoff that stops the bot for this fan, if any.
    pub fn stopping_handoff(&self, fan_id: &str) -> Result<Option<Handoff>> {
        Ok(self.open_handoffs(fan_id)?.into_iter().find(|h| h.stop))
    }

    /// Every open handoff with its fan, oldest first.
    pub fn all_open_handoffs(&self) -> Result<Vec<(String, Handoff)>> {
        self.handoffs(None)
    }

    fn handoffs(&self, fan_id: Option<&str>) -> Result<Vec<(String, Handoff)>> {
        let mut stmt = self.conn.prepare(
            "SELECT fan_id, category, reason, stop, at FROM handoffs
             WHERE cleared_at IS NULL AND (?1 IS NULL OR fan_id = ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([fan_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (fan, category, reason, stop, at) = row?;
            let at: Timestamp = at
                .parse()
                .with_context(|| format!("reading the time `{at}` of a handoff of fan `{fan}`"))?;
            out.push((
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

    /// Closes a fan's open handoffs (a human has taken over and cleared it); returns how many
    /// were open, or `None` for a fan the store does not know.
    pub fn clear_handoff(&mut self, fan_id: &str, at: Timestamp) -> Result<Option<usize>> {
        if !self.exists(fan_id)? {
            return Ok(None);
        }
        let n = self.conn.execute(
            "UPDATE handoffs SET cleared_at = ?2 WHERE fan_id = ?1 AND cleared_at IS NULL",
            params![fan_id, at.to_string()],
        )?;
        Ok(Some(n))
    }

    /// Every fan with their message count, last message and open handoffs, most recent first.
    pub fn fans(&self) -> Result<Vec<FanSummary>> {
        let mut stmt = self.conn.prepare(
            "SELECT f.id, COUNT(m.id),
                    (SELECT content FROM messages WHERE fan_id = f.id ORDER BY id DESC LIMIT 1),
                    (SELECT sent_at FROM messages WHERE fan_id = f.id ORDER BY id DESC LIMIT 1)
             FROM fans f LEFT JOIN messages m ON m.fan_id = f.id
             GROUP BY f.id ORDER BY 4 DESC, f.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, usize>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut open: std::collections::HashMap<String, Vec<Handoff>> = std::collections::HashMap::new();
        for (fan, h) in self.all_open_handoffs()? {
            open.entry(fan).or_default().push(h);
        }
        let mut out = Vec::new();
        for row in rows {
            let (id, messages, last_message, last_at) = row?;
            let handoffs = open.remove(&id).unwrap_or_default();
            out.push(FanSummary {
                id,
                messages,
                last_message,
                last_at,
                handoffs,
            });
        }
        Ok(out)
    }

    /// Forgets a fan's messages (the profile stays).
    pub fn reset(&mut self, fan_id: &str) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM messages WHERE fan_id = ?1", [fan_id])?)
    }
}

/// One fan as `persona fans list` and the service show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FanSummary {
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

    #[test]
    fn exchanges_and_profiles_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/history.sqlite3");
        {
            let mut store = HistoryStore::open(&path).unwrap();
            let reply = CleanReply::for_tests("hey you");
            store
                .record_exchange(
                    "mike",
                    &fan("hi", "2026-01-01T10:00:00Z"),
                    &reply,
                    at("2026-01-01T10:01:00Z"),
                    None,
                )
                .unwrap();
            let mut profile = FanProfile::new();
            profile.insert("name".into(), "Mike".into());
            store.set_profile("mike", &profile).unwrap();
            store
                .record_exchange(
                    "ana",
                    &fan("yo", "2026-01-01T11:00:00Z"),
                    &reply,
                    at("2026-01-01T11:00:00Z"),
                    None,
                )
                .unwrap();
        }
        let store = HistoryStore::open(&path).unwrap();
        let (messages, profile) = store.load("mike").unwrap();
        let reply = Message {
            from_creator: true,
            content: "hey you".into(),
            sent_at: Some(at("2026-01-01T10:01:00Z")),
        };
        assert_eq!(messages, vec![fan("hi", "2026-01-01T10:00:00Z"), reply]);
        assert_eq!(profile.unwrap()["name"], "Mike");
        assert_eq!(store.load("ana").unwrap().0.len(), 2);
        assert!(store.load("nobody").unwrap().0.is_empty());
        assert!(!store.exists("nobody").unwrap());
    }

    #[test]
    fn a_reply_is_never_stored_before_its_fans_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
        let reply = CleanReply::for_tests("hey");
        // A clock that went backwards still stores the reply after the message.
        store
            .record_exchange(
                "mike",
                &fan("hi", "2026-01-01T10:00:00Z"),
                &reply,
                at("2026-01-01T09:00:00Z"),
                None,
            )
            .unwrap();
        let (messages, _) = store.load("mike").unwrap();
        assert!(messages[1].sent_at >= messages[0].sent_at);
        let creator_first = Message {
            from_creator: true,
            ..fan("hi", "2026-01-01T10:00:00Z")
        };
        assert!(store
            .record_exchange("mike", &creator_first, &reply, at("2026-01-01T10:00:00Z"), None)
            .is_err());
        assert_eq!(
            store.load("mike").unwrap().0.len(),
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
            .record_exchange("mike", &fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None)
            .unwrap();
        assert_eq!(store.reset("mike").unwrap(), 2);
        assert!(store.load("mike").unwrap().0.is_empty());
        assert!(store
            .record_exchange("", &fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None)
            .is_err());
        assert!(store
            .record_exchange(
                &"x".repeat(200),
                &fan("hi", "2026-01-01T10:00:00Z"),
                &reply,
                now,
                None
            )
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
                .record_exchange(
                    "kid",
                    &fan("im 15", "2026-01-01T10:00:00Z"),
                    &reply,
                    now,
                    Some(&handoff),
                )
                .unwrap();
        }
        store
            .record_exchange("ana", &fan("hi", "2026-01-01T10:00:00Z"), &reply, now, None)
            .unwrap();
        assert_eq!(
            store.open_handoffs("kid").unwrap(),
            vec![handoff.clone()],
            "one open per category"
        );
        assert_eq!(store.stopping_handoff("kid").unwrap(), Some(handoff.clone()));
        assert_eq!(
            store.all_open_handoffs().unwrap(),
            vec![("kid".to_string(), handoff)]
        );
        let fans = store.fans().unwrap();
        assert_eq!(fans.len(), 2);
        let kid = fans.iter().find(|f| f.id == "kid").unwrap();
        assert_eq!((kid.messages, kid.handoffs.len()), (4, 1));
        assert_eq!(store.clear_handoff("nobody", now).unwrap(), None);
        assert_eq!(store.clear_handoff("kid", now).unwrap(), Some(1));
        assert_eq!(store.stopping_handoff("kid").unwrap(), None);
        assert_eq!(store.clear_handoff("kid", now).unwrap(), Some(0));
    }
}
