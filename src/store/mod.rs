//! Durable state: raw webhooks, provider-event identities (dedupe) and the outbox of
//! Greenflash events awaiting delivery.
//!
//! The contract every engine keeps: `accept` writes a webhook and all its events in one
//! transaction and returns only once that transaction is durable; a provider event already
//! stored (same source and id) is reported as a duplicate and nothing of it is written again;
//! `lease` hands each due event to one worker at a time until its lease expires (an `accept`
//! with a [`Claim`] stores its events already leased, for delivery to take them straight from
//! intake); `complete` only applies to events the caller still holds (fencing against a stale
//! worker).

mod body;
mod postgres;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_dedupe_filter;
mod sqlite_dedupe_runs;
mod sqlite_identities;
mod sqlite_ops;

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A verified, mapped webhook, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub source: String,
    pub request_id: String,
    pub received_at_ms: i64,
    /// Headers kept for re-mapping (see `Headers::to_stored_json`).
    pub headers_json: String,
    pub body: Bytes,
    pub events: Vec<NewProviderEvent>,
    /// Store the new outbox events already leased, as `lease` would, and return them in
    /// [`Acceptance::claimed`]; `None` stores them due now, for `lease` to find.
    pub claim: Option<Claim>,
}

/// A lease taken at the moment events are stored: `owner` holds them until `until_ms`, when
/// they fall due for anyone (the same state `lease` leaves an event in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub until_ms: i64,
}

impl NewWebhook {
    /// The outbox's `lease_owner` and `lease_until` for this webhook's events: its claim's, or
    /// none (due at once).
    fn lease_columns(&self) -> (Option<&str>, Option<i64>) {
        match &self.claim {
            Some(claim) => (Some(claim.owner.as_str()), Some(claim.until_ms)),
            None => (None, None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewProviderEvent {
    pub event_id: String,
    pub event_type: String,
    /// `mapped`, `ignored` or `mapping_failed`.
    pub status: &'static str,
    /// Why it was ignored or failed, for operators.
    pub detail: Option<String>,
    pub outbox: Vec<NewOutboxEvent>,
}

#[derive(Debug, Clone)]
pub struct NewOutboxEvent {
    pub rule: String,
    pub insert_id: String,
    /// The Greenflash event as JSON, exactly as it will be sent.
    pub payload: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: u64,
    /// When the oldest pending event was accepted (ms).
    pub oldest_pending_ms: Option<i64>,
    pub dead: u64,
}

/// What `accept` did with each provider event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub duplicates: Vec<bool>,
    /// With a [`Claim`]: every outbox event stored, leased to its owner, in order.
    pub claimed: Vec<Leased>,
}

impl Acceptance {
    /// Whether anything new was stored (so delivery should look for work).
    pub fn stored_new(&self) -> bool {
        self.duplicates.iter().any(|d| !d)
    }
}

/// An outbox event handed to one delivery worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub id: i64,
    pub source: String,
    pub insert_id: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at_ms: i64,
    /// The request that brought the webhook, so logs follow it through delivery.
    pub request_id: String,
}

impl Leased {
    /// The outbox event `out` of `webhook`, stored as `id` under a claim, as delivery gets it.
    fn claimed(id: i64, webhook: &NewWebhook, out: &NewOutboxEvent) -> Self {
        Self {
            id,
            source: webhook.source.clone(),
            insert_id: out.insert_id.clone(),
            payload: out.payload.clone(),
            attempts: 0,
            created_at_ms: webhook.received_at_ms,
            request_id: webhook.request_id.clone(),
        }
    }
}

/// The end of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Delivered {
        id: i64,
        status: u16,
    },
    /// Try again at `next_attempt_ms`. `counts` is false when the failure says nothing about
    /// the event (429 throttling, our key refused), so it does not use up its attempts.
    Retry {
        id: i64,
        next_attempt_ms: i64,
        status: Option<u16>,
        error: String,
        counts: bool,
    },
    /// Permanent failure: kept as a dead letter, with Greenflash's answer.
    Dead {
        id: i64,
        status: Option<u16>,
        error: String,
    },
    /// `serve --dry-run`: logged instead of sent.
    Skipped {
        id: i64,
    },
}

/// What an outcome writes to its outbox event: one reading of `Completion` for every store.
/// `lease_owner` fencing and the clearing of the lease are the stores' own.
struct OutcomeWrite<'a> {
    id: i64,
    /// The new state; `None` keeps it (a retry stays pending).
    state: Option<&'static str>,
    /// Attempts to add: a throttled retry or a dry run uses none.
    attempts: i64,
    /// When to try next; `None` keeps it.
    next_attempt_ms: Option<i64>,
    /// The last status and error stay as they were (a dry run records none).
    keep_result: bool,
    status: Option<u16>,
    error: Option<&'a str>,
}

impl Completion {
    fn write(&self) -> OutcomeWrite<'_> {
        let write = |id, state, attempts, status, error| OutcomeWrite {
            id,
            state,
            attempts,
            next_attempt_ms: None,
            keep_result: false,
            status,
            error,
        };
        match self {
            Self::Delivered { id, status } => write(*id, Some("delivered"), 1, Some(*status), None),
            Self::Retry {
                id,
                next_attempt_ms,
                status,
                error,
                counts,
            } => OutcomeWrite {
                next_attempt_ms: Some(*next_attempt_ms),
                ..write(*id, None, i64::from(*counts), *status, Some(error))
            },
            Self::Dead { id, status, error } => write(*id, Some("dead"), 1, *status, Some(error)),
            Self::Skipped { id } => OutcomeWrite {
                keep_result: true,
                ..write(*id, Some("dry_run"), 0, None, None)
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    BadUrl(String),
    #[error("cannot prepare the store at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the store could not commit: {0}")]
    Unavailable(String),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("a stored webhook cannot be read back: {0}")]
    StoredBody(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a webhook and its events in one durable transaction.
    async fn accept(&self, webhook: NewWebhook) -> Result<Acceptance, StoreError>;

    /// Leases up to `limit` due pending events to `owner` for `lease_ms`. A leased event is
    /// due again when its lease runs out (its next attempt moves there), so that another
    /// owner takes it over if this one never completes it.
    async fn lease(
        &self,
        owner: &str,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Leased>, StoreError>;

    /// Records delivery outcomes for events `owner` still holds.
    async fn complete(
        &self,
        owner: &str,
        now_ms: i64,
        done: Vec<Completion>,
    ) -> Result<(), StoreError>;

    /// When the earliest pending event becomes due (ms), if any.
    async fn next_due(&self) -> Result<Option<i64>, StoreError>;

    /// Queue depth, the oldest pending event and the dead-letter count, for metrics.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Called once at start-up by `serve`: makes events leased by a crashed predecessor due now.
    async fn recover(&self) -> Result<u64, StoreError>;

    /// A write that commits nothing, proving the store can commit now (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Dead letters, newest first.
    async fn dead_letters(&self, source: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;

    /// One outbox event by id, whatever its state.
    async fn outbox_event(&self, id: i64) -> Result<Option<DeadLetter>, StoreError>;

    /// Puts dead letters back in the queue (same insertId), due now. Returns how many.
    async fn retry_dead(&self, which: DeadSelector) -> Result<u64, StoreError>;

    /// Marks dead letters as dropped by an operator (kept, visible, never sent). Returns how many.
    async fn drop_dead(&self, ids: &[i64]) -> Result<u64, StoreError>;

    /// Stored webhooks of `source` received in [since, until), with their provider events (of
    /// the given statuses; all when empty) and what those events emitted.
    async fn stored_webhooks(&self, query: ReplayQuery) -> Result<Vec<StoredWebhook>, StoreError>;

    /// Records a replay: new statuses for provider events and new outbox events to deliver.
    async fn record_replay(
        &self,
        source: &str,
        updates: Vec<ReplayUpdate>,
    ) -> Result<(), StoreError>;

    /// Deletes what retention allows: finished outbox events, and provider events and raw bodies
    /// with nothing pending or dead, all older than `before_ms`.
    async fn prune(&self, before_ms: i64) -> Result<PruneReport, StoreError>;

    /// Until when (ms) Greenflash asked every replica to hold back (`Retry-After` on a 429).
    async fn throttled_until(&self) -> Result<i64, StoreError>;

    /// Records a throttle for every replica; an earlier time never shortens a later one.
    async fn throttle(&self, until_ms: i64) -> Result<(), StoreError>;
}

/// An outbox event as operators see it (`dlq list`, `dlq show`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    pub rule: String,
    pub insert_id: String,
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The Greenflash event, as JSON.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeadSelector {
    Ids(Vec<i64>),
    All,
    Source(String),
}

#[derive(Debug, Clone, Default)]
pub struct ReplayQuery {
    pub source: String,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Provider-event statuses to include (`mapped`, `ignored`, `mapping_failed`); all if empty.
    pub statuses: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StoredWebhook {
    pub id: i64,
    pub received_at_ms: i64,
    pub headers_json: String,
    pub body: Bytes,
    pub events: Vec<StoredEvent>,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: String,
    pub status: String,
    /// Every outbox event it produced so far, oldest first.
    pub emitted: Vec<StoredEmission>,
}

#[derive(Debug, Clone)]
pub struct StoredEmission {
    pub rule: String,
    pub insert_id: String,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct ReplayUpdate {
    pub event_id: String,
    pub status: &'static str,
    pub detail: Option<String>,
    pub outbox: Vec<NewOutboxEvent>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub outbox_events: u64,
    pub provider_events: u64,
    pub webhooks: u64,
}

impl PruneReport {
    /// From rows deleted per table, in the order retention deletes them: outbox events,
    /// provider events, webhooks.
    fn deleted([outbox_events, provider_events, webhooks]: [u64; 3]) -> Self {
        Self {
            outbox_events,
            provider_events,
            webhooks,
        }
    }

    /// Adds one retention step's counts to a running total.
    fn add(&mut self, step: Self) {
        self.outbox_events += step.outbox_events;
        self.provider_events += step.provider_events;
        self.webhooks += step.webhooks;
    }
}

/// Opens the store a URL names: `sqlite://PATH` (relative to the working directory;
/// `sqlite:///abs/path` for an absolute one) or `postgres://…` / `postgresql://…`. Either is
/// created or migrated as needed.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(std::sync::Arc::new(
            PostgresStore::open(url, POSTGRES_POOL).await?,
        ));
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        )),
        _ => Err(StoreError::BadUrl(url.to_string())),
    }
}

/// Connections per replica: enough for the accept path and delivery to run side by side.
const POSTGRES_POOL: usize = 16;

/// Milliseconds since the Unix epoch, the store's unit of time.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
