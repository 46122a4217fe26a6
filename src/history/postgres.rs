//! The PostgreSQL history store: one history shared by every server that points at it.
//!
//! Owns the PostgreSQL schema (versioned in `persona_schema`, migrated under an advisory lock so
//! two servers starting at once migrate it once) and the SQL of every [`Store`] operation. Each
//! exchange is one transaction that first takes a per-fan advisory lock, so exchanges of one fan
//! written by two servers at once never interleave. The client is the blocking `postgres`
//! crate: `serve` calls the store from blocking threads, `ask` and `fans` from plain code.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use postgres::{Client, NoTls};

use super::drafts::{self, Decision, DraftStatus, NewDraft, Refusal, StoredDraft};
use super::{check_replaceable, Exchange, FanRef, FanSummary, Store};
use crate::conversation::{FanProfile, Message};
use crate::safety::Handoff;

const SCHEMA_VERSION: i32 = 2;

/// The advisory lock key of migrations (any constant; "persona" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6572_736f_6e61;

/// A history database on a PostgreSQL server.
pub struct PostgresStore {
    /// The connection; `None` only while being dropped.
    client: Option<Client>,
    /// The URL as given, to reconnect.
    target: String,
    /// The URL without its password, for messages.
    url: String,
}

impl Drop for PostgresStore {
    /// The blocking client says goodbye to the server by blocking on its own runtime, which
    /// panics on an async worker thread (where a server's state is dropped at shutdown): there
    /// the client is closed on a thread of its own.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(client) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// `url` with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects (within 5 seconds) and migrates the schema.
    pub fn open(url: &str) -> Result<Self> {
        let client = connect(url)?;
        let mut store = PostgresStore {
            client: Some(client),
            target: url.to_string(),
            url: redact(url),
        };
        store
            .migrate()
            .with_context(|| format!("preparing the history database `{}`", store.url))?;
        Ok(store)
    }

    /// The connection, opened again when the server closed it (a restart, a failover, an idle
    /// timeout): the request that finds it closed is answered, not failed.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.target)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the history database `{}` is closed", self.url))
    }

    fn migrate(&mut self) -> Result<()> {
        let mut tx = self.client()?.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS persona_schema (version INTEGER NOT NULL)")?;
        let version: i32 = tx
            .query_opt("SELECT version FROM persona_schema", &[])?
            .map_or(0, |r| r.get(0));
        if version > SCHEMA_VERSION {
            bail!("the history database has schema version {version}, newer than this persona ({SCHEMA_VERSION}); upgrade persona");
        }
        if version < 1 {
            tx.batch_execute(
                "CREATE TABLE fans (
                     creator TEXT NOT NULL,
                     id TEXT NOT NULL,
                     profile TEXT,
                     created_at TEXT NOT NULL,
                     PRIMARY KEY (creator, id)
                 );
                 CREATE TABLE messages (
                     id BIGSERIAL PRIMARY KEY,
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     from_creator BOOLEAN NOT NULL,
                     content TEXT NOT NULL,
                     sent_at TEXT NOT NULL,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 CREATE INDEX messages_by_fan ON messages(creator, fan_id, id);
                 CREATE TABLE handoffs (
                     id BIGSERIAL PRIMARY KEY,
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     category TEXT NOT NULL,
                     reason TEXT NOT NULL,
                     stop BOOLEAN NOT NULL,
                     at TEXT NOT NULL,
                     cleared_at TEXT,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 CREATE INDEX open_handoffs ON handoffs(creator, fan_id) WHERE cleared_at IS NULL;
                 CREATE TABLE idempotency (
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     key TEXT NOT NULL,
                     response TEXT NOT NULL,
                     at TEXT NOT NULL,
                     PRIMARY KEY (creator, fan_id, key),
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 DELETE FROM persona_schema;
                 INSERT INTO persona_schema (version) VALUES (1);",
            )?;
        }
        if version < 2 {
            tx.batch_execute(
                "CREATE TABLE drafts (
                     id TEXT PRIMARY KEY,
                     creator TEXT NOT NULL,
                     fan_id TEXT NOT NULL,
                     message_id BIGINT NOT NULL,
                     fan_message TEXT NOT NULL,
                     draft TEXT NOT NULL,
                     answer TEXT NOT NULL,
                     handoff_reply BOOLEAN NOT NULL,
                     status TEXT NOT NULL,
                     reply TEXT,
                     created_at TEXT NOT NULL,
                     decided_at TEXT,
                     FOREIGN KEY (creator, fan_id) REFERENCES fans(creator, id) ON DELETE CASCADE ON UPDATE CASCADE
                 );
                 CREATE INDEX pending_drafts ON drafts(creator, fan_id) WHERE status = 'pending';
                 DELETE FROM persona_schema;
                 INSERT INTO persona_schema (version) VALUES (2);",
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn connect(url: &str) -> Result<Client> {
    let shown = redact(url);
    let mut config = postgres::Config::from_str(url)
        .with_context(|| format!("`{shown}` is not a PostgreSQL URL such as postgres://user@host:5432/db"))?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(NoTls).with_context(|| {
        format!("connecting to the history database `{shown}`; is PostgreSQL running there and does the database exist?")
    })
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn claim_unassigned(&mut self, _creator: &str) -> Result<usize> {
        // PostgreSQL histories were per creator from their first version.
        Ok(0)
    }

    fn unassigned(&mut self) -> Result<usize> {
        Ok(0)
    }

    fn load(&mut self, fan: FanRef<'_>) -> Result<(Vec<Message>, Option<FanProfile>)> {
        let profile: Option<String> = self
            .client()?
            .query_opt(
                "SELECT profile FROM fans WHERE creator = $1 AND id = $2",
                &[&fan.creator, &fan.id],
            )?
            .and_then(|r| r.get(0));
        let rows = self.client()?.query(
            "SELECT from_creator, content, sent_at FROM messages WHERE creator = $1 AND fan_id = $2 ORDER BY id",
            &[&fan.creator, &fan.id],
        )?;
        let mut messages = Vec::with_capacity(rows.len());
        for r in rows {
            let sent_at: String = r.get(2);
            messages.push(super::message(fan, r.get(0), r.get(1), &sent_at)?);
        }
        Ok((messages, super::profile(fan, profile)?))
    }

    fn exists(&mut self, fan: FanRef<'_>) -> Result<bool> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT 1 FROM fans WHERE creator = $1 AND id = $2",
                &[&fan.creator, &fan.id],
            )?
            .is_some())
    }

    fn idempotent_response(&mut self, fan: FanRef<'_>, key: &str) -> Result<Option<String>> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT response FROM idempotency WHERE creator = $1 AND fan_id = $2 AND key = $3",
                &[&fan.creator, &fan.id, &key],
            )?
            .map(|r| r.get(0)))
    }

    fn record_exchange(&mut self, fan: FanRef<'_>, exchange: &Exchange<'_>) -> Result<()> {
        let (sent_at, replied_at) = exchange.checked(fan)?;
        let (sent_at, replied_at) = (sent_at.to_string(), replied_at.to_string());
        let mut tx = self.client()?.transaction()?;
        // Exchanges of one fan are written one at a time, whichever server writes them.
        lock_fan(&mut tx, fan.creator, fan.id)?;
        if exchange.replaces_last {
            let last_two = tx.query(
                "SELECT id, from_creator, content FROM messages
                 WHERE creator = $1 AND fan_id = $2 ORDER BY id DESC LIMIT 2",
                &[&fan.creator, &fan.id],
            )?;
            let shape: Vec<(bool, String)> = last_two.iter().map(|r| (r.get(1), r.get(2))).collect();
            check_replaceable(fan, &shape, &exchange.fan_message.content)?;
            for r in &last_two {
                let id: i64 = r.get(0);
                tx.execute("DELETE FROM messages WHERE id = $1", &[&id])?;
            }
        }
        tx.execute(
            "INSERT INTO fans (creator, id, profile, created_at) VALUES ($1, $2, NULL, $3)
             ON CONFLICT (creator, id) DO NOTHING",
            &[&fan.creator, &fan.id, &sent_at],
        )?;
        if let Some(profile) = exchange.profile {
            tx.execute(
                "UPDATE fans SET profile = $3 WHERE creator = $1 AND id = $2",
                &[&fan.creator, &fan.id, &serde_json::to_string(profile)?],
            )?;
        }
        let insert = "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES ($1, $2, $3, $4, $5)";
        tx.execute(
            insert,
            &[
                &fan.creator,
                &fan.id,
                &false,
                &exchange.fan_message.content,
                &sent_at,
            ],
        )?;
        tx.execute(
            insert,
            &[
                &fan.creator,
                &fan.id,
                &true,
                &exchange.reply.as_str(),
                &replied_at,
            ],
        )?;
        handoff_and_response(&mut tx, fan, exchange.handoff, exchange.idempotency, &replied_at)?;
        tx.commit()
            .with_context(|| format!("saving an exchange of {fan} to `{}`", self.url))?;
        Ok(())
    }

    fn set_profile(&mut self, fan: FanRef<'_>, profile: &FanProfile) -> Result<()> {
        super::check_fan_id(fan.id)?;
        let text = serde_json::to_string(profile)?;
        self.client()?.execute(
            "INSERT INTO fans (creator, id, profile, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (creator, id) DO UPDATE SET profile = excluded.profile",
            &[&fan.creator, &fan.id, &text, &Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    fn handoffs(
        &mut self,
        creator: Option<&str>,
        fan_id: Option<&str>,
    ) -> Result<Vec<(String, String, Handoff)>> {
        let rows = self.client()?.query(
            "SELECT creator, fan_id, category, reason, stop, at FROM handoffs
             WHERE cleared_at IS NULL AND ($1::text IS NULL OR creator = $1) AND ($2::text IS NULL OR fan_id = $2)
             ORDER BY id",
            &[&creator, &fan_id],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (creator, fan, at): (String, String, String) = (r.get(0), r.get(1), r.get(5));
            let h = super::handoff(&fan, r.get(2), r.get(3), r.get(4), &at)?;
            out.push((creator, fan, h));
        }
        Ok(out)
    }

    fn clear_handoff(&mut self, fan: FanRef<'_>, at: Timestamp) -> Result<Option<usize>> {
        if !self.exists(fan)? {
            return Ok(None);
        }
        let n = self.client()?.execute(
            "UPDATE handoffs SET cleared_at = $3 WHERE creator = $1 AND fan_id = $2 AND cleared_at IS NULL",
            &[&fan.creator, &fan.id, &at.to_string()],
        )?;
        Ok(Some(usize::try_from(n)?))
    }

    fn fan_rows(&mut self, creator: Option<&str>) -> Result<Vec<FanSummary>> {
        let rows = self.client()?.query(
            "SELECT f.creator, f.id, COUNT(m.id),
                    (SELECT content FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1),
                    (SELECT sent_at FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1),
                    (SELECT sent_at FROM messages WHERE creator = f.creator AND fan_id = f.id ORDER BY id DESC LIMIT 1 OFFSET 1),
                    (SELECT COUNT(*) FROM drafts WHERE creator = f.creator AND fan_id = f.id AND status = 'pending')
             FROM fans f LEFT JOIN messages m ON m.creator = f.creator AND m.fan_id = f.id
             WHERE $1::text IS NULL OR f.creator = $1
             GROUP BY f.creator, f.id ORDER BY 5 DESC NULLS LAST, f.creator, f.id",
            &[&creator],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(FanSummary {
                    creator: r.get(0),
                    id: r.get(1),
                    messages: usize::try_from(r.get::<_, i64>(2))?,
                    last_message: r.get(3),
                    last_at: r.get(4),
                    previous_at: r.get(5),
                    pending_drafts: usize::try_from(r.get::<_, i64>(6))?,
                    handoffs: Vec::new(),
                })
            })
            .collect()
    }

    fn reset(&mut self, fan: FanRef<'_>) -> Result<usize> {
        let mut tx = self.client()?.transaction()?;
        lock_fan(&mut tx, fan.creator, fan.id)?;
        tx.execute(
            "DELETE FROM drafts WHERE creator = $1 AND fan_id = $2",
            &[&fan.creator, &fan.id],
        )?;
        let n = tx.execute(
            "DELETE FROM messages WHERE creator = $1 AND fan_id = $2",
            &[&fan.creator, &fan.id],
        )?;
        tx.commit()?;
        Ok(usize::try_from(n)?)
    }

    fn record_draft(&mut self, fan: FanRef<'_>, draft: &NewDraft<'_>) -> Result<()> {
        let exchange = Exchange::new(draft.fan_message, draft.draft, draft.created_at);
        let (sent_at, created_at) = exchange.checked(fan)?;
        let (sent_at, created_at) = (sent_at.to_string(), created_at.to_string());
        let url = self.url.clone();
        let mut tx = self.client()?.transaction()?;
        lock_fan(&mut tx, fan.creator, fan.id)?;
        tx.execute(
            "INSERT INTO fans (creator, id, profile, created_at) VALUES ($1, $2, NULL, $3) ON CONFLICT DO NOTHING",
            &[&fan.creator, &fan.id, &sent_at],
        )?;
        if let Some(profile) = draft.profile {
            tx.execute(
                "UPDATE fans SET profile = $3 WHERE creator = $1 AND id = $2",
                &[&fan.creator, &fan.id, &serde_json::to_string(profile)?],
            )?;
        }
        let message_id: i64 = match draft.regenerates {
            Some(old) => {
                let row = tx
                    .query_opt(
                        "SELECT status, message_id FROM drafts WHERE id = $1 AND creator = $2 AND fan_id = $3",
                        &[&old, &fan.creator, &fan.id],
                    )?
                    .map(|r| (r.get(0), r.get(1)));
                let newest = newest_message(&mut tx, fan.creator, fan.id)?;
                let message_id = drafts::supersedable(row, newest)?;
                tx.execute(
                    "UPDATE drafts SET status = 'superseded', decided_at = $2 WHERE id = $1",
                    &[&old, &created_at],
                )?;
                message_id
            }
            None => tx
                .query_one(
                    "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at)
                     VALUES ($1, $2, FALSE, $3, $4) RETURNING id",
                    &[&fan.creator, &fan.id, &draft.fan_message.content, &sent_at],
                )?
                .get(0),
        };
        tx.execute(
            "INSERT INTO drafts (id, creator, fan_id, message_id, fan_message, draft, answer, handoff_reply, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
            &[
                &draft.id,
                &fan.creator,
                &fan.id,
                &message_id,
                &draft.fan_message.content,
                &draft.draft.as_str(),
                &draft.answer,
                &draft.handoff.is_some(),
                &created_at,
            ],
        )?;
        handoff_and_response(&mut tx, fan, draft.handoff, draft.idempotency, &created_at)?;
        tx.commit()
            .with_context(|| format!("saving a draft of {fan} to `{url}`"))?;
        Ok(())
    }

    fn pending_drafts(&mut self, creator: Option<&str>, fan: Option<&str>) -> Result<Vec<StoredDraft>> {
        let rows = self.client()?.query(
            &format!(
                "{DRAFT_COLUMNS} WHERE status = 'pending' AND ($1::text IS NULL OR creator = $1)
                 AND ($2::text IS NULL OR fan_id = $2) ORDER BY created_at, id"
            ),
            &[&creator, &fan],
        )?;
        rows.iter().map(draft_row).collect()
    }

    fn draft(&mut self, id: &str) -> Result<Option<StoredDraft>> {
        let row = self
            .client()?
            .query_opt(&format!("{DRAFT_COLUMNS} WHERE id = $1"), &[&id])?;
        row.as_ref().map(draft_row).transpose()
    }

    fn decide_draft(
        &mut self,
        id: &str,
        decision: Decision<'_>,
        at: Timestamp,
    ) -> Result<std::result::Result<StoredDraft, Refusal>> {
        let url = self.url.clone();
        let mut tx = self.client()?.transaction()?;
        let Some(row) = tx.query_opt(&format!("{DRAFT_COLUMNS} WHERE id = $1"), &[&id])? else {
            return Ok(Err(Refusal::NotFound));
        };
        let first = draft_row(&row)?;
        // Under the fan's lock, read again: another server may have decided it meanwhile.
        lock_fan(&mut tx, &first.creator, &first.fan_id)?;
        let Some(row) = tx.query_opt(&format!("{DRAFT_COLUMNS} WHERE id = $1"), &[&id])? else {
            return Ok(Err(Refusal::NotFound));
        };
        let mut draft = draft_row(&row)?;
        let newest = newest_message(&mut tx, &draft.creator, &draft.fan_id)?;
        let stopped: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM handoffs WHERE creator = $1 AND fan_id = $2 AND cleared_at IS NULL AND stop)",
                &[&draft.creator, &draft.fan_id],
            )?
            .get(0);
        if let Some(refused) = drafts::refusal(&draft, decision, newest, stopped) {
            return Ok(Err(refused));
        }
        let created: Timestamp = draft.created_at.parse().unwrap_or(at);
        let at = at.max(created).to_string();
        let (status, reply) = match decision {
            Decision::Approve(reply) => {
                tx.execute(
                    "INSERT INTO messages (creator, fan_id, from_creator, content, sent_at) VALUES ($1, $2, TRUE, $3, $4)",
                    &[&draft.creator, &draft.fan_id, &reply.as_str(), &at],
                )?;
                (DraftStatus::Approved, Some(reply.as_str().to_string()))
            }
            Decision::Reject => (DraftStatus::Rejected, None),
        };
        tx.execute(
            "UPDATE drafts SET status = $2, reply = $3, decided_at = $4 WHERE id = $1",
            &[&id, &status.as_str(), &reply, &at],
        )?;
        tx.commit()
            .with_context(|| format!("saving the decision on draft `{id}` to `{url}`"))?;
        draft.status = status;
        draft.reply = reply;
        Ok(Ok(draft))
    }
}

/// Takes the per-fan advisory lock for the rest of the transaction: writes of one fan, whichever
/// server makes them, happen one at a time.
fn lock_fan(tx: &mut postgres::Transaction<'_>, creator: &str, fan_id: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1 || chr(31) || $2))",
        &[&creator, &fan_id],
    )?;
    Ok(())
}

/// In a write's transaction: opens its handoff (unless the fan has an open one of that
/// category) and keeps the response under its idempotency key (a key is used once).
fn handoff_and_response(
    tx: &mut postgres::Transaction<'_>,
    fan: FanRef<'_>,
    handoff: Option<&Handoff>,
    idempotency: Option<(&str, &str)>,
    at: &str,
) -> Result<()> {
    if let Some(h) = handoff {
        tx.execute(
            "INSERT INTO handoffs (creator, fan_id, category, reason, stop, at)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM handoffs
                               WHERE creator = $1 AND fan_id = $2 AND category = $3 AND cleared_at IS NULL)",
            &[
                &fan.creator,
                &fan.id,
                &h.category,
                &h.reason,
                &h.stop,
                &h.at.to_string(),
            ],
        )?;
    }
    if let Some((key, response)) = idempotency {
        tx.execute(
            "INSERT INTO idempotency (creator, fan_id, key, response, at) VALUES ($1, $2, $3, $4, $5)",
            &[&fan.creator, &fan.id, &key, &response, &at],
        )
        .with_context(|| format!("the idempotency key `{key}` of {fan} was already used"))?;
    }
    Ok(())
}

/// The row of a fan's newest message, either side (0 for none).
fn newest_message(tx: &mut postgres::Transaction<'_>, creator: &str, fan_id: &str) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT COALESCE(MAX(id), 0) FROM messages WHERE creator = $1 AND fan_id = $2",
            &[&creator, &fan_id],
        )?
        .get(0))
}

/// The columns [`draft_row`] reads.
const DRAFT_COLUMNS: &str =
    "SELECT id, creator, fan_id, fan_message, created_at, status, draft, reply, answer,
    message_id, handoff_reply FROM drafts";

/// A row of [`DRAFT_COLUMNS`].
fn draft_row(r: &postgres::Row) -> Result<StoredDraft> {
    let draft_id: String = r.get(0);
    let status: String = r.get(5);
    let answer: String = r.get(8);
    Ok(StoredDraft {
        creator: r.get(1),
        fan_id: r.get(2),
        fan_message: r.get(3),
        created_at: r.get(4),
        status: DraftStatus::parse(&status)?,
        draft: r.get(6),
        reply: r.get(7),
        answer: serde_json::from_str(&answer)
            .with_context(|| format!("reading the stored answer of draft `{draft_id}`"))?,
        message_id: r.get(9),
        handoff_reply: r.get(10),
        draft_id,
    })
}

#[cfg(test)]
mod tests {
    //! What only PostgreSQL has: migrations raced by two servers, a server that does not answer.
    //! The shared contract is checked in `history`'s tests.

    use super::*;
    use crate::history::tests::postgres_url;

    /// A fresh database on the test server, dropped at the end; returns its URL.
    struct FreshDatabase {
        admin: Client,
        name: String,
        url: String,
    }

    impl FreshDatabase {
        fn new() -> Self {
            let base = postgres_url();
            let mut admin = Client::connect(&base, NoTls).unwrap();
            let name = format!("persona_t_{}", Timestamp::now().as_nanosecond());
            admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            FreshDatabase {
                url: format!("{prefix}/{name}"),
                admin,
                name,
            }
        }
    }

    impl Drop for FreshDatabase {
        fn drop(&mut self) {
            let _ = self
                .admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }

    #[test]
    fn two_servers_migrating_at_once_migrate_once_and_a_newer_schema_is_refused() {
        let db = FreshDatabase::new();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url.clone();
                std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
            })
            .collect();
        for o in opens {
            o.join().unwrap().expect("every concurrent open succeeds");
        }
        let mut client = Client::connect(&db.url, NoTls).unwrap();
        let versions: Vec<i32> = client
            .query("SELECT version FROM persona_schema", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [SCHEMA_VERSION]);
        client
            .batch_execute("UPDATE persona_schema SET version = 99")
            .unwrap();
        let err = PostgresStore::open(&db.url).err().unwrap();
        assert!(format!("{err:#}").contains("newer than this persona"), "{err:#}");
    }

    #[test]
    fn a_store_dropped_on_an_async_worker_closes_without_panicking() {
        let db = FreshDatabase::new();
        let store = PostgresStore::open(&db.url).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        // Where a server's state is dropped when it shuts down.
        let dropped = rt.spawn(async move { drop(store) });
        rt.block_on(dropped)
            .expect("dropping the store on a worker thread does not panic");
    }

    #[test]
    fn a_connection_the_server_closed_is_opened_again() {
        let db = FreshDatabase::new();
        let mut store = PostgresStore::open(&db.url).unwrap();
        let mut admin = Client::connect(&db.url, NoTls).unwrap();
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        // The backend ends asynchronously: wait until it is gone.
        while admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let fan = FanRef::new("Wren", "ana");
        // The first call may meet the closed connection; the store is usable again right after.
        let _ = store.exists(fan);
        assert!(!store.exists(fan).unwrap());
    }

    #[test]
    fn a_server_that_does_not_answer_is_named_without_its_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PostgresStore::open(&format!("postgres://bob:hunter2@127.0.0.1:{port}/p"))
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("is PostgreSQL running there"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact("postgres://bob:hunter2@db:5432/p"),
            "postgres://bob:***@db:5432/p"
        );
        assert_eq!(redact("postgres://bob@db/p"), "postgres://bob@db/p");
    }
}
