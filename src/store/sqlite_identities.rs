//! Which provider events a SQLite store has seen (the dedupe lookup), kept out of the
//! transaction that is synced before each acknowledgement.
//!
//! Provider event ids are random (Stripe's `evt_…`), so a B-tree keyed by them puts each new id
//! on a page of its own: one more page written and synced per webhook. Measured with ids like
//! Stripe's, that cost about a third of the throughput and most of the p99 at 2,000/s. So the
//! store keeps `provider_events` in arrival order, and the lookup is answered from two places:
//!
//! - in memory, every identity committed since the index last caught up (`recent`);
//! - the index: a SQLite file of its own beside the store (`<store>.dedupe`), which a thread
//!   brings up to date every `MERGE_EVERY`, appending each batch as a sorted run
//!   (`sqlite_dedupe_runs.rs`), and syncs in small steps. An identity the filter in memory
//!   (`sqlite_dedupe_filter.rs`) says the index cannot hold is not looked up there.
//!
//! The index is derived data. It records how far into `provider_events` it reaches in the same
//! transaction as the identities, so after a crash the writer loads everything past that point
//! back into memory. In WAL mode with `synchronous=NORMAL` a power loss can take its last
//! commits, never its consistency, and its progress goes back with them. An index written
//! before the machine last started (its boot id, where there is one) is rebuilt all the same,
//! as is one that is missing, unreadable, from another store, or written against a later state
//! of the store (a restored backup: it reaches past the store's last row, or reflects
//! retention the store has not seen). A row the lookup names is confirmed against the store
//! before it counts: an identity retention has pruned, whose entry the index may still hold,
//! never turns away a webhook.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::sqlite_dedupe_filter::{Bloom, IndexFilter};
use super::sqlite_dedupe_runs::{FIND, RUNS_SCHEMA, append_run, drop_runs, merge_runs};

/// Identities in memory that wake the index's thread before its timer does; at start-up, an
/// index this far behind the store catches up before the store opens.
const MERGE_AT: usize = 65_536;
/// How often the index catches up when fewer identities arrived. Each catch-up adds a run,
/// which lookups probe until it is merged; memory and the reload after a crash grow with it.
const MERGE_EVERY: Duration = Duration::from_secs(10);
/// Identities copied into the index per transaction.
const MERGE_BATCH: i64 = 65_536;
/// Identities copied per transaction when the index catches up before the store opens (16 bytes
/// each in memory while sorted, 16 MB for a full batch): a rebuild then writes a run or a few,
/// where batches of `MERGE_BATCH` wrote many, all to be merged again.
const CATCH_UP_BATCH: i64 = 1 << 20;

/// Bytes per index page, for indexes created from now on: a lookup reads one leaf per run,
/// scattered, so small pages read the fewest bytes.
const INDEX_PAGE_SIZE: i64 = 1024;

/// Page cache of each connection to the index, in KB (SQLite's default is 2,000).
const INDEX_CACHE_KB: i64 = 1024;

/// WAL pages of the index after which its connection checkpoints (and, synced, flushes): small,
/// so that no flush of the index is large enough to hold up the store's.
const INDEX_CHECKPOINT_PAGES: i64 = 256;

/// How long the index's thread rests between the transactions of a merge of runs.
const RUN_MERGE_PACE: Duration = Duration::from_millis(10);

/// The index's layout (`PRAGMA user_version`); an index of another layout is rebuilt.
const INDEX_VERSION: i64 = 3;

/// `seen` (`sqlite_dedupe_runs.rs`) keeps a hash of each identity, 16 bytes an entry where the
/// strings took ~45; an identity is found by its hash and then confirmed against the store, so
/// two that share a hash are told apart there (hence `id` in the key). `progress` says which
/// store the index belongs to, how far into its `provider_events` it reaches, the boot it was
/// written in, how many of the store's prunes its contents may reflect (`pruned`, the store's
/// count when it left out pruned identities or copied from the store: a store that has seen
/// fewer is older than the index, which may lack identities that store still holds), and the
/// number the next run takes.
pub(super) const PROGRESS_SCHEMA: &str = "
CREATE TABLE progress (
    store    TEXT NOT NULL,
    through  INTEGER NOT NULL,
    boot     TEXT NOT NULL,
    pruned   INTEGER NOT NULL,
    next_run INTEGER NOT NULL
);";

/// Where the index of the store at `store` lives.
pub(super) fn index_path(store: &Path) -> PathBuf {
    let mut path = store.as_os_str().to_owned();
    path.push(".dedupe");
    path.into()
}

/// The id of the oldest identity the store holds, or `i64::MAX` if it holds none: every entry
/// of the index below it is of an identity retention deleted. (Identities stored from now on
/// get larger ids, and reach the filter when they are copied into the index.)
pub(super) fn oldest_held(store: &Connection) -> rusqlite::Result<i64> {
    store.query_row("SELECT MIN(id) FROM provider_events", [], |r| {
        Ok(r.get::<_, Option<i64>>(0)?.unwrap_or(i64::MAX))
    })
}

/// How many commits have deleted identities from the store at `conn`.
pub(super) fn store_prunes(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT CAST(value AS INTEGER) FROM store_meta WHERE key = 'prunes'")?
        .query_row([], |r| r.get(0))
}

/// Counts the open transaction as one that deletes identities; returns the new count.
pub(super) fn count_prune(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE store_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'prunes'
         RETURNING CAST(value AS INTEGER)",
    )?
    .query_row([], |r| r.get(0))
}

/// The store as the index is checked against when it opens.
struct StoreNow<'a> {
    id: &'a str,
    /// The last id `provider_events` has given out.
    last_id: i64,
    prunes: i64,
}

/// Asks the index's thread to catch up now; with a line to say when it has (and merged runs).
struct CatchUp(Option<mpsc::Sender<()>>);

/// The lookup, owned by the writer thread.
pub(super) struct Identities {
    /// Committed identities the index may not hold yet: key → `provider_events.id`.
    recent: HashMap<String, i64>,
    /// Added by the open transaction; kept or dropped with it.
    staged: RefCell<HashMap<String, i64>>,
    /// Reads the index; its thread writes through a connection of its own.
    index: Connection,
    /// Which hashes the index may hold, as its thread last published.
    filter: IndexFilter,
    /// How far into `provider_events` the index reaches, as its thread last committed.
    through: Arc<AtomicI64>,
    trimmed_through: i64,
    thread: mpsc::Sender<CatchUp>,
    catching_up: bool,
    /// The lowest id a new `provider_events` row may take: above every id this store held when
    /// it opened or has given out since. SQLite alone would give the ids of the newest rows
    /// again once retention deleted them, and the index, which takes every row after
    /// `through` to be new to it, would never see those.
    lowest_new_id: Cell<i64>,
}

impl Identities {
    /// Opens the index of the store at `path` (rebuilding it when it does not match `main`),
    /// loads what it lacks into memory, and starts the thread that keeps it up to date.
    pub(super) fn open(main: &Connection, path: &Path) -> Result<Self, StoreError> {
        let store_id: String = main.query_row(
            "SELECT value FROM store_meta WHERE key = 'store_id'",
            [],
            |r| r.get(0),
        )?;
        let last_id: i64 = main.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM provider_events",
            [],
            |r| r.get(0),
        )?;
        let store = StoreNow {
            id: &store_id,
            last_id,
            prunes: store_prunes(main)?,
        };
        let file = index_path(path);
        let (mut writer, through) = open_trusted(&file, &store, boot_id().as_deref())?;
        let through = Arc::new(AtomicI64::new(through));
        let reader = Connection::open(path)?;
        reader.pragma_update(None, "query_only", true)?;
        reader.busy_timeout(Duration::from_secs(5))?;
        // It reads the newest rows once each: no use caching them.
        reader.pragma_update(None, "cache_size", -256)?;
        // A new or rebuilt index (an upgraded store, a deleted file) lacks every identity: it
        // catches up now instead of holding them all in memory.
        let behind = last_id - through.load(Ordering::Acquire);
        if behind >= MERGE_AT as i64 {
            tracing::info!(index = %file.display(), identities = behind, "Bringing the dedupe index up to date.");
            // Runs that want merging are merged by the thread, paced, once the store is open.
            copy_all(&reader, &mut writer, &through, CATCH_UP_BATCH, None)?;
        }
        let through_now = through.load(Ordering::Acquire);
        let index = Connection::open(&file)?;
        index.pragma_update(None, "query_only", true)?;
        index.busy_timeout(Duration::from_secs(5))?;
        // Enough for the index's interior pages at a few million identities; lookups of leaves
        // are scattered, and the operating system caches the file anyway.
        index.pragma_update(None, "cache_size", -INDEX_CACHE_KB)?;
        let recent = main
            .prepare("SELECT source, event_id, id FROM provider_events WHERE id > ?1")?
            .query_map([through_now], |r| {
                Ok((
                    key(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?),
                    r.get(2)?,
                ))
            })?
            .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
        let (tx, rx) = mpsc::channel();
        let progress = through.clone();
        let filter = IndexFilter::default();
        let filling = filter.clone();
        thread::Builder::new()
            .name("sqlite-dedupe".into())
            .spawn(move || keep_up(reader, writer, progress, filling, rx))
            .map_err(|source| StoreError::Io { path: file, source })?;
        Ok(Self {
            recent,
            staged: RefCell::default(),
            index,
            filter,
            through,
            trimmed_through: through_now,
            thread: tx,
            catching_up: false,
            // The index never reaches past the store it was checked against.
            lowest_new_id: Cell::new(last_id.max(through_now) + 1),
        })
    }

    /// Has the index's thread catch up with every committed identity and merge its runs, waits
    /// for it, and returns how far the index then reaches. Blocks the calling (writer) thread.
    #[cfg(test)]
    pub(super) fn catch_up(&self) -> i64 {
        let (done, wait) = mpsc::channel();
        let _ = self.thread.send(CatchUp(Some(done)));
        let _ = wait.recv();
        self.through.load(Ordering::Acquire)
    }

    /// The filter in use; `None` before the first is built.
    #[cfg(test)]
    pub(super) fn filter_in_use(&self) -> Option<Arc<Bloom>> {
        self.filter.current()
    }

    /// The `provider_events` row of `source`/`event_id`, if the store (as `conn` sees it, the
    /// open transaction included) has one.
    pub(super) fn find(
        &self,
        conn: &Connection,
        source: &str,
        event_id: &str,
    ) -> rusqlite::Result<Option<i64>> {
        let key = key(source, event_id);
        if let Some(&id) = self.staged.borrow().get(&key) {
            return Ok(Some(id));
        }
        let named: Vec<i64> = match self.recent.get(&key) {
            Some(&id) => vec![id],
            None => {
                let hash = hash(source, event_id);
                if self.filter.may_hold(hash) {
                    self.index
                        .prepare_cached(FIND)?
                        .query_map([hash], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?
                } else {
                    Vec::new()
                }
            }
        };
        let mut confirm = conn.prepare_cached(
            "SELECT id FROM provider_events WHERE id = ?1 AND source = ?2 AND event_id = ?3",
        )?;
        for id in named {
            let found = confirm
                .query_row(params![id, source, event_id], |r| r.get(0))
                .optional()?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The lowest id the next `provider_events` row may take (see `lowest_new_id`).
    pub(super) fn lowest_new_id(&self) -> i64 {
        self.lowest_new_id.get()
    }

    /// Records a row the open transaction added to `provider_events`. Its id is not given
    /// again, even if the transaction rolls back.
    pub(super) fn add(&self, source: &str, event_id: &str, id: i64) {
        self.staged.borrow_mut().insert(key(source, event_id), id);
        self.lowest_new_id
            .set(self.lowest_new_id.get().max(id.saturating_add(1)));
    }

    /// The open transaction committed: what it added is seen from now on.
    pub(super) fn committed(&mut self) {
        self.recent.extend(self.staged.get_mut().drain());
        let through = self.through.load(Ordering::Acquire);
        if through > self.trimmed_through {
            self.recent.retain(|_, id| *id > through);
            self.trimmed_through = through;
            self.catching_up = false;
        }
        if self.recent.len() >= MERGE_AT && !self.catching_up {
            self.catching_up = self.thread.send(CatchUp(None)).is_ok();
        }
    }

    /// The open transaction rolled back: nothing it added exists.
    pub(super) fn rolled_back(&mut self) {
        self.staged.get_mut().clear();
    }
}

/// One string per identity. Source names never hold a NUL, so none is the prefix of another.
fn key(source: &str, event_id: &str) -> String {
    let mut key = String::with_capacity(source.len() + 1 + event_id.len());
    key.push_str(source);
    key.push('\0');
    key.push_str(event_id);
    key
}

/// The identity's key in the index: the first 8 bytes of SHA-256 over the same string, which
/// stay the same across builds and platforms (the index outlives the process).
fn hash(source: &str, event_id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(source)
        .chain_update([0])
        .chain_update(event_id)
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The running kernel's boot id, which changes whenever the machine starts (Linux; `None`
/// elsewhere).
pub(super) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// Opens the index, rebuilding it from nothing when it cannot be trusted.
fn open_trusted(
    file: &Path,
    store: &StoreNow<'_>,
    boot: Option<&str>,
) -> Result<(Connection, i64), StoreError> {
    match open_index(file, store, boot) {
        Ok(Opened::Trusted(conn, through)) => return Ok((conn, through)),
        Ok(Opened::Untrusted(why)) => {
            tracing::info!(index = %file.display(), why, "The dedupe index does not match the store; rebuilding it from the store.");
        }
        // Only damage is a reason to start over; anything else (a lock held too long by
        // another process using the store, no permission) is the caller's to see.
        Err(e) if is_damage(&e) => {
            tracing::warn!(index = %file.display(), error = %e, "The dedupe index cannot be read; rebuilding it from the store.");
        }
        Err(e) => return Err(e.into()),
    }
    remove_index(file)?;
    match open_index(file, store, boot)? {
        Opened::Trusted(conn, through) => Ok((conn, through)),
        Opened::Untrusted(why) => Err(StoreError::Unavailable(format!(
            "a new dedupe index was not usable: {why}"
        ))),
    }
}

enum Opened {
    /// The index, open for writing, and how far into `provider_events` it reaches.
    Trusted(Connection, i64),
    /// Why it may lack identities the store holds.
    Untrusted(&'static str),
}

/// Opens the index for writing, creating it if there is none, and says whether it can be
/// trusted to hold every identity of `store` up to where it reaches.
fn open_index(file: &Path, store: &StoreNow<'_>, boot: Option<&str>) -> rusqlite::Result<Opened> {
    let mut conn = Connection::open(file)?;
    conn.pragma_update(None, "page_size", INDEX_PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Synced at each checkpoint, every few hundred KB: a merge appends, so that is a merge's
    // worth or a step of merging runs. Left unsynced, the operating system wrote what built up
    // back in one burst every 30 s, and the store's own syncs waited behind it. In WAL mode
    // with NORMAL a power loss can take the last commits, never the index's consistency; its
    // progress goes back with them.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", INDEX_CHECKPOINT_PAGES)?;
    // A rebuild writes its runs in large transactions; the WAL need not keep their size.
    conn.pragma_update(
        None,
        "journal_size_limit",
        INDEX_CHECKPOINT_PAGES * INDEX_PAGE_SIZE * 4,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -INDEX_CACHE_KB)?;
    // Under the write lock, so that two processes opening a new index do not both create it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let verdict = check_index(&tx, store, boot)?;
    tx.commit()?;
    Ok(match verdict {
        Ok(through) => Opened::Trusted(conn, through),
        Err(why) => Opened::Untrusted(why),
    })
}

/// How far the index open in `conn` reaches, creating it if it is new; or why it may lack
/// identities `store` holds.
fn check_index(
    conn: &Connection,
    store: &StoreNow<'_>,
    boot: Option<&str>,
) -> rusqlite::Result<Result<i64, &'static str>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != INDEX_VERSION {
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Ok(Err("it was written in another layout"));
        }
        // New, and empty: everything the store has is still to be copied in, and nothing it
        // has pruned can be missing.
        conn.execute_batch(&format!(
            "{RUNS_SCHEMA} {PROGRESS_SCHEMA} PRAGMA user_version = {INDEX_VERSION};"
        ))?;
        conn.execute(
            "INSERT INTO progress (store, through, boot, pruned, next_run) VALUES (?1, 0, ?2, ?3, 1)",
            params![store.id, boot.unwrap_or_default(), store.prunes],
        )?;
        return Ok(Ok(0));
    }
    let (id, through, written, pruned): (String, i64, String, i64) = conn.query_row(
        "SELECT store, through, boot, pruned FROM progress",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    Ok(if boot.is_some_and(|now| now != written) {
        Err("it was written before the machine last started, and may be torn")
    } else if id != store.id {
        Err("it belongs to another store")
    } else if through > store.last_id {
        Err("it reaches past the store's last identity (a store restored from a backup?)")
    } else if pruned > store.prunes {
        Err("it reflects retention the store has not seen (a store restored from a backup?)")
    } else {
        Ok(through)
    })
}

fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

pub(super) fn remove_index(file: &Path) -> Result<(), StoreError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
    }
    Ok(())
}

/// The index's thread: builds the filter of what the index holds, then copies new identities
/// in, every `MERGE_EVERY` or when the writer asks, merges runs that have grown, and rebuilds
/// the filter once it is full if retention has kept the store small; stops with the store.
fn keep_up(
    store: Connection,
    mut index: Connection,
    through: Arc<AtomicI64>,
    filter: IndexFilter,
    messages: mpsc::Receiver<CatchUp>,
) {
    rebuild_filter(&filter, &store, &mut index);
    loop {
        let first = match messages.recv_timeout(MERGE_EVERY) {
            Ok(asked) => Some(asked),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Asked again while merging: this merge answers those too.
        let asked: Vec<CatchUp> = first.into_iter().chain(messages.try_iter()).collect();
        let bloom = filter.current();
        if let Err(e) = copy_all(&store, &mut index, &through, MERGE_BATCH, bloom.as_deref()) {
            tracing::warn!(error = %e, "The dedupe index could not catch up; new identities stay in memory until it does.");
        }
        if bloom
            .is_none_or(|bloom| bloom.worth_rebuilding(|| held_at_most(&store).unwrap_or(u64::MAX)))
        {
            rebuild_filter(&filter, &store, &mut index);
        }
        if let Err(e) = merge_runs(&store, &mut index, RUN_MERGE_PACE) {
            tracing::warn!(error = %e, "The dedupe index could not merge its runs; lookups probe more of them until it does.");
        }
        // What a merge that failed, or a process that died, left to delete.
        if let Err(e) = drop_runs(&index, RUN_MERGE_PACE) {
            tracing::warn!(error = %e, "The dedupe index could not delete the rows of merged runs; they take space, nothing else.");
        }
        for CatchUp(done) in asked {
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }
}

/// Builds the filter from the index and puts it in use; if the store or the index cannot be
/// read, the filter in use stays (lookups ask the index if there is none).
fn rebuild_filter(filter: &IndexFilter, store: &Connection, index: &mut Connection) {
    if let Err(e) = oldest_held(store).and_then(|oldest| filter.rebuild(index, oldest)) {
        tracing::warn!(error = %e, "The dedupe index could not be summed up in memory; until it can, lookups read it more often (every one if it never was).");
    }
}

/// At most how many identities the store holds: no more than the ids from its oldest to its
/// newest, each id being one identity's. (A count would read the whole table.)
fn held_at_most(store: &Connection) -> rusqlite::Result<u64> {
    store.query_row(
        "SELECT (SELECT MAX(id) FROM provider_events) - (SELECT MIN(id) FROM provider_events) + 1",
        [],
        |r| Ok(r.get::<_, Option<i64>>(0)?.map_or(0, |n| n.max(0) as u64)),
    )
}

/// Copies batch after batch until the index has every identity the store has, adding each to
/// `filter` and then moving `through` after each batch, so that the writer can let go of what
/// is copied. (Merging the runs these batches become is `sqlite_dedupe_runs::merge_runs`.)
fn copy_all(
    store: &Connection,
    index: &mut Connection,
    through: &AtomicI64,
    batch: i64,
    filter: Option<&Bloom>,
) -> rusqlite::Result<()> {
    loop {
        let (copied, last) =
            copy_batch(store, index, through.load(Ordering::Acquire), batch, filter)?;
        through.store(last, Ordering::Release);
        if copied < batch as usize {
            return Ok(());
        }
    }
}

/// Copies up to `batch` identities after `after` into the index as a run of their own, and into
/// `filter`; returns how many and how far the index now reaches.
fn copy_batch(
    store: &Connection,
    index: &mut Connection,
    after: i64,
    batch: i64,
    filter: Option<&Bloom>,
) -> rusqlite::Result<(usize, i64)> {
    let mut rows: Vec<(i64, i64)> = store
        .prepare_cached(
            "SELECT source, event_id, id FROM provider_events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![after, batch], |r| {
            Ok((
                hash(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?),
                r.get(2)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let Some(&(_, last)) = rows.last() else {
        return Ok((0, after));
    };
    // Read after the rows, so that it is at least the count they reflect: an identity retention
    // deleted before the read is not copied, and the index must not pass for complete beside
    // a store that still holds it.
    let prunes = store_prunes(store)?;
    rows.sort_unstable();
    let tx = index.transaction()?;
    append_run(&tx, &rows)?;
    tx.execute(
        "UPDATE progress SET through = ?1, pruned = max(pruned, ?2)",
        [last, prunes],
    )?;
    tx.commit()?;
    if let Some(filter) = filter {
        for &(hash, _) in &rows {
            filter.insert(hash);
        }
    }
    Ok((rows.len(), last))
}
