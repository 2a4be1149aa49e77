//! WAL checkpoints off the writer thread.
//!
//! SQLite's own automatic checkpoint runs inside the commit that crosses 1,000 WAL frames: it
//! copies those pages into the database and syncs both files while every webhook queued behind
//! that commit waits (measured: 2.5–10 ms, several times a second at 2,000 webhooks/s — most of
//! the acknowledgement's p99). Here a thread with a connection of its own copies frames in the
//! background as the WAL grows, and the writer only finishes the job once the WAL is long: by
//! then little is left to copy, and the next write transaction starts the WAL over from its
//! beginning (SQLite does so once every frame is in the database), so it stays bounded.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use super::StoreError;

/// Frames written since the last background pass that wake it for the next one.
const PASS_EVERY: i32 = 256;
/// WAL length (frames) at which the writer completes a checkpoint itself so that the WAL
/// starts over; 4,096 8 KB frames ≈ 32 MB.
const RESTART_AT: i32 = 4096;

/// Installs the checkpoint policy on the writer's connection and starts the background thread.
pub(super) fn install(writer: &mut Connection, path: &Path) -> Result<(), StoreError> {
    install_with(writer, path, PASS_EVERY, RESTART_AT)
}

fn install_with(
    writer: &mut Connection,
    path: &Path,
    pass_every: i32,
    restart_at: i32,
) -> Result<(), StoreError> {
    let background = Connection::open(path)?;
    background.busy_timeout(std::time::Duration::from_secs(5))?;
    // A connection learns that the database is in WAL mode on its first read; until then
    // checkpoints on it do nothing.
    let mode: String = background.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "the store is in journal mode {mode:?}, not WAL"
        )));
    }
    // Capacity 1: a wake-up while a pass runs is remembered once; more would be redundant.
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                let started = Instant::now();
                if let Err(e) = background.wal_checkpoint_v2(Some("main"), CheckpointMode::PASSIVE) {
                    tracing::warn!(error = %e, "Background WAL checkpoint failed; the writer will complete it.");
                }
                crate::telemetry::store_checkpoint("background", started.elapsed());
            }
        })
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut woke_at = 0;
    // Replaces SQLite's automatic checkpoint, which is itself a WAL hook.
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames: i32| {
        if frames < woke_at {
            // The WAL started over.
            woke_at = 0;
        }
        if frames >= restart_at {
            let started = Instant::now();
            // PASSIVE never waits: if the background pass holds the checkpoint, the next
            // commit tries again. The commit itself has happened either way, so a failure here
            // must not be reported as the commit's.
            if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracing::debug!(error = %e, frames, "WAL checkpoint deferred");
            }
            crate::telemetry::store_checkpoint("writer", started.elapsed());
        } else if frames - woke_at >= pass_every {
            woke_at = frames;
            let _ = wake.try_send(());
        }
        Ok(())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 8192 + 24;

    /// A WAL-mode database of 8 KB pages at `dir/c.db` with one table, `t`, and the checkpoint
    /// policy installed with the given thresholds.
    fn store(dir: &Path, pass_every: i32, restart_at: i32) -> Connection {
        let path = dir.join("c.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 8192).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        // Without an fsync per commit, so that the test is quick; checkpoints are the same.
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        install_with(&mut conn, &path, pass_every, restart_at).unwrap();
        conn
    }

    /// Each insert commits on its own and writes at least one 8 KB frame.
    fn insert(conn: &Connection, rows: usize) {
        for _ in 0..rows {
            conn.execute("INSERT INTO t (b) VALUES (zeroblob(8000))", [])
                .unwrap();
        }
    }

    fn size(path: std::path::PathBuf) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    #[test]
    fn the_writer_starts_the_wal_over_once_it_reaches_the_restart_length() {
        // No background passes here, so that nothing races the writer's own checkpoint (with
        // them, the WAL may run past the restart length while a pass holds the checkpoint, by
        // however many commits the pass lasts).
        let dir = tempfile::tempdir().unwrap();
        let restart_at = 512;
        let conn = store(dir.path(), i32::MAX, restart_at);
        // ~18,000 frames, ~150 MB of WAL if it never started over.
        let rows = 6000;
        insert(&conn, rows);
        let wal = size(dir.path().join("c.db-wal"));
        assert!(
            wal <= 2 * restart_at as u64 * FRAME,
            "the WAL grew to {wal} bytes"
        );
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, rows as i64);
        // What is not in the (bounded) WAL must be in the database.
        let db = size(dir.path().join("c.db"));
        assert!(
            db >= rows as u64 * 8000 / 2,
            "only {db} bytes reached the database"
        );
    }

    #[test]
    fn background_passes_copy_the_wal_into_the_database() {
        // The writer never checkpoints here: whatever reaches the database, the background
        // thread copied.
        let dir = tempfile::tempdir().unwrap();
        let conn = store(dir.path(), 128, i32::MAX);
        let rows = 1000;
        insert(&conn, rows);
        // Passes run on their own thread; give a slow machine time to finish the last one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let copied = |db: u64| db >= (rows as u64 - 128) * 8000;
        while !copied(size(dir.path().join("c.db"))) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let db = size(dir.path().join("c.db"));
        assert!(copied(db), "only {db} bytes reached the database");
    }
}
