//! How the dedupe index (`sqlite_identities.rs`) holds its entries: in sorted runs, so that
//! bringing it up to date appends pages instead of rewriting them.
//!
//! An entry is keyed by a hash of its identity, so a batch of new identities lands all over a
//! single B-tree: with 600,000 identities indexed, each 10-second merge dirtied nearly every
//! leaf, and the operating system wrote the whole file back every 30 s in one burst that held
//! up the store's own syncs for 70-115 ms, growing with the index. Here each merge adds a run of
//! its own, numbered above every other, so its rows go at the end of the table; a lookup probes
//! each run. A run is merged with the newer ones once they add up to half of it (see
//! `runs_to_merge`), so there are at most about log2(identities / batch) runs, and each identity
//! is rewritten about that many times over its life instead of at every merge. Merging runs
//! writes in small, paced transactions, and the index is synced at each of its checkpoints
//! (every few hundred KB), so no single flush is large.
//!
//! The index need not forget what retention deletes at once (every entry it names is confirmed
//! against the store): entries for identities older than the store's oldest are left out when
//! their run is next merged.

use std::collections::VecDeque;
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use super::sqlite_identities::{oldest_held, store_prunes};

/// The entries' tables. `runs` lists the runs a lookup reads; rows of `seen` under a run not
/// listed belong to a merge still being written, one that never finished, or a run merged into
/// another whose rows are still to be deleted (`dropped`).
pub(super) const RUNS_SCHEMA: &str = "
CREATE TABLE seen (
    run  INTEGER NOT NULL,
    hash INTEGER NOT NULL,
    id   INTEGER NOT NULL,
    PRIMARY KEY (run, hash, id)
) WITHOUT ROWID;
CREATE TABLE runs (
    run  INTEGER PRIMARY KEY,
    size INTEGER NOT NULL
);
CREATE TABLE dropped (run INTEGER PRIMARY KEY);";

/// The ids of `provider_events` rows the index has under the hash `?1`, one probe per run. (A
/// join of `runs` with `seen` took 16-18 µs a lookup even with no runs; this takes 4-5 µs.)
pub(super) const FIND: &str =
    "SELECT id FROM seen WHERE run IN (SELECT run FROM runs) AND hash = ?1";

/// Entries written, or deleted, per transaction when runs are merged: about 160 KB of pages.
const MERGE_CHUNK: usize = 8192;
/// Entries read from a run at a time while merging it.
const READ_CHUNK: i64 = 2048;

/// Takes the next run number, in the caller's transaction if there is one.
fn next_run(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("UPDATE progress SET next_run = next_run + 1 RETURNING next_run - 1")?
        .query_row([], |r| r.get(0))
}

/// Adds `entries` (hash, id), sorted, as a new run, in the caller's transaction.
pub(super) fn append_run(tx: &Connection, entries: &[(i64, i64)]) -> rusqlite::Result<()> {
    let run = next_run(tx)?;
    let mut put =
        tx.prepare_cached("INSERT OR IGNORE INTO seen (run, hash, id) VALUES (?1, ?2, ?3)")?;
    let mut size = 0;
    for &(hash, id) in entries {
        size += put.execute([run, hash, id])?;
    }
    tx.prepare_cached("INSERT INTO runs (run, size) VALUES (?1, ?2)")?
        .execute(params![run, size as i64])?;
    Ok(())
}

/// How many of the newest runs to merge into one, given every run's size, oldest first: the
/// newest, and each run before it that is at most twice as large as all that is newer. What is
/// left then shrinks by half or more from run to run.
fn runs_to_merge(sizes: &[i64]) -> usize {
    let Some((&newest, older)) = sizes.split_last() else {
        return 0;
    };
    let mut newer = newest;
    let mut count = 1;
    for &size in older.iter().rev() {
        if size > newer.saturating_mul(2) {
            break;
        }
        newer = newer.saturating_add(size);
        count += 1;
    }
    count
}

/// Merges the newest runs when `runs_to_merge` says so, sleeping `pace` between transactions
/// so that the store's syncs find the disk free; returns whether it did.
pub(super) fn merge_runs(
    store: &Connection,
    index: &mut Connection,
    pace: Duration,
) -> rusqlite::Result<bool> {
    let runs: Vec<(i64, i64)> = index
        .prepare_cached("SELECT run, size FROM runs ORDER BY run")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let sizes: Vec<i64> = runs.iter().map(|&(_, size)| size).collect();
    let count = runs_to_merge(&sizes);
    if count < 2 {
        return Ok(false);
    }
    let sources: Vec<i64> = runs[runs.len() - count..]
        .iter()
        .map(|&(run, _)| run)
        .collect();
    merge(store, index, &sources, pace)
}

/// Writes the entries of `sources` as one new run, leaving out those for identities retention
/// has deleted, then lists it in their place. Another process merging the same runs first
/// makes this merge give up.
fn merge(
    store: &Connection,
    index: &mut Connection,
    sources: &[i64],
    pace: Duration,
) -> rusqlite::Result<bool> {
    let run = next_run(index)?;
    // Ids only grow, and retention deletes the oldest first: below the oldest id left, no
    // entry names a row. Read before the count of prunes, so that the count is at least the
    // one this reflects (an empty store: every entry is stale).
    let oldest = oldest_held(store)?;
    let prunes = store_prunes(store)?;
    let mut cursors: Vec<RunCursor> = sources.iter().map(|&run| RunCursor::new(run)).collect();
    let mut last = None;
    let mut chunk = Vec::with_capacity(MERGE_CHUNK);
    let mut size = 0;
    loop {
        let mut ended = false;
        while chunk.len() < MERGE_CHUNK {
            let Some(entry) = next_entry(index, &mut cursors)? else {
                ended = true;
                break;
            };
            // A run written twice (by two processes) repeats its entries.
            if last != Some(entry) && entry.1 >= oldest {
                chunk.push(entry);
            }
            last = Some(entry);
        }
        if !chunk.is_empty() {
            let tx = index.transaction()?;
            {
                let mut put =
                    tx.prepare_cached("INSERT INTO seen (run, hash, id) VALUES (?1, ?2, ?3)")?;
                for &(hash, id) in &chunk {
                    put.execute([run, hash, id])?;
                }
            }
            tx.commit()?;
            size += chunk.len() as i64;
            chunk.clear();
        }
        if ended {
            break;
        }
        thread::sleep(pace);
    }
    let tx = index.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut listed = 0;
    for source in sources {
        listed += tx
            .prepare_cached("DELETE FROM runs WHERE run = ?1")?
            .execute([source])?;
    }
    if listed != sources.len() {
        // Another process merged some of them first: what this one wrote is not needed.
        drop(tx);
        index.execute("INSERT OR IGNORE INTO dropped (run) VALUES (?1)", [run])?;
        drop_runs(index, pace)?;
        return Ok(false);
    }
    if size > 0 {
        tx.execute("INSERT INTO runs (run, size) VALUES (?1, ?2)", [run, size])?;
    }
    tx.execute("UPDATE progress SET pruned = max(pruned, ?1)", [prunes])?;
    for source in sources {
        tx.execute("INSERT OR IGNORE INTO dropped (run) VALUES (?1)", [source])?;
    }
    // Rows of a merge that never finished (its process died): any run below the oldest listed
    // lost its sources to another merge, so nothing can still list it.
    tx.execute(
        "INSERT OR IGNORE INTO dropped (run)
         SELECT DISTINCT run FROM seen WHERE run < (SELECT MIN(run) FROM runs)",
        [],
    )?;
    tx.commit()?;
    drop_runs(index, pace)?;
    Ok(true)
}

/// Deletes the rows of the runs in `dropped`, a chunk per transaction: one statement over a
/// large run wrote megabytes, synced at once. A run stays in `dropped` until its rows are gone,
/// so that the next call finishes what a process that died began.
pub(super) fn drop_runs(index: &Connection, pace: Duration) -> rusqlite::Result<()> {
    let runs: Vec<i64> = index
        .prepare_cached("SELECT run FROM dropped")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for run in runs {
        while index
            .prepare_cached(
                "DELETE FROM seen WHERE (run, hash, id) IN
                     (SELECT run, hash, id FROM seen WHERE run = ?1 LIMIT ?2)",
            )?
            .execute(params![run, MERGE_CHUNK as i64])?
            > 0
        {
            thread::sleep(pace);
        }
        index
            .prepare_cached("DELETE FROM dropped WHERE run = ?1")?
            .execute([run])?;
    }
    Ok(())
}

/// The smallest entry at the head of any cursor, taken from it.
fn next_entry(
    index: &Connection,
    cursors: &mut [RunCursor],
) -> rusqlite::Result<Option<(i64, i64)>> {
    let mut smallest: Option<(usize, (i64, i64))> = None;
    for (i, cursor) in cursors.iter_mut().enumerate() {
        if let Some(head) = cursor.peek(index)?
            && smallest.is_none_or(|(_, s)| head < s)
        {
            smallest = Some((i, head));
        }
    }
    Ok(smallest.map(|(i, entry)| {
        cursors[i].buffer.pop_front();
        entry
    }))
}

/// Reads one run in key order, a chunk at a time (runs do not change once listed).
struct RunCursor {
    run: i64,
    buffer: VecDeque<(i64, i64)>,
    after: Option<(i64, i64)>,
    ended: bool,
}

impl RunCursor {
    fn new(run: i64) -> Self {
        Self {
            run,
            buffer: VecDeque::new(),
            after: None,
            ended: false,
        }
    }

    fn peek(&mut self, index: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
        if self.buffer.is_empty() && !self.ended {
            let rows: Vec<(i64, i64)> = match self.after {
                None => index
                    .prepare_cached(
                        "SELECT hash, id FROM seen WHERE run = ?1 ORDER BY hash, id LIMIT ?2",
                    )?
                    .query_map(params![self.run, READ_CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
                Some((hash, id)) => index
                    .prepare_cached(
                        "SELECT hash, id FROM seen WHERE run = ?1 AND (hash, id) > (?2, ?3)
                         ORDER BY hash, id LIMIT ?4",
                    )?
                    .query_map(params![self.run, hash, id, READ_CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?,
            };
            self.ended = (rows.len() as i64) < READ_CHUNK;
            self.after = rows.last().copied().or(self.after);
            self.buffer.extend(rows);
        }
        Ok(self.buffer.front().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sqlite_identities::PROGRESS_SCHEMA;
    use super::*;

    /// An index file with no entries, in WAL mode with 1 KB pages as the store makes it.
    fn index(dir: &std::path::Path) -> Connection {
        let conn = Connection::open(dir.join("i.dedupe")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             {RUNS_SCHEMA} {PROGRESS_SCHEMA}
             INSERT INTO progress VALUES ('s', 0, '', 0, 1);"
        ))
        .unwrap();
        conn
    }

    /// A store whose oldest identity is `oldest`, after `prunes` prunes.
    fn store(oldest: i64, prunes: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE provider_events (id INTEGER PRIMARY KEY);
             CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT);
             INSERT INTO provider_events VALUES ({oldest});
             INSERT INTO store_meta VALUES ('prunes', '{prunes}');"
        ))
        .unwrap();
        conn
    }

    /// `count` entries with scattered hashes and ids from `first` on.
    fn entries(first: i64, count: i64) -> Vec<(i64, i64)> {
        let mut entries: Vec<(i64, i64)> = (first..first + count)
            .map(|id| (id.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64), id))
            .collect();
        entries.sort_unstable();
        entries
    }

    fn append(conn: &mut Connection, entries: &[(i64, i64)]) {
        let tx = conn.transaction().unwrap();
        append_run(&tx, entries).unwrap();
        tx.commit().unwrap();
    }

    /// WAL frames written since the last checkpoint, which this one copies back.
    fn frames_since_checkpoint(conn: &Connection) -> i64 {
        let frames = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        frames
    }

    /// The two columns of every row `sql` selects.
    fn pairs(conn: &Connection, sql: &str) -> Vec<(i64, i64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn listed(conn: &Connection) -> Vec<(i64, i64)> {
        pairs(conn, "SELECT run, size FROM runs ORDER BY run")
    }

    fn found(conn: &Connection, hash: i64) -> Vec<i64> {
        conn.prepare(FIND)
            .unwrap()
            .query_map([hash], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_merge_writes_pages_for_its_own_entries_not_for_the_whole_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = index(dir.path());
        append(&mut conn, &entries(1, 50_000));
        frames_since_checkpoint(&conn);
        append(&mut conn, &entries(50_001, 500));
        // 500 entries of ~20 bytes fill about ten 1 KB pages; spread over the 50,000 entries
        // already there (about 1,100 leaves) they would touch some 400.
        let frames = frames_since_checkpoint(&conn);
        assert!(frames <= 30, "{frames} pages written");
        assert_eq!(found(&conn, entries(50_001, 1)[0].0), vec![50_001]);
        assert_eq!(found(&conn, entries(7, 1)[0].0), vec![7]);
    }

    #[test]
    fn merged_runs_keep_every_entry_once_and_leave_out_what_retention_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = index(dir.path());
        // Larger than a chunk of reading and of writing, and overlapping: two processes may
        // copy the same identities in.
        append(&mut conn, &entries(1, 10_000));
        append(&mut conn, &entries(9_001, 6_000));
        // A merge that never finished, under a run number below every listed one.
        conn.execute("INSERT INTO seen (run, hash, id) VALUES (0, 5, 5)", [])
            .unwrap();
        assert!(
            found(&conn, 5).is_empty(),
            "rows of a run not listed are not read"
        );
        let store = store(2_001, 3);
        assert!(merge_runs(&store, &mut conn, Duration::ZERO).unwrap());
        assert_eq!(
            table_rows(&conn, "dropped"),
            0,
            "every source's rows deleted"
        );
        let expected = entries(2_001, 13_000);
        let kept = pairs(&conn, "SELECT hash, id FROM seen ORDER BY hash, id");
        assert_eq!(kept, expected, "one run, ids 2,001 to 15,000, each once");
        assert_eq!(listed(&conn), vec![(3, 13_000)]);
        let pruned: i64 = conn
            .query_row("SELECT pruned FROM progress", [], |r| r.get(0))
            .unwrap();
        assert_eq!(pruned, 3, "the index now reflects the store's prunes");
        assert!(
            !merge_runs(&store, &mut conn, Duration::ZERO).unwrap(),
            "one run left"
        );
    }

    #[test]
    fn a_merge_gives_up_when_another_merged_its_runs_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = index(dir.path());
        append(&mut conn, &entries(1, 100));
        append(&mut conn, &entries(101, 100));
        let store = store(1, 0);
        // Another process's merge, between this one's reading and its listing the result.
        let other = Connection::open(dir.path().join("i.dedupe")).unwrap();
        other
            .execute_batch("DELETE FROM runs WHERE run = 1; INSERT INTO runs VALUES (9, 200);")
            .unwrap();
        assert!(!merge(&store, &mut conn, &[1, 2], Duration::ZERO).unwrap());
        assert_eq!(
            listed(&conn),
            vec![(2, 100), (9, 200)],
            "its runs as the other left them"
        );
        assert!(
            pairs(&conn, "SELECT hash, id FROM seen WHERE run = 3").is_empty(),
            "what it wrote is gone"
        );
    }

    fn table_rows(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn rows_a_merge_left_to_delete_are_deleted_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = index(dir.path());
        append(&mut conn, &entries(1, 20_000));
        // As if the process died after listing a merge, before deleting its sources' rows.
        conn.execute_batch("DELETE FROM runs; INSERT INTO dropped (run) VALUES (1);")
            .unwrap();
        append(&mut conn, &entries(20_001, 10));
        drop_runs(&conn, Duration::ZERO).unwrap();
        assert_eq!(table_rows(&conn, "seen"), 10, "only the listed run's rows");
        assert_eq!(table_rows(&conn, "dropped"), 0);
    }

    #[test]
    fn a_lookup_probes_each_run_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let conn = index(dir.path());
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {FIND}"))
            .unwrap()
            .query_map([1], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("SEARCH seen USING PRIMARY KEY (run=? AND hash=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("SCAN seen")),
            "{plan:?}"
        );
    }

    #[test]
    fn runs_left_after_a_merge_halve_from_one_to_the_next() {
        assert_eq!(runs_to_merge(&[]), 0);
        assert_eq!(runs_to_merge(&[5]), 1);
        assert_eq!(runs_to_merge(&[20, 20]), 2);
        assert_eq!(runs_to_merge(&[60, 20]), 1, "60 is more than twice 20");
        assert_eq!(runs_to_merge(&[60, 20, 20]), 3, "40, then 60 against 40");
        assert_eq!(runs_to_merge(&[1000, 60, 20, 20]), 3);
        // Merging at every step from equal batches keeps runs few.
        let mut sizes: Vec<i64> = Vec::new();
        for _ in 0..1000 {
            sizes.push(20);
            let count = runs_to_merge(&sizes);
            if count > 1 {
                let merged = sizes.split_off(sizes.len() - count).iter().sum();
                sizes.push(merged);
            }
            for pair in sizes.windows(2) {
                assert!(pair[0] > 2 * pair[1], "{sizes:?}");
            }
        }
        assert!(sizes.len() <= 10, "{sizes:?}");
    }
}
