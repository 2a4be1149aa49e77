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

    #[test]
    fn the_wal_stays_bounded_and_its_pages_reach_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 8192).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        // Without an fsync per commit, so that the test is quick; checkpoints are the same.
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let restart_at = 512;
        install_with(&mut conn, &path, 128, restart_at).unwrap();
        // Each insert commits on its own: ~18,000 frames, ~150 MB of WAL if nothing were copied.
        let rows = 6000;
        for _ in 0..rows {
            conn.execute("INSERT INTO t (b) VALUES (zeroblob(8000))", [])
                .unwrap();
        }
        // The WAL may run past `restart_at` while a background pass holds the checkpoint, by
        // however many commits that pass lasts; the bound leaves room for a slow disk.
        let wal = std::fs::metadata(dir.path().join("c.db-wal"))
            .unwrap()
            .len();
        let frame = 8192 + 24;
        assert!(
            wal <= 8 * restart_at as u64 * frame,
            "the WAL grew to {wal} bytes"
        );
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, rows);
        // What is not in the (bounded) WAL must be in the database.
        let db = std::fs::metadata(&path).unwrap().len();
        assert!(
            db >= rows as u64 * 8000 / 4,
            "only {db} bytes reached the database"
        );
    }
}
