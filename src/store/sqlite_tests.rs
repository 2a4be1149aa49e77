//! Unit tests of the SQLite engine: its writer, migrations, retention, leasing and reads.

use super::*;

/// What replay would read of `source`, at any time and status.
async fn everything_stored(store: &SqliteStore, source: &str) -> Vec<StoredWebhook> {
    store
        .stored_webhooks(ReplayQuery {
            source: source.into(),
            ..ReplayQuery::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_job_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
    store
        .call(|conn| conn.execute_batch("CREATE TABLE t (n INTEGER)"))
        .await
        .unwrap();
    // Sent together, so that they share batches; the odd ones write and then fail.
    let calls: Vec<_> = (0..64i64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .call(move |conn| {
                        conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                        if n % 2 == 1 {
                            return Err(rusqlite::Error::InvalidQuery);
                        }
                        Ok(n)
                    })
                    .await
            })
        })
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap();
        assert_eq!(answer.is_ok(), n % 2 == 0, "call {n}: {answer:?}");
    }
    let stored: Vec<i64> = store
        .call(|conn| {
            conn.prepare("SELECT n FROM t ORDER BY n")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(stored, (0..64).step_by(2).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_version_3_store_is_upgraded_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(&format!(
            "{SCHEMA_V1} {SCHEMA_V2} {SCHEMA_V3} PRAGMA user_version = 3;
             INSERT INTO webhooks (id, source, request_id, received_at, headers, body)
             VALUES (7, 'stripe', 'req-1', 1000, '{{}}', CAST('{{\"id\":\"evt_1\"}}' AS BLOB));
             INSERT INTO provider_events VALUES ('stripe', 'evt_1', 'invoice.paid', 7, 'mapped', NULL, 1000);
             INSERT INTO outbox (source, event_id, rule, insert_id, payload, next_attempt_at,
                 created_at, updated_at, request_id)
             VALUES ('stripe', 'evt_1', 'paid', 'stripe:evt_1:paid', '{{}}', 1000, 1000, 1000, 'req-1');"
        ))
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let stored = everything_stored(&store, "stripe").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].body[..], br#"{"id":"evt_1"}"#);
    let emitted = &stored[0].events[0].emitted;
    assert_eq!(
        emitted.len(),
        1,
        "the outbox event is found through its webhook"
    );
    assert_eq!(emitted[0].insert_id, "stripe:evt_1:paid");
    for (since_ms, found) in [(1000, 1), (1001, 0)] {
        let by_time = store
            .stored_webhooks(ReplayQuery {
                source: "stripe".into(),
                since_ms: Some(since_ms),
                ..ReplayQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(by_time.len(), found, "replay since {since_ms} ms");
    }
    let leased = store.lease("w", 10, 2000, 1000).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].request_id, "req-1");
    let redelivered = NewWebhook {
        source: "stripe".into(),
        request_id: "req-2".into(),
        received_at_ms: 3000,
        headers_json: "{}".into(),
        body: bytes::Bytes::from_static(br#"{"id":"evt_1"}"#),
        events: vec![super::super::NewProviderEvent {
            event_id: "evt_1".into(),
            event_type: "invoice.paid".into(),
            status: "mapped",
            detail: None,
            outbox: Vec::new(),
        }],
        claim: None,
    };
    assert_eq!(
        store.accept(redelivered).await.unwrap().duplicates,
        vec![true],
        "identities carried over still count"
    );
}

#[tokio::test]
async fn bodies_come_back_byte_for_byte_whether_compressed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let page_size: i64 = store
        .call(|conn| conn.pragma_query_value(None, "page_size", |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(page_size, PAGE_SIZE, "a new store gets the larger pages");
    let json = serde_json::to_vec_pretty(
        &serde_json::json!({"id": "evt_json", "data": {"object": {"lines": vec!["item"; 50]}}}),
    )
    .unwrap();
    let tiny = b"{}".to_vec();
    for (id, body) in [("evt_json", json), ("evt_tiny", tiny)] {
        let webhook = NewWebhook {
            source: "s".into(),
            request_id: id.into(),
            received_at_ms: 1000,
            headers_json: "{}".into(),
            body: bytes::Bytes::from(body.clone()),
            events: vec![super::super::NewProviderEvent {
                event_id: id.into(),
                event_type: "t".into(),
                status: "ignored",
                detail: None,
                outbox: Vec::new(),
            }],
            claim: None,
        };
        store.accept(webhook).await.unwrap();
        let encoding: String = store
            .call(move |conn| {
                conn.query_row(
                    "SELECT body_encoding FROM webhooks WHERE request_id = ?1",
                    [id],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(encoding, if id == "evt_json" { "lz4" } else { "identity" });
        let stored = everything_stored(&store, "s").await;
        let found = stored.iter().find(|w| w.events[0].event_id == id).unwrap();
        assert_eq!(found.body.as_ref(), body.as_slice(), "{id}");
    }
}

/// Retention runs on the writer, between accepts: each of its statements must reach rows
/// through the webhook id, since a scan of a table of weeks of webhooks holds every accept
/// queued behind it (measured: 0.7 s for a quarter of a million).
#[tokio::test]
async fn retention_reads_its_window_and_never_a_whole_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    for sql in ops::PRUNE.into_iter().chain([ops::NEXT_TO_PRUNE]) {
        let plan: Vec<String> = store
            .call(move |conn| {
                let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let unbound = vec![0i64; explain.parameter_count()];
                explain
                    .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))?
                    .collect()
            })
            .await
            .unwrap();
        assert!(
            plan.iter().all(|step| !step.starts_with("SCAN")),
            "{sql}\n{plan:#?}"
        );
    }
}

/// Stores a webhook of source `s` with one provider event, `event_id`, that has nothing to
/// deliver: `status` says how mapping went.
async fn accept_one(
    store: &SqliteStore,
    event_id: &str,
    received_at_ms: i64,
    status: &'static str,
) {
    store
        .accept(NewWebhook {
            source: "s".into(),
            request_id: event_id.into(),
            received_at_ms,
            headers_json: "{}".into(),
            body: bytes::Bytes::from_static(b"{}"),
            events: vec![super::super::NewProviderEvent {
                event_id: event_id.into(),
                event_type: "t".into(),
                status,
                detail: None,
                outbox: Vec::new(),
            }],
            claim: None,
        })
        .await
        .unwrap();
}

/// Times of the webhooks replay finds of source `s` received in `since..until`.
async fn replayed(store: &SqliteStore, since_ms: Option<i64>, until_ms: Option<i64>) -> Vec<i64> {
    store
        .stored_webhooks(ReplayQuery {
            source: "s".into(),
            since_ms,
            until_ms,
            ..ReplayQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|w| w.received_at_ms)
        .collect()
}

/// Webhooks are stored in the order they reach the writer, which is not quite the order they
/// were received in; replay by time still finds every one received in its window, in order.
#[tokio::test]
async fn replay_by_time_finds_webhooks_stored_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    let stored = [130_000, 61_000, 185_000, 59_999, 125_000, 240_000, 119_999];
    for (n, at) in stored.into_iter().enumerate() {
        accept_one(&store, &format!("evt_{n}"), at, "ignored").await;
    }
    let sinces = [
        None,
        Some(0),
        Some(59_999),
        Some(60_000),
        Some(61_001),
        Some(120_000),
    ];
    let more = [Some(125_000), Some(180_000), Some(240_000), Some(240_001)];
    for since in sinces.into_iter().chain(more) {
        for until in [None, Some(125_000), Some(200_000)] {
            let mut expected: Vec<i64> = stored
                .into_iter()
                .filter(|&at| since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u))
                .collect();
            expected.sort();
            assert_eq!(
                replayed(&store, since, until).await,
                expected,
                "since {since:?}, until {until:?}"
            );
        }
    }
}

/// Retention folds the per-minute starting points of replay below the oldest webhook left
/// into one, and replay by time still finds what retention kept.
#[tokio::test]
async fn replay_by_time_finds_what_retention_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    accept_one(&store, "old_0", 10_000, "ignored").await;
    accept_one(&store, "old_1", 70_000, "ignored").await;
    accept_one(&store, "first_of_minute_3", 180_000, "ignored").await;
    // Kept: a mapping failure waits for replay.
    accept_one(&store, "failed", 185_000, "mapping_failed").await;
    accept_one(&store, "newest", 300_000, "ignored").await;
    let report = store.prune(400_000).await.unwrap();
    assert_eq!((report.provider_events, report.webhooks), (4, 4));
    for since in [None, Some(180_000), Some(185_000)] {
        assert_eq!(
            replayed(&store, since, None).await,
            vec![185_000],
            "since {since:?}"
        );
    }
    assert_eq!(
        replayed(&store, Some(185_001), None).await,
        Vec::<i64>::new()
    );
    let minutes: i64 = store
        .call(|conn| conn.query_row("SELECT COUNT(*) FROM webhook_minutes", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(
        minutes, 2,
        "minutes 0, 1 and 3 folded into one; minute 5 left"
    );
}

/// Once retention has emptied the store, SQLite numbers webhooks from 1 again; one received in
/// a minute that already has a starting point is still found.
#[tokio::test]
async fn replay_by_time_finds_webhooks_numbered_again_after_retention_emptied_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    accept_one(&store, "minute_1", 70_000, "ignored").await;
    accept_one(&store, "minute_5", 300_000, "ignored").await;
    let report = store.prune(305_000).await.unwrap();
    assert_eq!(report.webhooks, 2, "the store is empty");
    accept_one(&store, "minute_5_again", 310_000, "ignored").await;
    assert_eq!(replayed(&store, Some(300_000), None).await, vec![310_000]);
}

/// Stores one webhook carrying `n` events to deliver, received at 1000 ms.
async fn accept_events(store: &SqliteStore, n: usize) {
    let events = (0..n)
        .map(|n| super::super::NewProviderEvent {
            event_id: format!("evt_{n}"),
            event_type: "invoice.paid".into(),
            status: "mapped",
            detail: None,
            outbox: vec![super::super::NewOutboxEvent {
                rule: "paid".into(),
                insert_id: format!("s:evt_{n}:paid"),
                payload: "{}".into(),
            }],
        })
        .collect();
    store
        .accept(NewWebhook {
            source: "s".into(),
            request_id: "req".into(),
            received_at_ms: 1000,
            headers_json: "{}".into(),
            body: bytes::Bytes::from_static(b"[]"),
            events,
            claim: None,
        })
        .await
        .unwrap();
}

/// A restarted bridge delivers at once what its crashed predecessor held, although a
/// lease moves its events to when it runs out.
#[tokio::test]
async fn events_leased_before_a_crash_are_due_at_once_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    accept_events(&store, 3).await;
    let crashed_at = now_ms();
    let leased = store.lease("crashed", 10, crashed_at, 60_000).await;
    assert_eq!(leased.unwrap().len(), 3);
    let meanwhile = store.lease("next", 10, crashed_at + 1, 60_000).await;
    assert_eq!(meanwhile.unwrap().len(), 0, "held until the lease runs out");
    assert_eq!(store.recover().await.unwrap(), 3);
    let now = now_ms();
    assert!(
        store
            .next_due()
            .await
            .unwrap()
            .is_some_and(|due| due <= now)
    );
    assert_eq!(store.lease("next", 10, now, 60_000).await.unwrap().len(), 3);
}

/// Leasing must cost what it leases, not what is already in flight: with 128 deliveries
/// out at saturation, every lease once stepped over all of them in the due index. Counted
/// in SQLite's virtual-machine steps, which do not depend on the machine's speed.
#[tokio::test]
async fn leasing_does_not_step_over_the_events_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    accept_events(&store, 600).await;
    let steps_to_lease_ten = || {
        store.call(|conn| {
            let mut lease = conn.prepare(LEASE)?;
            let leased = lease
                .query_map(params!["probe", 60_000, 2000, 10], |_| Ok(()))?
                .count();
            assert_eq!(leased, 10);
            Ok(lease.get_status(rusqlite::StatementStatus::VmStep))
        })
    };
    let with_none_out = steps_to_lease_ten().await.unwrap();
    assert_eq!(
        store.lease("w", 500, 2000, 60_000).await.unwrap().len(),
        500
    );
    let with_500_out = steps_to_lease_ten().await.unwrap();
    assert!(
        with_500_out < 2 * with_none_out,
        "{with_none_out} steps with nothing leased, {with_500_out} with 500 in flight"
    );
}

/// Queue statistics (every few seconds) and the operators' listings take time in
/// proportion to what is stored; they are read beside the writer, never in its queue, so
/// accepts go on.
#[tokio::test]
async fn reads_that_grow_with_the_data_do_not_wait_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("s.db")).await.unwrap());
    accept_events(&store, 3).await;
    // Holds the writer until the reads are done.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let (held, started) = (
        std::sync::Mutex::new(held),
        std::sync::Mutex::new(Some(started)),
    );
    let busy = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .call(move |_| {
                    if let Some(started) = started.lock().ok().and_then(|mut s| s.take()) {
                        let _ = started.send(());
                    }
                    let _ = held.lock().map(|h| h.recv());
                    Ok(())
                })
                .await
        }
    });
    running.await.unwrap();
    let reads = async {
        let stats = store.stats().await.unwrap();
        let dead = store.dead_letters(None).await.unwrap();
        let stored = everything_stored(&store, "s").await;
        (stats, dead, stored)
    };
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), reads).await;
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    let (stats, dead, stored) = done.expect("a read waited for the writer");
    assert_eq!((stats.pending, stats.dead), (3, 0));
    assert_eq!(stats.oldest_pending_ms, Some(1000));
    assert!(dead.is_empty());
    assert_eq!(stored[0].events.len(), 3);
}
