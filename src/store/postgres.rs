//! PostgreSQL engine, for several bridge replicas sharing one database.
//!
//! Same contract as SQLite: a webhook and its events in one transaction; dedupe by the primary
//! key on (source, event_id), so two replicas receiving the same redelivery at once store it
//! once (`ON CONFLICT DO NOTHING` waits for the other transaction, then sees its row); leases
//! taken with `FOR UPDATE SKIP LOCKED` in one autocommit statement, so no row lock is held
//! across the HTTP call, and a replica that dies leaves its leases to expire. Concurrent commits
//! share WAL flushes (PostgreSQL's own group commit), so no batching thread is needed here.

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::body::StoredBody;
use super::{
    Acceptance, Completion, DeadLetter, DeadSelector, Leased, NewWebhook, PruneReport, QueueStats,
    ReplayQuery, ReplayUpdate, Store, StoreError, StoredEmission, StoredEvent, StoredWebhook,
    now_ms,
};

/// Versioned migrations, applied in order under an advisory lock so replicas starting at once
/// do not race. Never edit a released step; add a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE webhooks (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    headers     TEXT NOT NULL,
    body        BYTEA NOT NULL
);
CREATE INDEX webhooks_received ON webhooks (source, received_at);
CREATE TABLE provider_events (
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    webhook_id  BIGINT NOT NULL REFERENCES webhooks (id),
    status      TEXT NOT NULL,
    detail      TEXT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX provider_events_webhook ON provider_events (webhook_id);
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    source          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    rule            TEXT NOT NULL,
    insert_id       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    request_id      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_event ON outbox (source, event_id);
CREATE INDEX outbox_state ON outbox (state, updated_at);
CREATE TABLE delivery_throttle (
    id         INTEGER PRIMARY KEY,
    not_before BIGINT NOT NULL
);
INSERT INTO delivery_throttle (id, not_before) VALUES (1, 0);
",
    ),
    (
        2,
        // Bodies compressed by the bridge (see `body.rs`); those stored before stay as received.
        "ALTER TABLE webhooks ADD COLUMN body_encoding TEXT NOT NULL DEFAULT 'identity';",
    ),
    (
        3,
        // Bodies come compressed by the bridge, so PostgreSQL's own compression of them only
        // fails; and once a row passed 2 KB (a Stripe webhook's did) the body was then moved
        // into the TOAST table, a second insert per webhook: 10 % of the server's CPU at
        // 1,500 webhooks/s. Rows up to a page now stay whole; longer bodies still go out of
        // line, without the attempt to compress them. Both apply to rows written from now on.
        "ALTER TABLE webhooks SET (toast_tuple_target = 8160);
         ALTER TABLE webhooks ALTER COLUMN body SET STORAGE EXTERNAL;",
    ),
];

/// Webhook ids per retention step.
const PRUNE_WINDOW: i64 = 512;

/// Retention's deletes for webhook ids in `$1..$2` and rows older than `$3`, in order:
/// finished deliveries, identities nothing is left to do for (mapping failures are kept for
/// replay), raw bodies no identity needs. Outbox events are reached through their identity.
const PRUNE: [&str; 3] = [
    "DELETE FROM outbox o USING provider_events p
     WHERE p.webhook_id >= $1 AND p.webhook_id < $2
       AND o.source = p.source AND o.event_id = p.event_id
       AND o.state IN ('delivered', 'dry_run', 'dropped') AND o.updated_at < $3",
    "DELETE FROM provider_events p WHERE p.webhook_id >= $1 AND p.webhook_id < $2
     AND p.received_at < $3 AND p.status IN ('mapped', 'ignored')
     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.source = p.source AND o.event_id = p.event_id)",
    "DELETE FROM webhooks w WHERE w.id >= $1 AND w.id < $2 AND w.received_at < $3
     AND NOT EXISTS (SELECT 1 FROM provider_events p WHERE p.webhook_id = w.id)",
];

/// An arbitrary constant naming the migration lock.
const MIGRATION_LOCK: i64 = 0x6772_6565_6e66;

pub struct PostgresStore {
    pool: Pool,
}

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL connection pool: {e}"))
}

impl PostgresStore {
    /// Connects (a pool of `max_connections`) and applies pending migrations.
    pub async fn open(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let store = Self::connect(url, max_connections)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects lazily, without touching the schema.
    pub fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .build()
            .map_err(pool_error)?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; safe when several replicas start at once.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // "relation already exists, skipping" is expected on every start but the first.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let current: Option<i32> = tx
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .await?
            .get(0);
        let mut applied = Vec::new();
        for (version, sql) in MIGRATIONS {
            if current.is_some_and(|c| c >= *version) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            applied.push(*version);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn dead_letter(r: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: r.get(0),
        source: r.get(1),
        event_id: r.get(2),
        rule: r.get(3),
        insert_id: r.get(4),
        state: r.get(5),
        attempts: r.get::<_, i32>(6) as u32,
        last_status: r.get::<_, Option<i32>>(7).map(|s| s as u16),
        last_error: r.get(8),
        created_at_ms: r.get(9),
        updated_at_ms: r.get(10),
        payload: r.get(11),
    }
}

/// An accept in one statement (one round trip, committed on its own): the provider events new
/// to the store ($6..$9, each id once), the webhook's raw body ($5, encoded as $16) only if one
/// of them is new (a redelivered body is not kept), and the outbox events of the new ones
/// ($10..$13, each naming its provider event). The webhook id is drawn first because its events
/// point at it; their foreign key is checked at the end of the statement, when the webhook row
/// exists. Returns a row per new provider event (`NULL`, event id) and per outbox event (id,
/// event id, rule, insert id).
const ACCEPT: &str = "
WITH webhook AS (SELECT nextval('webhooks_id_seq') AS id),
new_events AS (
    INSERT INTO provider_events (source, event_id, event_type, webhook_id, status, detail, received_at)
    SELECT $1, e.event_id, e.event_type, webhook.id, e.status, e.detail, $3
    FROM unnest($6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[])
         WITH ORDINALITY AS e (event_id, event_type, status, detail, n),
         webhook
    ORDER BY e.n
    ON CONFLICT DO NOTHING
    RETURNING event_id
),
stored_webhook AS (
    INSERT INTO webhooks (id, source, request_id, received_at, headers, body, body_encoding)
    SELECT webhook.id, $1, $2, $3, $4, $5, $16 FROM webhook
    WHERE EXISTS (SELECT 1 FROM new_events)
),
new_outbox AS (
    INSERT INTO outbox (source, event_id, rule, insert_id, payload, next_attempt_at, created_at,
                        updated_at, request_id, lease_owner, lease_until)
    SELECT $1, o.event_id, o.rule, o.insert_id, o.payload, COALESCE($15::BIGINT, $3::BIGINT), $3, $3,
           $2, $14, $15
    FROM unnest($10::TEXT[], $11::TEXT[], $12::TEXT[], $13::TEXT[])
         WITH ORDINALITY AS o (event_id, rule, insert_id, payload, n)
    WHERE o.event_id IN (SELECT event_id FROM new_events)
    ORDER BY o.n
    RETURNING id, event_id, rule, insert_id
)
SELECT NULL::BIGINT, event_id, NULL::TEXT, NULL::TEXT FROM new_events
UNION ALL
SELECT id, event_id, rule, insert_id FROM new_outbox";

/// The outcomes of a group of deliveries by `$1`, in one statement, each row of the arrays one
/// event: its new state (`NULL`: still pending, to be retried), attempts to add (a throttled
/// retry or a dry run uses none), when to try next (`NULL`: unchanged), and whether the last
/// status and error stay as they were (a dry run records none). `lease_owner = $1` fences a
/// worker whose lease expired and was taken over.
const COMPLETE: &str = "
UPDATE outbox AS o SET
    state = COALESCE(c.state, o.state),
    attempts = o.attempts + c.attempts,
    next_attempt_at = COALESCE(c.next_attempt_at, o.next_attempt_at),
    last_status = CASE WHEN c.keep_result THEN o.last_status ELSE c.status END,
    last_error = CASE WHEN c.keep_result THEN o.last_error ELSE c.error END,
    lease_owner = NULL, lease_until = NULL, updated_at = $2
FROM unnest($3::BIGINT[], $4::TEXT[], $5::INT[], $6::BIGINT[], $7::BOOL[], $8::INT[], $9::TEXT[])
     AS c (id, state, attempts, next_attempt_at, keep_result, status, error)
WHERE o.id = c.id AND o.lease_owner = $1";

const OUTBOX_COLUMNS: &str = "id, source, event_id, rule, insert_id, state, attempts, last_status, last_error, created_at, updated_at, payload";

#[async_trait]
impl Store for PostgresStore {
    async fn accept(&self, webhook: NewWebhook) -> Result<Acceptance, StoreError> {
        // The first time an id appears in this webhook it may be new; any later time it is not.
        let mut firsts = std::collections::HashSet::new();
        let first: Vec<bool> = webhook
            .events
            .iter()
            .map(|e| firsts.insert(e.event_id.as_str()))
            .collect();
        let events = || {
            webhook
                .events
                .iter()
                .zip(&first)
                .filter(|(_, first)| **first)
                .map(|(e, _)| e)
        };
        let event_ids: Vec<&str> = events().map(|e| e.event_id.as_str()).collect();
        let event_types: Vec<&str> = events().map(|e| e.event_type.as_str()).collect();
        let statuses: Vec<&str> = events().map(|e| e.status).collect();
        let details: Vec<Option<&str>> = events().map(|e| e.detail.as_deref()).collect();
        let outs = || events().flat_map(|e| e.outbox.iter().map(move |out| (e, out)));
        let out_events: Vec<&str> = outs().map(|(e, _)| e.event_id.as_str()).collect();
        let rules: Vec<&str> = outs().map(|(_, o)| o.rule.as_str()).collect();
        let insert_ids: Vec<&str> = outs().map(|(_, o)| o.insert_id.as_str()).collect();
        let payloads: Vec<&str> = outs().map(|(_, o)| o.payload.as_str()).collect();
        let (owner, until_ms) = webhook.lease_columns();
        let body = StoredBody::encode(&webhook.body);
        let client = self.client().await?;
        let accept = client.prepare_cached(ACCEPT).await?;
        let rows = client
            .query(
                &accept,
                &[
                    &webhook.source,
                    &webhook.request_id,
                    &webhook.received_at_ms,
                    &webhook.headers_json,
                    &body.bytes(&webhook.body),
                    &event_ids,
                    &event_types,
                    &statuses,
                    &details,
                    &out_events,
                    &rules,
                    &insert_ids,
                    &payloads,
                    &owner,
                    &until_ms,
                    &body.encoding(),
                ],
            )
            .await?;
        let mut new_events = std::collections::HashSet::new();
        let mut stored_outbox = Vec::new();
        for row in &rows {
            let event_id: String = row.try_get(1)?;
            match row.try_get::<_, Option<i64>>(0)? {
                None => {
                    new_events.insert(event_id);
                }
                Some(id) => stored_outbox.push((
                    id,
                    event_id,
                    row.try_get::<_, String>(2)?,
                    row.try_get::<_, String>(3)?,
                )),
            }
        }
        let duplicates = webhook
            .events
            .iter()
            .zip(&first)
            .map(|(e, first)| !*first || !new_events.contains(&e.event_id))
            .collect();
        let mut claimed = Vec::new();
        if owner.is_some() {
            for (event, out) in outs().filter(|(e, _)| new_events.contains(&e.event_id)) {
                // Matched by what identifies it, not by position: RETURNING keeps no order.
                let at = stored_outbox
                    .iter()
                    .position(|(_, event_id, rule, insert_id)| {
                        *event_id == event.event_id
                            && *rule == out.rule
                            && *insert_id == out.insert_id
                    });
                // Every one is there; one that were not would still be stored, leased to this
                // process, and delivered through the lease path once its claim runs out.
                if let Some(at) = at {
                    let (id, ..) = stored_outbox.swap_remove(at);
                    claimed.push(Leased::claimed(id, &webhook, out));
                }
            }
        }
        Ok(Acceptance {
            duplicates,
            claimed,
        })
    }

    async fn lease(
        &self,
        owner: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Leased>, StoreError> {
        let client = self.client().await?;
        // A leased event is due again when its lease runs out, so it moves there in the due
        // index, and later leases no longer step over the events in flight (as in SQLite).
        let stmt = client
            .prepare_cached(
                "WITH due AS (
                     SELECT id FROM outbox
                     WHERE state = 'pending' AND next_attempt_at <= $3
                       AND (lease_until IS NULL OR lease_until < $3)
                     ORDER BY next_attempt_at, id LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbox o SET lease_owner = $1, lease_until = $2, next_attempt_at = $2
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.source, o.insert_id, o.payload, o.attempts, o.created_at, o.request_id",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[&owner, &(now_ms + lease_ms), &now_ms, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Leased {
                id: r.get(0),
                source: r.get(1),
                insert_id: r.get(2),
                payload: r.get(3),
                attempts: r.get::<_, i32>(4) as u32,
                created_at_ms: r.get(5),
                request_id: r.get(6),
            })
            .collect())
    }

    async fn complete(
        &self,
        owner: &str,
        now_ms: i64,
        done: Vec<Completion>,
    ) -> Result<(), StoreError> {
        // One statement for the whole group: one round trip and one commit, however many.
        let mut ids = Vec::with_capacity(done.len());
        let mut states: Vec<Option<&str>> = Vec::with_capacity(done.len());
        let mut attempts = Vec::with_capacity(done.len());
        let mut next_attempts: Vec<Option<i64>> = Vec::with_capacity(done.len());
        let mut keep_results = Vec::with_capacity(done.len());
        let mut statuses: Vec<Option<i32>> = Vec::with_capacity(done.len());
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(done.len());
        for completion in &done {
            let write = completion.write();
            // The first outcome of an event ends its lease; any later one finds it fenced.
            if ids.contains(&write.id) {
                continue;
            }
            ids.push(write.id);
            states.push(write.state);
            attempts.push(write.attempts as i32);
            next_attempts.push(write.next_attempt_ms);
            keep_results.push(write.keep_result);
            statuses.push(write.status.map(i32::from));
            errors.push(write.error);
        }
        let client = self.client().await?;
        let complete = client.prepare_cached(COMPLETE).await?;
        client
            .execute(
                &complete,
                &[
                    &owner,
                    &now_ms,
                    &ids,
                    &states,
                    &attempts,
                    &next_attempts,
                    &keep_results,
                    &statuses,
                    &errors,
                ],
            )
            .await?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        // The earliest event nobody holds, read off the due index in order.
        let row = client
            .query_opt(
                "SELECT next_attempt_at FROM outbox WHERE state = 'pending' AND lease_until IS NULL
                 ORDER BY next_attempt_at LIMIT 1",
                &[],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), MIN(created_at) FILTER (WHERE state = 'pending'),
                        COUNT(*) FILTER (WHERE state = 'dead') FROM outbox",
                &[],
            )
            .await?;
        Ok(QueueStats {
            pending: row.get::<_, i64>(0) as u64,
            oldest_pending_ms: row.get(1),
            dead: row.get::<_, i64>(2) as u64,
        })
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        // Other replicas may hold live leases; expired ones are taken over by `lease` anyway.
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT 1 FROM delivery_throttle WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
        tx.rollback().await?;
        Ok(())
    }

    async fn dead_letters(&self, source: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'dead' AND ($1::TEXT IS NULL OR source = $1)
                     ORDER BY updated_at DESC, id DESC"
                ),
                &[&source],
            )
            .await?;
        Ok(rows.iter().map(dead_letter).collect())
    }

    async fn outbox_event(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(dead_letter))
    }

    async fn retry_dead(&self, which: DeadSelector) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let now = now_ms();
        let set = "UPDATE outbox SET state = 'pending', next_attempt_at = $1, attempts = 0, created_at = $1, updated_at = $1,
                   lease_owner = NULL, lease_until = NULL WHERE state = 'dead'";
        let n = match which {
            DeadSelector::All => client.execute(set, &[&now]).await?,
            DeadSelector::Source(source) => {
                client
                    .execute(&format!("{set} AND source = $2"), &[&now, &source])
                    .await?
            }
            DeadSelector::Ids(ids) => {
                client
                    .execute(&format!("{set} AND id = ANY($2)"), &[&now, &ids])
                    .await?
            }
        };
        Ok(n)
    }

    async fn drop_dead(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let ids = ids.to_vec();
        Ok(client
            .execute(
                "UPDATE outbox SET state = 'dropped', updated_at = $2 WHERE state = 'dead' AND id = ANY($1)",
                &[&ids, &now_ms()],
            )
            .await?)
    }

    async fn stored_webhooks(&self, query: ReplayQuery) -> Result<Vec<StoredWebhook>, StoreError> {
        let client = self.client().await?;
        let webhooks = client
            .query(
                "SELECT id, received_at, headers, body, body_encoding FROM webhooks
                 WHERE source = $1 AND ($2::BIGINT IS NULL OR received_at >= $2) AND ($3::BIGINT IS NULL OR received_at < $3)
                 ORDER BY received_at, id",
                &[&query.source, &query.since_ms, &query.until_ms],
            )
            .await?;
        let mut out = Vec::new();
        for w in webhooks {
            let id: i64 = w.get(0);
            let mut events = Vec::new();
            for e in client
                .query("SELECT event_id, status FROM provider_events WHERE webhook_id = $1 ORDER BY event_id", &[&id])
                .await?
            {
                let (event_id, status): (String, String) = (e.get(0), e.get(1));
                if !query.statuses.is_empty() && !query.statuses.contains(&status) {
                    continue;
                }
                let emitted = client
                    .query(
                        "SELECT rule, insert_id, payload FROM outbox WHERE source = $1 AND event_id = $2 ORDER BY id",
                        &[&query.source, &event_id],
                    )
                    .await?
                    .iter()
                    .map(|r| StoredEmission { rule: r.get(0), insert_id: r.get(1), payload: r.get(2) })
                    .collect();
                events.push(StoredEvent { event_id, status, emitted });
            }
            if !events.is_empty() {
                out.push(StoredWebhook {
                    id,
                    received_at_ms: w.get(1),
                    headers_json: w.get(2),
                    body: Bytes::from(
                        StoredBody::decode(&w.try_get::<_, String>(4)?, w.try_get(3)?)
                            .map_err(|e| StoreError::StoredBody(e.to_string()))?,
                    ),
                    events,
                });
            }
        }
        Ok(out)
    }

    async fn record_replay(
        &self,
        source: &str,
        updates: Vec<ReplayUpdate>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = now_ms();
        for update in updates {
            tx.execute(
                "UPDATE provider_events SET status = $3, detail = $4 WHERE source = $1 AND event_id = $2",
                &[&source, &update.event_id, &update.status, &update.detail],
            )
            .await?;
            let request_id: String = tx
                .query_opt(
                    "SELECT w.request_id FROM provider_events p JOIN webhooks w ON w.id = p.webhook_id
                     WHERE p.source = $1 AND p.event_id = $2",
                    &[&source, &update.event_id],
                )
                .await?
                .map(|r| r.get(0))
                .unwrap_or_default();
            for out in &update.outbox {
                tx.execute(
                    "INSERT INTO outbox (source, event_id, rule, insert_id, payload, next_attempt_at, created_at, updated_at, request_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7)",
                    &[&source, &update.event_id, &out.rule, &out.insert_id, &out.payload, &now, &request_id],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn prune(&self, before_ms: i64) -> Result<PruneReport, StoreError> {
        // Step by step, oldest webhooks first, as on SQLite: each step is a short transaction
        // over a window of webhook ids, instead of one transaction over every table.
        let mut total = PruneReport::default();
        let mut client = self.client().await?;
        let mut from: Option<i64> = Some(0);
        while let Some(start) = from {
            let to = start.saturating_add(PRUNE_WINDOW);
            let tx = client.transaction().await?;
            let mut deleted = [0u64; 3];
            for (count, sql) in deleted.iter_mut().zip(PRUNE) {
                *count = tx.execute(sql, &[&start, &to, &before_ms]).await?;
            }
            let next = tx
                .query_opt(
                    "SELECT id, received_at FROM webhooks WHERE id >= $1 ORDER BY id LIMIT 1",
                    &[&to],
                )
                .await?;
            tx.commit().await?;
            total.add(PruneReport::deleted(deleted));
            from = next
                .filter(|row| row.get::<_, i64>(1) < before_ms)
                .map(|row| row.get(0));
        }
        Ok(total)
    }

    async fn throttled_until(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT not_before FROM delivery_throttle WHERE id = 1", &[])
            .await?
            .get(0))
    }

    async fn throttle(&self, until_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE delivery_throttle SET not_before = GREATEST(not_before, $1) WHERE id = 1",
                &[&until_ms],
            )
            .await?;
        Ok(())
    }
}
