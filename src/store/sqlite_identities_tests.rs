//! Tests of the SQLite dedupe lookup (`sqlite_identities.rs`) through the store: identities are
//! found wherever they are kept, across restarts, and a lost, foreign or stale index never lets
//! a redelivery through.

use std::sync::Arc;

use super::super::NewProviderEvent;
use super::super::sqlite_dedupe_filter::Bloom;
use super::super::sqlite_identities::{boot_id, index_path, remove_index};
use super::*;

fn webhook(ids: &[&str]) -> NewWebhook {
    webhook_at(ids, 1000)
}

fn webhook_at(ids: &[&str], received_at_ms: i64) -> NewWebhook {
    NewWebhook {
        source: "stripe".into(),
        request_id: "req".into(),
        received_at_ms,
        headers_json: "{}".into(),
        body: bytes::Bytes::from_static(b"{}"),
        events: ids
            .iter()
            .map(|id| NewProviderEvent {
                event_id: id.to_string(),
                event_type: "t".into(),
                // Nothing to deliver, so retention may prune them at once.
                status: "ignored",
                detail: None,
                outbox: Vec::new(),
            })
            .collect(),
        claim: None,
    }
}

async fn duplicates(store: &SqliteStore, ids: &[&str]) -> Vec<bool> {
    store.accept(webhook(ids)).await.unwrap().duplicates
}

async fn last_event_id(store: &SqliteStore) -> i64 {
    store
        .call(|conn| conn.query_row("SELECT MAX(id) FROM provider_events", [], |r| r.get(0)))
        .await
        .unwrap()
}

/// Copies everything the store has into its index, and waits until it has (on the writer
/// thread, which the index's thread does not need).
async fn catch_up(store: &SqliteStore) {
    let last = last_event_id(store).await;
    let through = store
        .call(|writing| Ok(writing.identities.catch_up()))
        .await
        .unwrap();
    assert!(through >= last, "the index reaches {through}, not {last}");
}

/// The index of the store at `path`, opened beside whatever else has it open.
fn index_db(path: &std::path::Path) -> Connection {
    let conn = Connection::open(index_path(path)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// Runs `sql` on the index of the store at `path`.
fn edit_index(path: &std::path::Path, sql: &str) {
    index_db(path).execute_batch(sql).unwrap();
}

fn indexed(path: &std::path::Path) -> (i64, i64) {
    index_db(path)
        .query_row(
            "SELECT (SELECT COUNT(*) FROM seen WHERE run IN (SELECT run FROM runs)),
                    (SELECT through FROM progress)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// Opens the store at `path`, lets `work` run, closes the store again, and returns what `work`
/// did. Its threads stop once the channels they wait on close, a moment after; they only ever
/// read the files then, and the helpers here wait for locks anyway.
async fn with_store<T, F: std::future::Future<Output = T>>(
    path: &std::path::Path,
    work: impl FnOnce(std::sync::Arc<SqliteStore>) -> F,
) -> T {
    let store = std::sync::Arc::new(SqliteStore::open(path).await.unwrap());
    let done = work(store.clone()).await;
    drop(store);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    done
}

/// A closed store at `path` with identities a and b, both in its index.
async fn store_a_and_b_indexed(path: &std::path::Path) {
    with_store(path, |store| async move {
        duplicates(&store, &["a", "b"]).await;
        catch_up(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_are_found_after_a_restart_whether_indexed_or_only_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "b"]).await, vec![false, false]);
        catch_up(&store).await;
        assert_eq!(duplicates(&store, &["c"]).await, vec![false]);
    })
    .await;
    assert_eq!(
        indexed(&path),
        (2, 2),
        "a and b in the index, c only in the store"
    );
    with_store(&path, |store| async move {
        assert_eq!(
            duplicates(&store, &["a", "b", "c", "d"]).await,
            vec![true, true, true, false]
        );
        assert_eq!(duplicates(&store, &["d"]).await, vec![true]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_unreadable_index_is_rebuilt_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    remove_index(&index_path(&path)).unwrap();
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "c"]).await, vec![true, false]);
    })
    .await;
    remove_index(&index_path(&path)).unwrap();
    std::fs::write(
        index_path(&path),
        b"not a database, and long enough to look like one",
    )
    .unwrap();
    with_store(&path, |store| async move {
        assert_eq!(
            duplicates(&store, &["a", "b", "c", "d"]).await,
            vec![true, true, true, false]
        );
    })
    .await;
}

/// An index that claims to reach further than it does (another store's, or one kept while the
/// store was restored from a backup) must not be trusted.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_of_another_store_or_ahead_of_it_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    // Another store's index: it knows none of these identities, and says it has them all.
    edit_index(
        &path,
        "DELETE FROM seen; UPDATE progress SET store = 'another store';",
    );
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "b"]).await, vec![true, true]);
        catch_up(&store).await;
    })
    .await;
    // Ahead of the store: identities stored from now on would count as indexed already, and be
    // forgotten by the next restart.
    edit_index(&path, "UPDATE progress SET through = 1000;");
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["e"]).await, vec![false]);
    })
    .await;
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "e"]).await, vec![true, true]);
    })
    .await;
}

/// The index is never synced, so a machine restart may have torn it: it is rebuilt, not read.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_written_before_the_machine_started_is_rebuilt() {
    if boot_id().is_none() {
        // No boot id to compare: the index is synced, and a restart cannot tear it.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    // What a restart could leave: the progress as written, identities that never reached the
    // disk.
    edit_index(
        &path,
        "DELETE FROM seen; UPDATE progress SET boot = 'an earlier boot';",
    );
    with_store(&path, |store| async move {
        assert_eq!(
            duplicates(&store, &["a", "b", "c"]).await,
            vec![true, true, false]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accept_rolled_back_leaves_no_identity_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let hook = webhook(&["a"]);
    let failed = store
        .call(move |writing| {
            accept(writing, &hook, &StoredBody::encode(&hook.body))?;
            Err::<(), _>(rusqlite::Error::InvalidQuery)
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(duplicates(&store, &["a"]).await, vec![false]);
    assert_eq!(duplicates(&store, &["a"]).await, vec![true]);
}

fn index_entries(path: &std::path::Path) -> Vec<(i64, i64)> {
    index_db(path)
        .prepare("SELECT hash, id FROM seen WHERE run IN (SELECT run FROM runs) ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Entries for identities retention deleted stay until their run is merged with a newer one;
/// until then, and if one comes back, they turn nothing away.
#[tokio::test(flavor = "multi_thread")]
async fn pruned_identities_leave_the_index_and_stale_entries_turn_nothing_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let path_in = path.clone();
    let pruned = with_store(&path, |store| async move {
        duplicates(&store, &["a", "b"]).await;
        catch_up(&store).await;
        let pruned = index_entries(&path_in);
        let report = store.prune(2000).await.unwrap();
        assert_eq!(report.provider_events, 2);
        assert_eq!(index_entries(&path_in).len(), 2, "stale, until merged");
        assert_eq!(
            duplicates(&store, &["a"]).await,
            vec![false],
            "pruned: new again"
        );
        // The new a makes a run as large as half the stale one: they are merged.
        catch_up(&store).await;
        let ids: Vec<i64> = index_entries(&path_in).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![3], "only the new a");
        assert_eq!(index_pruned(&path_in), 1, "the index reflects the prune");
        pruned
    })
    .await;
    // As if a merge had kept them.
    assert_eq!(pruned.len(), 2);
    for (hash, id) in pruned {
        edit_index(
            &path,
            &format!(
                "INSERT INTO seen (run, hash, id) VALUES (1000, {hash}, {id});
                 INSERT OR REPLACE INTO runs (run, size) VALUES (1000, 2);"
            ),
        );
    }
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "b"]).await, vec![true, false]);
    })
    .await;
}

/// Retention may delete the newest identities. Those stored after it must not take their ids
/// again: the index takes every id above the last it merged to be new to it, and the writer
/// lets go of what it holds up to there.
#[tokio::test(flavor = "multi_thread")]
async fn identities_stored_after_retention_deleted_the_newest_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    with_store(&dir.path().join("s.db"), |store| async move {
        duplicates(&store, &["a", "b"]).await;
        catch_up(&store).await;
        let report = store.prune(2000).await.unwrap();
        assert_eq!(report.provider_events, 2, "the store is empty");
        assert_eq!(duplicates(&store, &["c", "d", "e"]).await, vec![false; 3]);
        catch_up(&store).await;
        // A commit after the merge: the writer lets go of what the index now holds.
        duplicates(&store, &["f"]).await;
        assert_eq!(duplicates(&store, &["c", "d", "e"]).await, vec![true; 3]);
    })
    .await;
}

/// A store upgraded from a version without the index, or one whose index was deleted, may hold
/// more identities than memory should: the index catches up before the store opens.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_far_behind_catches_up_before_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    with_store(&path, |store| async move {
        duplicates(&store, &["x"]).await;
    })
    .await;
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 70000)
             INSERT INTO provider_events
                 (source, event_id, event_type, webhook_id, status, detail, received_at)
             SELECT 'stripe', 'bulk_' || i, 't', 1, 'ignored', NULL, 1000 FROM n;",
        )
        .unwrap();
    remove_index(&index_path(&path)).unwrap();
    let path_in = path.clone();
    with_store(&path, |store| async move {
        assert_eq!(indexed(&path_in), (70_001, 70_001), "caught up on opening");
        assert_eq!(
            duplicates(&store, &["x", "bulk_1", "bulk_70000", "new"]).await,
            vec![true, true, true, false]
        );
    })
    .await;
}

/// An index another process holds is not damaged: opening the store fails and says so, rather
/// than deleting the file from under its holder.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_held_by_another_process_is_not_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    let holder = index_db(&path);
    holder
        .execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; DELETE FROM seen WHERE 0;",
        )
        .unwrap();
    let opened = SqliteStore::open(&path).await;
    assert!(
        matches!(&opened, Err(StoreError::Sqlite(e)) if e.to_string().contains("locked")),
        "{:?}",
        opened.as_ref().err()
    );
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "b"]).await, vec![true, true]);
    })
    .await;
    assert_eq!(indexed(&path), (2, 2), "the index as it was");
}

/// A consistent copy of the store at `path`, as a backup tool would take it.
fn back_up(path: &std::path::Path) -> std::path::PathBuf {
    let copy = path.with_extension("backup");
    Connection::open(path)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    copy
}

/// Puts `backup` in place of the (closed) store at `path`, leaving its dedupe index as it is.
fn restore(backup: &std::path::Path, path: &std::path::Path) {
    for suffix in ["-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(file));
    }
    std::fs::copy(backup, path).unwrap();
}

fn index_pruned(path: &std::path::Path) -> i64 {
    index_db(path)
        .query_row("SELECT pruned FROM progress", [], |r| r.get(0))
        .unwrap()
}

/// Retention after a backup had the index leave out identities the backup still holds; restored,
/// the store must still know them, though the index reaches no further than the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_restored_from_before_a_prune_keeps_the_identities_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    let backup = back_up(&path);
    let path_in = path.clone();
    with_store(&path, |store| async move {
        assert_eq!(store.prune(2000).await.unwrap().provider_events, 2);
        duplicates(&store, &["c"]).await;
        catch_up(&store).await;
        assert_eq!(index_pruned(&path_in), 1);
        let ids: Vec<i64> = index_entries(&path_in).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![3], "a and b left out of the merged run");
    })
    .await;
    restore(&backup, &path);
    with_store(&path, |store| async move {
        assert_eq!(
            duplicates(&store, &["a", "b", "c"]).await,
            vec![true, true, false]
        );
    })
    .await;
}

/// The same when the index never held the pruned identities: copying a later identity in, past
/// them, reflects the prune all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_restored_from_before_a_prune_the_index_copied_past_keeps_its_identities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let path_in = path.clone();
    let backup = with_store(&path, |store| async move {
        duplicates(&store, &["a", "b"]).await;
        store.accept(webhook_at(&["c"], 5000)).await.unwrap();
        let backup = back_up(&path_in);
        assert_eq!(store.prune(2000).await.unwrap().provider_events, 2);
        assert_eq!(index_pruned(&path_in), 0, "nothing merged since");
        catch_up(&store).await;
        assert_eq!(indexed(&path_in), (1, 3), "only c copied in");
        backup
    })
    .await;
    restore(&backup, &path);
    with_store(&path, |store| async move {
        assert_eq!(
            duplicates(&store, &["a", "b", "c", "d"]).await,
            vec![true, true, true, false]
        );
    })
    .await;
}

/// An index written before it recorded the store's prunes cannot tell a restored store from
/// the one it was written for.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_of_an_earlier_layout_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    let store_id: String = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'store_id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    remove_index(&index_path(&path)).unwrap();
    // The first layout, claiming both identities while holding neither.
    edit_index(
        &path,
        &format!(
            "CREATE TABLE seen (hash INTEGER NOT NULL, id INTEGER NOT NULL,
                 PRIMARY KEY (hash, id)) WITHOUT ROWID;
             CREATE TABLE progress (store TEXT NOT NULL, through INTEGER NOT NULL,
                 boot TEXT NOT NULL);
             INSERT INTO progress VALUES ('{store_id}', 2, '{}');",
            boot_id().unwrap_or_default()
        ),
    );
    with_store(&path, |store| async move {
        assert_eq!(duplicates(&store, &["a", "b"]).await, vec![true, true]);
    })
    .await;
}

async fn filter_in_use(store: &SqliteStore) -> Option<Arc<Bloom>> {
    store
        .call(|writing| Ok(writing.identities.filter_in_use()))
        .await
        .unwrap()
}

/// Stores `count` new identities (`prefix0`, `prefix1`, …), copies them into the index, then
/// commits `then`, which lets go of them in memory: later lookups of them go through the filter.
async fn store_new_and_index(
    store: &SqliteStore,
    prefix: &str,
    count: usize,
    then: &str,
) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(duplicates(store, &ids).await.iter().all(|d| !d), "new");
    catch_up(store).await;
    duplicates(store, &[then]).await;
    names
}

/// Whether every one of `names` is found as already stored.
async fn all_held(store: &SqliteStore, names: &[String]) -> bool {
    let ids: Vec<&str> = names.iter().map(String::as_str).collect();
    duplicates(store, &ids).await.iter().all(|d| *d)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_keeps_its_size_and_is_rebuilt_once_full_only_if_retention_kept_the_store_small()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    store_a_and_b_indexed(&path).await;
    let path_in = path.clone();
    with_store(&path, |store| async move {
        // The index's thread builds the filter from the index before it answers a catch-up.
        catch_up(&store).await;
        let first = filter_in_use(&store).await.expect("a filter in use");
        assert_eq!(
            first.size_in_bytes(),
            2_048,
            "its size in tests, from the start"
        );
        assert_eq!(
            duplicates(&store, &["a", "b", "c"]).await,
            vec![true, true, false]
        );

        // Each identity is added as it is copied into the index.
        let few = store_new_and_index(&store, "few", 10, "d").await;
        assert!(all_held(&store, &few).await, "added when copied");

        // Past its room (2,048 in tests), beside a store that holds more than half of that:
        // it takes the new identities and is not rebuilt, which would only scan the index.
        let many = store_new_and_index(&store, "many", 2_100, "e").await;
        let full = filter_in_use(&store).await.expect("a filter in use");
        assert!(Arc::ptr_eq(&first, &full), "not rebuilt");
        assert!(all_held(&store, &many).await);
        assert!(all_held(&store, &few).await);

        // Retention empties the store; once full, the filter is rebuilt from what it holds,
        // at the same size, and forgets the identities retention deleted.
        let deleted = index_entries(&path_in);
        assert_eq!(store.prune(2000).await.unwrap().provider_events, 2_115);
        let late = store_new_and_index(&store, "late", 5, "f").await;
        let rebuilt = filter_in_use(&store).await.expect("a filter in use");
        assert!(!Arc::ptr_eq(&full, &rebuilt), "rebuilt");
        assert_eq!(rebuilt.size_in_bytes(), 2_048);
        assert!(
            deleted.iter().all(|&(hash, _)| !rebuilt.may_hold(hash)),
            "forgot the deleted"
        );
        assert!(all_held(&store, &late).await);
        assert_eq!(
            duplicates(&store, &["a", "few0", "many0"]).await,
            vec![false; 3]
        );
    })
    .await;
}
