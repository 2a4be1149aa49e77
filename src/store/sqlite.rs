//! SQLite engine: WAL, `synchronous=FULL`, and one writer thread that owns the connection.
//!
//! Every operation is a job sent to that thread. The thread takes whatever jobs are queued
//! (up to `MAX_BATCH`), runs them all in one `BEGIN IMMEDIATE` transaction, commits once, and
//! only then answers the callers; if one job fails, each then runs again in a transaction of
//! its own. Under load many webhooks share one fsync (group commit); when idle a lone webhook
//! commits at once — no timer, so no added latency. WAL checkpoints mostly run on a thread of
//! their own (`sqlite_checkpoint.rs`).

use std::path::Path;
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::body::StoredBody;
use super::sqlite_checkpoint;
use super::sqlite_identities::Identities;
use super::sqlite_ops as ops;
use super::{
    Acceptance, Completion, DeadLetter, DeadSelector, Leased, NewWebhook, PruneReport, QueueStats,
    ReplayQuery, ReplayUpdate, Store, StoreError, StoredWebhook, now_ms,
};

/// The most jobs committed together; bounds how long the first caller in a batch waits.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; callers wait (back-pressure) beyond this.
const QUEUE: usize = 4096;
/// How long a write waits for a lock held by another process before failing with 503.
const BUSY_TIMEOUT_MS: u32 = 5000;
/// Bytes per database page for stores created from now on (existing stores keep theirs).
const PAGE_SIZE: i64 = 8192;
const SCHEMA_V1: &str = "
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL
);
CREATE TABLE provider_events (
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    status      TEXT NOT NULL,
    detail      TEXT,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    source          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    insert_id       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_event ON outbox (source, event_id);
";

/// v2: the request id follows an event through delivery.
const SCHEMA_V2: &str = "
ALTER TABLE outbox ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
CREATE INDEX outbox_state ON outbox (state, updated_at);
CREATE INDEX webhooks_received ON webhooks (source, received_at);
";

/// v3: v2's (state, updated_at) index tempted the planner away from `outbox_due` for
/// `state = 'pending'`, turning every lease into a sort of the whole queue; dead letters get a
/// partial index of their own instead.
const SCHEMA_V3: &str = "
DROP INDEX outbox_state;
CREATE INDEX outbox_dead ON outbox (updated_at) WHERE state = 'dead';
";

/// v4: fewer pages written per webhook. Bodies may be stored compressed (`body_encoding`
/// `lz4`: LZ4 block with its length in front; `identity`: as received). Outbox events point at
/// their webhook by id, which only grows, instead of through a (source, event_id) index whose
/// random keys dirtied a page of their own on every accept; provider events get the same kind
/// of index, which replay and retention look them up by.
const SCHEMA_V4: &str = "
ALTER TABLE webhooks ADD COLUMN body_encoding TEXT NOT NULL DEFAULT 'identity';
ALTER TABLE outbox ADD COLUMN webhook_id INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET webhook_id = COALESCE((SELECT p.webhook_id FROM provider_events p
    WHERE p.source = outbox.source AND p.event_id = outbox.event_id), 0);
DROP INDEX outbox_event;
CREATE INDEX outbox_webhook ON outbox (webhook_id, event_id);
CREATE INDEX provider_events_webhook ON provider_events (webhook_id);
";

/// v5: provider events in arrival order. Keyed by (source, event_id), each accept wrote a page
/// of its own into the synced transaction, event ids being random; the dedupe lookup now lives
/// in an index beside the store (`sqlite_identities.rs`), which is rebuilt from this table.
/// `AUTOINCREMENT`: ids never go back, even after retention deletes the newest rows, so "every
/// row after id N" stays a complete account of what the index lacks. The store id ties the
/// index to this store.
const SCHEMA_V5: &str = "
CREATE TABLE provider_events_v5 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    status      TEXT NOT NULL,
    detail      TEXT,
    received_at INTEGER NOT NULL
);
INSERT INTO provider_events_v5 (source, event_id, event_type, webhook_id, status, detail, received_at)
    SELECT source, event_id, event_type, webhook_id, status, detail, received_at
    FROM provider_events ORDER BY webhook_id, event_id;
DROP TABLE provider_events;
ALTER TABLE provider_events_v5 RENAME TO provider_events;
CREATE INDEX provider_events_webhook ON provider_events (webhook_id);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO store_meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
";

/// v6: how many retention commits have deleted identities (`prunes`). The dedupe index records
/// the count its contents reflect; an index that reflects more prunes than the store has seen
/// was written against a later state of the store (the store was restored from a backup) and
/// may lack identities the store still holds, so it is rebuilt.
const SCHEMA_V6: &str = "
INSERT INTO store_meta (key, value) VALUES ('prunes', '0');
";

/// v7: two fewer pages written by every small commit (each table or index an accept touches
/// costs a WAL page per commit; at 2,000 webhooks/s these two were 1.8 of 9.1).
/// - `provider_events` drops `AUTOINCREMENT`, whose `sqlite_sequence` row was rewritten by
///   every accept. The writer keeps new ids above any it has used (`Identities`), so ids
///   still never repeat while it runs; after a restart, a store whose newest rows retention
///   deleted has a dedupe index ahead of it, which is rebuilt.
/// - `webhooks_received` gives way to `webhook_minutes`: per minute of `received_at`, the
///   smallest id of a webhook stored with a time in it, written once a minute. So every
///   webhook received in minute M or later has an id at least the smallest `first_id` from M
///   on, and replay by time reads the webhooks from there.
const SCHEMA_V7: &str = "
CREATE TABLE provider_events_v7 (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    status      TEXT NOT NULL,
    detail      TEXT,
    received_at INTEGER NOT NULL
);
INSERT INTO provider_events_v7 (id, source, event_id, event_type, webhook_id, status, detail, received_at)
    SELECT id, source, event_id, event_type, webhook_id, status, detail, received_at
    FROM provider_events ORDER BY id;
DROP TABLE provider_events;
ALTER TABLE provider_events_v7 RENAME TO provider_events;
CREATE INDEX provider_events_webhook ON provider_events (webhook_id);
DROP INDEX webhooks_received;
CREATE TABLE webhook_minutes (minute INTEGER PRIMARY KEY, first_id INTEGER NOT NULL);
INSERT INTO webhook_minutes (minute, first_id)
    SELECT received_at / 60000, MIN(id) FROM webhooks GROUP BY received_at / 60000;
";

/// What a job works with: the open batch transaction (as a `Connection`) and the dedupe lookup.
struct Writing<'a> {
    conn: &'a Connection,
    identities: &'a Identities,
}

impl std::ops::Deref for Writing<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// One operation for the writer thread.
trait Job: Send {
    /// Runs inside a batch transaction; says whether it succeeded. May run a second time, alone,
    /// after the batch was rolled back because another job in it failed.
    fn run(&mut self, writing: &Writing<'_>) -> bool;
    /// Answers the caller once its transaction has committed, or failed to.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Call<T, F> {
    work: F,
    outcome: Option<Result<T, rusqlite::Error>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: Fn(&Writing<'_>) -> Result<T, rusqlite::Error> + Send,
{
    fn run(&mut self, writing: &Writing<'_>) -> bool {
        let outcome = (self.work)(writing);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let result = match (committed, self.outcome) {
            (Err(why), _) => Err(StoreError::Unavailable(why)),
            (Ok(()), Some(outcome)) => outcome.map_err(StoreError::from),
            (Ok(()), None) => Err(StoreError::Unavailable("the operation did not run".into())),
        };
        // The caller may have gone away (client disconnected); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Leases up to `?4` events due at `?3` to `?1` until `?2`. A leased event is due again when its
/// lease runs out, so it moves to that place in the due index: the walk for due events then
/// meets only events nobody holds, instead of stepping over every event in flight on each
/// lease. (`lease_until` is still checked, for leases taken before events moved.)
const LEASE: &str = "UPDATE outbox SET lease_owner = ?1, lease_until = ?2, next_attempt_at = ?2
     WHERE id IN (
         SELECT id FROM outbox INDEXED BY outbox_due
         WHERE state = 'pending' AND next_attempt_at <= ?3
           AND (lease_until IS NULL OR lease_until < ?3)
         ORDER BY next_attempt_at LIMIT ?4)
     RETURNING id, source, insert_id, payload, attempts, created_at, request_id";

/// A handle to the writer thread; cheap to share.
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// A connection of its own for reads that grow with the data — queue statistics, dead
    /// letters, stored webhooks for replay — so that they never hold up the writer: counting
    /// a backlog of 200,000 events takes ~90 ms.
    reader: std::sync::Arc<std::sync::Mutex<Connection>>,
    /// One process owns a SQLite store, so the shared throttle can live in memory.
    throttled_until: std::sync::atomic::AtomicI64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        // Takes effect only when the database is created. 8 KB pages hold three compressed
        // Stripe-sized webhooks where 4 KB pages held one, so fewer pages are written per commit
        // (measured: ~25% more durable accepts per second at saturation).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 16 MB of page cache keeps the queue's hot pages out of read() calls.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))?;
        migrate(&conn)?;
        let reader = Connection::open(path)?;
        reader.pragma_update(None, "query_only", true)?;
        reader.busy_timeout(std::time::Duration::from_millis(u64::from(BUSY_TIMEOUT_MS)))?;
        let identities = Identities::open(&conn, path)?;
        sqlite_checkpoint::install(&mut conn, path)?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer(conn, identities, rx))
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            jobs,
            reader: std::sync::Arc::new(std::sync::Mutex::new(reader)),
            throttled_until: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Runs `work` on the writer thread inside the next batch transaction; resolves after the
    /// commit (with `work`'s result) or with the error that prevented it.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Writing<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            work,
            outcome: None,
            reply,
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on the reader connection, on a blocking thread, in one read transaction:
    /// it sees every commit made before it, and no later one between its statements.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            // A read that panicked left nothing behind (its transaction rolled back as it
            // unwound), so the connection stays usable.
            let conn = reader.lock().unwrap_or_else(|held| held.into_inner());
            let snapshot = conn.unchecked_transaction()?;
            let read = work(&snapshot)?;
            snapshot.finish()?;
            Ok(read)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // Each step commits with its version number, so an interrupted migration resumes.
    for (target, sql) in [
        (1, SCHEMA_V1),
        (2, SCHEMA_V2),
        (3, SCHEMA_V3),
        (4, SCHEMA_V4),
        (5, SCHEMA_V5),
        (6, SCHEMA_V6),
        (7, SCHEMA_V7),
    ] {
        if version < target {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql} PRAGMA user_version = {target}; COMMIT;"
            ))?;
        }
    }
    Ok(())
}

fn writer(mut conn: Connection, mut identities: Identities, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let jobs = batch.len();
        match run_together(&mut conn, &mut identities, &mut batch) {
            // One job failed among others and took them down with it: each runs again in a
            // transaction of its own, so that the failing one cannot spoil the others. (Cheaper
            // than a savepoint per job in the common case, where every job succeeds: savepoints
            // journal each page they touch.) A lone job's failure is its own answer.
            Ok(false) if jobs > 1 => {
                for mut job in batch {
                    let ran =
                        run_together(&mut conn, &mut identities, std::slice::from_mut(&mut job));
                    job.finish(ran.map(drop));
                }
            }
            Ok(_) => batch.into_iter().for_each(|job| job.finish(Ok(()))),
            Err(why) => {
                tracing::error!(error = %why, jobs, "Store could not commit; the batch is rolled back.");
                batch
                    .into_iter()
                    .for_each(|job| job.finish(Err(why.clone())));
            }
        }
        crate::telemetry::store_batch(jobs, started.elapsed());
    }
}

/// Runs `jobs` in one transaction and commits it if every job succeeds (true); rolls it back
/// as soon as one fails (false). Each job keeps its own outcome for its caller.
fn run_together(
    conn: &mut Connection,
    identities: &mut Identities,
    jobs: &mut [Box<dyn Job>],
) -> Result<bool, String> {
    let committed = commit_together(conn, identities, jobs);
    if matches!(committed, Ok(true)) {
        identities.committed();
    } else {
        identities.rolled_back();
    }
    committed
}

fn commit_together(
    conn: &mut Connection,
    identities: &Identities,
    jobs: &mut [Box<dyn Job>],
) -> Result<bool, String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let writing = Writing {
        conn: &tx,
        identities,
    };
    for job in jobs.iter_mut() {
        if !job.run(&writing) {
            // Dropping the transaction rolls it back.
            return Ok(false);
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(true)
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(&self, webhook: NewWebhook) -> Result<Acceptance, StoreError> {
        // Compressed here, on the caller's thread, so that the single writer only copies.
        let body = StoredBody::encode(&webhook.body);
        self.call(move |conn| accept(conn, &webhook, &body)).await
    }

    async fn lease(
        &self,
        owner: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Leased>, StoreError> {
        let owner = owner.to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(LEASE)?;
            let rows = stmt.query_map(
                params![owner, now_ms + lease_ms, now_ms, limit as i64],
                |r| {
                    Ok(Leased {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        insert_id: r.get(2)?,
                        payload: r.get(3)?,
                        attempts: r.get(4)?,
                        created_at_ms: r.get(5)?,
                        request_id: r.get(6)?,
                    })
                },
            )?;
            rows.collect()
        })
        .await
    }

    async fn complete(
        &self,
        owner: &str,
        now_ms: i64,
        done: Vec<Completion>,
    ) -> Result<(), StoreError> {
        let owner = owner.to_string();
        self.call(move |conn| {
            for completion in &done {
                complete(conn, &owner, now_ms, completion)?;
            }
            Ok(())
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.call(|conn| {
            // The earliest event nobody holds, found by walking the due index in order (events
            // in flight are skipped; a crashed holder's lease is covered by the idle poll).
            conn.prepare_cached(
                "SELECT next_attempt_at FROM outbox INDEXED BY outbox_due
                 WHERE state = 'pending' AND lease_until IS NULL ORDER BY next_attempt_at LIMIT 1",
            )?
            .query_row([], |r| r.get::<_, i64>(0))
            .optional()
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.read(|conn| {
            let (pending, oldest): (i64, Option<i64>) = conn.query_row(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let dead: i64 = conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'dead'",
                [],
                |r| r.get(0),
            )?;
            Ok(QueueStats {
                pending: pending as u64,
                oldest_pending_ms: oldest,
                dead: dead as u64,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|_| Ok(())).await
    }

    async fn dead_letters(&self, source: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let source = source.map(str::to_string);
        self.read(move |conn| ops::dead_letters(conn, source.as_deref()))
            .await
    }

    async fn outbox_event(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.read(move |conn| ops::outbox_event(conn, id)).await
    }

    async fn retry_dead(&self, which: DeadSelector) -> Result<u64, StoreError> {
        self.call(move |conn| ops::retry_dead(conn, &which, now_ms()))
            .await
    }

    async fn drop_dead(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.call(move |conn| ops::drop_dead(conn, &ids, now_ms()))
            .await
    }

    async fn stored_webhooks(&self, query: ReplayQuery) -> Result<Vec<StoredWebhook>, StoreError> {
        self.read(move |conn| ops::stored_webhooks(conn, &query))
            .await
    }

    async fn record_replay(
        &self,
        source: &str,
        updates: Vec<ReplayUpdate>,
    ) -> Result<(), StoreError> {
        let source = source.to_string();
        self.call(move |writing| {
            ops::record_replay(writing, writing.identities, &source, &updates, now_ms())
        })
        .await
    }

    async fn prune(&self, before_ms: i64) -> Result<PruneReport, StoreError> {
        // Step by step, each its own job, so that accepts keep committing in between. Starts
        // at 0: outbox events carried over from a v3 store without their webhook point there.
        let mut total = PruneReport::default();
        let mut from = Some(0);
        while let Some(start) = from {
            let (step, next) = self
                .call(move |conn| ops::prune_step(conn, start, before_ms))
                .await?;
            total.add(step);
            from = next;
        }
        if total.webhooks > 0 {
            self.call(|conn| ops::fold_minutes(conn)).await?;
        }
        Ok(total)
    }

    async fn throttled_until(&self) -> Result<i64, StoreError> {
        Ok(self
            .throttled_until
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn throttle(&self, until_ms: i64) -> Result<(), StoreError> {
        self.throttled_until
            .fetch_max(until_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        self.call(|conn| {
            // Leased events wait for their lease to run out (see `LEASE`); these are due now.
            let n = conn.execute(
                "UPDATE outbox SET lease_owner = NULL, lease_until = NULL,
                     next_attempt_at = MIN(next_attempt_at, ?1)
                 WHERE state = 'pending' AND lease_owner IS NOT NULL",
                [now_ms()],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

fn accept(
    writing: &Writing<'_>,
    webhook: &NewWebhook,
    body: &StoredBody,
) -> Result<Acceptance, rusqlite::Error> {
    let conn: &Connection = writing;
    let mut duplicates = Vec::with_capacity(webhook.events.len());
    for event in &webhook.events {
        let found = writing
            .identities
            .find(conn, &webhook.source, &event.event_id)?;
        duplicates.push(found.is_some());
    }
    if duplicates.iter().all(|d| *d) {
        return Ok(Acceptance {
            duplicates,
            claimed: Vec::new(),
        });
    }
    conn.prepare_cached(
        "INSERT INTO webhooks (source, request_id, received_at, headers, body, body_encoding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        webhook.source,
        webhook.request_id,
        webhook.received_at_ms,
        webhook.headers_json,
        body.bytes(&webhook.body),
        body.encoding(),
    ])?;
    let webhook_id = conn.last_insert_rowid();
    // Writes a page only for the first webhook of a minute; replay by time starts from here.
    // Ids only grow while webhooks are kept, but SQLite gives a deleted newest id again once
    // retention emptied the table, hence the smaller of the two.
    conn.prepare_cached(
        "INSERT INTO webhook_minutes (minute, first_id) VALUES (?1 / 60000, ?2)
         ON CONFLICT (minute) DO UPDATE SET first_id = excluded.first_id
         WHERE excluded.first_id < first_id",
    )?
    .execute(params![webhook.received_at_ms, webhook_id])?;
    let mut insert_event = conn.prepare_cached(
        // Above the newest row (as SQLite would number it, so a second process writing to the
        // store takes no id twice) and above every id this store has given out.
        "INSERT INTO provider_events (id, source, event_id, event_type, webhook_id, status, detail, received_at)
         VALUES (max(?1, COALESCE((SELECT MAX(id) FROM provider_events), 0) + 1),
                 ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut insert_outbox = conn.prepare_cached(ops::INSERT_OUTBOX)?;
    let (owner, until_ms) = webhook.lease_columns();
    let mut claimed = Vec::new();
    // The same event id twice in one body counts once.
    let mut seen = std::collections::HashSet::new();
    for (event, duplicate) in webhook.events.iter().zip(duplicates.iter_mut()) {
        if *duplicate {
            continue;
        }
        if !seen.insert(event.event_id.as_str()) {
            *duplicate = true;
            continue;
        }
        insert_event.execute(params![
            writing.identities.lowest_new_id(),
            webhook.source,
            event.event_id,
            event.event_type,
            webhook_id,
            event.status,
            event.detail,
            webhook.received_at_ms
        ])?;
        writing
            .identities
            .add(&webhook.source, &event.event_id, conn.last_insert_rowid());
        for out in &event.outbox {
            insert_outbox.execute(params![
                webhook.source,
                event.event_id,
                out.rule,
                out.insert_id,
                out.payload,
                webhook.received_at_ms,
                webhook.request_id,
                webhook_id,
                owner,
                until_ms,
            ])?;
            if owner.is_some() {
                claimed.push(Leased::claimed(conn.last_insert_rowid(), webhook, out));
            }
        }
    }
    Ok(Acceptance {
        duplicates,
        claimed,
    })
}

fn complete(
    conn: &Connection,
    owner: &str,
    now_ms: i64,
    completion: &Completion,
) -> Result<(), rusqlite::Error> {
    let write = completion.write();
    // `lease_owner = ?2` fences a worker whose lease expired and was taken over.
    conn.prepare_cached(
        "UPDATE outbox SET state = COALESCE(?3, state), attempts = attempts + ?4,
         next_attempt_at = COALESCE(?5, next_attempt_at),
         last_status = CASE WHEN ?6 THEN last_status ELSE ?7 END,
         last_error = CASE WHEN ?6 THEN last_error ELSE ?8 END,
         lease_owner = NULL, lease_until = NULL, updated_at = ?9
         WHERE id = ?1 AND lease_owner = ?2",
    )?
    .execute(params![
        write.id,
        owner,
        write.state,
        write.attempts,
        write.next_attempt_ms,
        write.keep_result,
        write.status,
        write.error,
        now_ms
    ])
    .map(|_| ())
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_identities_tests.rs"]
mod identities_tests;
