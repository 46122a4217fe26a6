//! The SQLite history store: the embedded default, one file.
//!
//! Owns the SQLite schema (versioned with `PRAGMA user_version`, migrated inside the write lock),
//! WAL mode with full sync, and the SQL of every [`Store`] operation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::drafts::{self, Decision, DraftStatus, NewDraft, Refusal, StoredDraft};
use super::{check_replaceable, Exchange, FanRef, FanSummary, Store};
use crate::conversation::{FanProfile, Message};
use crate::safety::Handoff;

const SCHEMA_VERSION: i32 = 4;

/// A history database in an SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the history directory `{}`", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening the history database `{}`", path.display()))?;
        let store = SqliteStore {
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
        if version < 4 {
            tx.execute_batch(
                "CREATE TABLE drafts (
                     id TEXT PRIMARY KEY,
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     message_id INTEGER NOT NULL,
                     fan_message TEXT NOT NULL,
                     draft TEXT NOT NULL,
                     answer TEXT NOT NULL,
                     handoff_reply INTEGER NOT NULL,
                     status TEXT NOT NULL,
                     reply TEXT,
                     created_at TEXT NOT NULL,
                     decided_at TEXT,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 CREATE INDEX pending_drafts ON drafts(creator, fan_id) WHERE status = 'pending';
                 PRAGMA user_version = 4;
",
            )?;
        }
        tx.commit()?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn claim_unassigned(&mut self, creator: &str) -> Result<usize> {
        if creator.is_empty() {
            return Ok(0);
        }
        Ok(self.conn.execute(
            "UPDATE OR IGNORE fans SET creator = ?1 WHERE creator = ''",
            [creator],
        )?)
    }

    fn unassigned(&mut self) -> Result<usize> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM fans WHERE creator = ''", [], |r| r.get(0))?)
    }

    fn load(&mut self, fan: FanRef<'_>) -> Result<(Vec<Message>, Option<FanProfile>)> {
        let profile: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT profile FROM fans WHERE creator = ?1 AND id = ?2",
                [fan.creator, fan.id],
                |r| r.get(0),
            )
            .optional()?;
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
            messages.push(super::message(fan, from_creator, content, &sent_at)?);
        }
        Ok((messages, super::profile(fan, profile.flatten())?))
    }

    fn exists(&mut self, fan: FanRef<'_>) -> Result<bool> {
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

    fn idempotent_response(&mut self, fan: FanRef<'_>, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT response FROM idempotency WHERE creator = ?1 AND fan_id = ?2 AND key = ?3",
                [fan.creator, fan.id, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn record_exchange(&mut self, fan: FanRef<'_>, exchange: &Exchange<'_>) -> Result<()> {
        let (sent_at, replied_at) = exchange.checked(fan)?;
        let (sent_at, replied_at) = (sent_at.to_string(), replied_at.to_string());
        let tx = self.conn.transaction()?;
        if exchange.replaces_last {
            let last_two: Vec<(i64, bool, String)> = tx
                .prepare(
                    "SELECT id, from_creator, content FROM messages
                     WHERE creator = ?1 AND fan_id = ?2 ORDER BY id DESC LIMIT 2",
                )?
                .query_map([fan.creator, fan.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let shape: Vec<(bool, String)> = last_two.iter().map(|(_, f, c)| (*f, c.clone())).collect();
            check_replaceable(fan, &shape, &exchange.fan_message.content)?;
            for (id, _, _) in &last_two {
                tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO fans (creator, id, profile, created_at) VALUES (?1, ?2, NULL, ?3)",
            params![fan.creator, fan.id, sent_at],
        )?;
        if let Some(profile) = exchange.profile {
            tx.execute(
                "UPDATE fans SET profile = ?3 WHERE creator = ?1 AND id = ?2",
                params![fan.creator, fan.id, serde_json::to_string(profile)?],
            )?;
        }
        let insert = "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES (?1, ?2, ?3, ?4, ?5)";
        tx.execute(
            insert,
            params![fan.creator, fan.id, false, exchange.fan_message.content, sent_at],
        )?;
        tx.execute(
            insert,
            params![fan.creator, fan.id, true, exchange.reply.as_str(), replied_at],
        )?;
        handoff_and_response(&tx, fan, exchange.handoff, exchange.idempotency, &replied_at)?;
        tx.commit()
            .with_context(|| format!("saving an exchange of {fan} to `{}`", self.path.display()))?;
        Ok(())
    }

    fn set_profile(&mut self, fan: FanRef<'_>, profile: &FanProfile) -> Result<()> {
        super::check_fan_id(fan.id)?;
        let text = serde_json::to_string(profile)?;
        self.conn.execute(
            "INSERT INTO fans (creator, id, profile, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(creator, id) DO UPDATE SET profile = excluded.profile",
            params![fan.creator, fan.id, text, Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    fn handoffs(
        &mut self,
        creator: Option<&str>,
        fan_id: Option<&str>,
    ) -> Result<Vec<(String, String, Handoff)>> {
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
            let h = super::handoff(&fan, category, reason, stop, &at)?;
            out.push((creator, fan, h));
        }
        Ok(out)
    }

    fn clear_handoff(&mut self, fan: FanRef<'_>, at: Timestamp) -> Result<Option<usize>> {
        if !self.exists(fan)? {
            return Ok(None);
        }
        let n = self.conn.execute(
            "UPDATE handoffs SET cleared_at = ?3 WHERE creator = ?1 AND fan_id = ?2 AND cleared_at IS NULL",
            params![fan.creator, fan.id, at.to_string()],
        )?;
        Ok(Some(n))
    }

    fn fan_rows(&mut self, creator: Option<&str>) -> Result<Vec<FanSummary>> {
        let mut stmt = self.conn.prepare(FAN_ROWS)?;
        let rows = stmt.query_map([creator], |r| {
            Ok(FanSummary {
                creator: r.get(0)?,
                id: r.get(1)?,
                messages: r.get(2)?,
                last_message: r.get(3)?,
                last_at: r.get(4)?,
                previous_at: r.get(5)?,
                pending_drafts: r.get(6)?,
                handoffs: Vec::new(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn reset(&mut self, fan: FanRef<'_>) -> Result<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM drafts WHERE creator = ?1 AND fan_id = ?2",
            [fan.creator, fan.id],
        )?;
        let n = tx.execute(
            "DELETE FROM messages WHERE creator = ?1 AND fan_id = ?2",
            [fan.creator, fan.id],
        )?;
        tx.commit()?;
        Ok(n)
    }

    fn record_draft(&mut self, fan: FanRef<'_>, draft: &NewDraft<'_>) -> Result<()> {
        let exchange = Exchange::new(draft.fan_message, draft.draft, draft.created_at);
        let (sent_at, created_at) = exchange.checked(fan)?;
        let (sent_at, created_at) = (sent_at.to_string(), created_at.to_string());
        // Immediate: a regenerate reads the draft and the newest message, then writes.
        let tx = rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO fans (creator, id, profile, created_at) VALUES (?1, ?2, NULL, ?3)",
            params![fan.creator, fan.id, sent_at],
        )?;
        if let Some(profile) = draft.profile {
            tx.execute(
                "UPDATE fans SET profile = ?3 WHERE creator = ?1 AND id = ?2",
                params![fan.creator, fan.id, serde_json::to_string(profile)?],
            )?;
        }
        let message_id: i64 = match draft.regenerates {
            Some(old) => {
                let row = tx
                    .query_row(
                        "SELECT status, message_id FROM drafts WHERE id = ?1 AND creator = ?2 AND fan_id = ?3",
                        params![old, fan.creator, fan.id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let message_id = drafts::supersedable(row, newest_message(&tx, fan.creator, fan.id)?)?;
                tx.execute(
                    "UPDATE drafts SET status = 'superseded', decided_at = ?2 WHERE id = ?1",
                    params![old, created_at],
                )?;
                message_id
            }
            None => {
                tx.execute(
                    "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES (?1, ?2, 0, ?3, ?4)",
                    params![fan.creator, fan.id, draft.fan_message.content, sent_at],
                )?;
                tx.last_insert_rowid()
            }
        };
        tx.execute(
            "INSERT INTO drafts (id, creator, fan_id, message_id, fan_message, draft, answer, handoff_reply, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
            params![
                draft.id,
                fan.creator,
                fan.id,
                message_id,
                draft.fan_message.content,
                draft.draft.as_str(),
                draft.answer,
                draft.handoff.is_some(),
                created_at
            ],
        )?;
        handoff_and_response(&tx, fan, draft.handoff, draft.idempotency, &created_at)?;
        tx.commit()
            .with_context(|| format!("saving a draft of {fan} to `{}`", self.path.display()))?;
        Ok(())
    }

    fn pending_drafts(&mut self, creator: Option<&str>, fan: Option<&str>) -> Result<Vec<StoredDraft>> {
        let sql = format!(
            "{DRAFT_COLUMNS} WHERE status = 'pending' AND (?1 IS NULL OR creator = ?1) AND (?2 IS NULL OR fan_id = ?2)
             ORDER BY created_at, id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![creator, fan], draft_row)?;
        rows.map(|r| r?).collect()
    }

    fn draft(&mut self, id: &str) -> Result<Option<StoredDraft>> {
        draft_by_id(&self.conn, id)
    }

    fn decide_draft(
        &mut self,
        id: &str,
        decision: Decision<'_>,
        at: Timestamp,
    ) -> Result<std::result::Result<StoredDraft, Refusal>> {
        let tx = rusqlite::Transaction::new(&mut self.conn, rusqlite::TransactionBehavior::Immediate)?;
        let Some(mut draft) = draft_by_id(&tx, id)? else {
            return Ok(Err(Refusal::NotFound));
        };
        let newest = newest_message(&tx, &draft.creator, &draft.fan_id)?;
        let stopped: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM handoffs WHERE creator = ?1 AND fan_id = ?2 AND cleared_at IS NULL AND stop)",
            [&draft.creator, &draft.fan_id],
            |r| r.get(0),
        )?;
        if let Some(refused) = drafts::refusal(&draft, decision, newest, stopped) {
            return Ok(Err(refused));
        }
        let created: Timestamp = draft.created_at.parse().unwrap_or(at);
        let at = at.max(created).to_string();
        let (status, reply) = match decision {
            Decision::Approve(reply) => {
                tx.execute(
                    "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES (?1, ?2, 1, ?3, ?4)",
                    params![draft.creator, draft.fan_id, reply.as_str(), at],
                )?;
                (DraftStatus::Approved, Some(reply.as_str().to_string()))
            }
            Decision::Reject => (DraftStatus::Rejected, None),
        };
        tx.execute(
            "UPDATE drafts SET status = ?2, reply = ?3, decided_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), reply, at],
        )?;
        tx.commit()
            .with_context(|| format!("saving the decision on draft `{id}` to `{}`", self.path.display()))?;
        draft.status = status;
        draft.reply = reply;
        Ok(Ok(draft))
    }
}

/// In a write's transaction: opens its handoff (unless the fan has an open one of that
/// category) and keeps the response under its idempotency key (a key is used once).
fn handoff_and_response(
    tx: &Connection,
    fan: FanRef<'_>,
    handoff: Option<&Handoff>,
    idempotency: Option<(&str, &str)>,
    at: &str,
) -> Result<()> {
    if let Some(h) = handoff {
        tx.execute(
            "INSERT INTO handoffs (creator, fan_id, category, reason, stop, at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE NOT EXISTS (SELECT 1 FROM handoffs
                               WHERE creator = ?1 AND fan_id = ?2 AND category = ?3 AND cleared_at IS NULL)",
            params![
                fan.creator,
                fan.id,
                h.category,
                h.reason,
                h.stop,
                h.at.to_string()
            ],
        )?;
    }
    if let Some((key, response)) = idempotency {
        tx.execute(
            "INSERT INTO idempotency (creator, fan_id, key, response, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![fan.creator, fan.id, key, response, at],
        )
        .with_context(|| format!("the idempotency key `{key}` of {fan} was already used"))?;
    }
    Ok(())
}

/// The row of a fan's newest message, either side (0 for none).
fn newest_message(conn: &Connection, creator: &str, fan_id: &str) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM messages WHERE creator = ?1 AND fan_id = ?2",
        [creator, fan_id],
        |r| r.get(0),
    )?)
}

/// The columns [`draft_row`] reads.
const DRAFT_COLUMNS: &str =
    "SELECT id, creator, fan_id, fan_message, created_at, status, draft, reply, answer,
    message_id, handoff_reply FROM drafts";

fn draft_by_id(conn: &Connection, id: &str) -> Result<Option<StoredDraft>> {
    conn.query_row(&format!("{DRAFT_COLUMNS} WHERE id = ?1"), [id], draft_row)
        .optional()?
        .transpose()
}

/// A row of [`DRAFT_COLUMNS`]; the outer error is SQLite's, the inner one a damaged row.
fn draft_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredDraft>> {
    let status: String = r.get(5)?;
    let answer: String = r.get(8)?;
    let draft_id: String = r.get(0)?;
    Ok((|| {
        Ok(StoredDraft {
            creator: r.get(1)?,
            fan_id: r.get(2)?,
            fan_message: r.get(3)?,
            created_at: r.get(4)?,
            status: DraftStatus::parse(&status)?,
            draft: r.get(6)?,
            reply: r.get(7)?,
            answer: serde_json::from_str(&answer)
                .with_context(|| format!("reading the stored answer of draft `{draft_id}`"))?,
            message_id: r.get(9)?,
            handoff_reply: r.get(10)?,
            draft_id: draft_id.clone(),
        })
    })())
}

/// Every fan with their message count and last message, most recent first (`?1`: a creator or
/// NULL for all).
const FAN_ROWS: &str = "
    SELECT f.creator, f.id, COUNT(m.id),
           (SELECT content FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1),
           (SELECT sent_at FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1),
           (SELECT sent_at FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1 OFFSET 1),
           (SELECT COUNT(*) FROM drafts WHERE creator = f.creator AND fan_id = f.id AND status = 'pending')
    FROM fans f LEFT JOIN messages m ON m.creator = f.creator AND m.fan_id = f.id
    WHERE ?1 IS NULL OR f.creator = ?1
    GROUP BY f.creator, f.id ORDER BY 5 DESC NULLS LAST, f.creator, f.id";

#[cfg(test)]
mod tests {
    //! What only the SQLite file has: reopening, and the migration of databases written before
    //! histories were kept per creator. The shared contract is checked in `history`'s tests.

    use super::*;
    use crate::answer::refine::CleanReply;
    use crate::history::tests::{at, ex, fan};

    const C: &str = "Wren";

    fn k(id: &str) -> FanRef<'_> {
        FanRef::new(C, id)
    }

    #[test]
    fn exchanges_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/history.sqlite3");
        {
            let mut store = SqliteStore::open(&path).unwrap();
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
        }
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load(k("mike")).unwrap().0.len(), 2);
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
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.unassigned().unwrap(), 1);
        assert!(
            store.load(k("mike")).unwrap().0.is_empty(),
            "not yet any creator's"
        );
        assert_eq!(store.claim_unassigned(C).unwrap(), 1);
        assert_eq!(store.load(k("mike")).unwrap().0.len(), 2);
        assert!(
            store.stopping_handoff(k("mike")).unwrap().is_some(),
            "handoffs follow their fan"
        );
        assert_eq!(store.load(FanRef::new("Ivy", "mike")).unwrap().0.len(), 0);
        drop(store);
        let newer = Connection::open(&path).unwrap();
        newer.pragma_update(None, "user_version", 99).unwrap();
        drop(newer);
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(format!("{err:#}").contains("newer than this persona"), "{err:#}");
    }
}
