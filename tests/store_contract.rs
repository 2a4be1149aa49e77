//! The store contract, one suite run against both engines: SQLite (a temp file) and PostgreSQL
//! (a fresh database; see support/postgres.rs).

mod support;

use std::sync::Arc;

use bytes::Bytes;
use greenflash_bridge::store::{
    Claim, Completion, DeadSelector, NewOutboxEvent, NewProviderEvent, NewWebhook, ReplayQuery,
    ReplayUpdate, Store,
};

const NOW: i64 = 1_773_072_671_000;
const LEASE: i64 = 60_000;

fn webhook(source: &str, ids: &[&str]) -> NewWebhook {
    NewWebhook {
        source: source.into(),
        request_id: "req-1".into(),
        received_at_ms: NOW,
        headers_json: "{}".into(),
        body: Bytes::from_static(br#"{"id":"x"}"#),
        events: ids
            .iter()
            .map(|id| NewProviderEvent {
                event_id: id.to_string(),
                event_type: "invoice.paid".into(),
                status: "mapped",
                detail: None,
                outbox: vec![NewOutboxEvent {
                    rule: "paid".into(),
                    insert_id: format!("{source}:{id}:paid"),
                    payload: format!(r#"{{"eventType":"paid","insertId":"{source}:{id}:paid"}}"#),
                }],
            })
            .collect(),
        claim: None,
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = greenflash_bridge::store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = crate::support::postgres::fresh_database().await else { return };
                    let store = greenflash_bridge::store::open(&url).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
    };
}

contract!(
    accepts_once_and_reports_redeliveries_as_duplicates,
    an_id_repeated_within_a_webhook_counts_once,
    concurrent_redeliveries_are_stored_once,
    each_due_event_is_leased_to_one_owner_until_its_lease_expires,
    a_stale_owner_cannot_complete_an_event_taken_over,
    events_stored_under_a_claim_are_leased_to_its_owner,
    retries_wait_until_due_and_throttling_does_not_count,
    a_group_of_outcomes_records_each_as_it_says,
    dead_letters_are_listed_retried_and_dropped,
    replay_sees_stored_webhooks_and_records_new_events,
    bodies_come_back_byte_for_byte_compressed_or_not,
    pruning_keeps_pending_and_dead_events,
    pruning_reaches_every_old_webhook_and_no_young_one,
    the_throttle_only_grows,
    the_store_reports_queue_stats_and_answers_pings,
);

async fn accepts_once_and_reports_redeliveries_as_duplicates(store: Arc<dyn Store>) {
    let first = store
        .accept(webhook("stripe", &["evt_1", "evt_2"]))
        .await
        .unwrap();
    assert_eq!(first.duplicates, vec![false, false]);
    let again = store
        .accept(webhook("stripe", &["evt_1", "evt_2"]))
        .await
        .unwrap();
    assert_eq!(again.duplicates, vec![true, true]);
    assert!(!again.stored_new());
    let mixed = store
        .accept(webhook("stripe", &["evt_2", "evt_3"]))
        .await
        .unwrap();
    assert_eq!(mixed.duplicates, vec![true, false]);
    // Identity is per source.
    let other = store.accept(webhook("paddle", &["evt_1"])).await.unwrap();
    assert_eq!(other.duplicates, vec![false]);
    let leased = store.lease("w", 100, NOW, LEASE).await.unwrap();
    assert_eq!(leased.len(), 4, "one outbox event per new provider event");
}

/// A batch that names one event twice (HubSpot sends arrays) stores it once; every outbox event
/// of the stored ones is handed over under the claim, in order.
async fn an_id_repeated_within_a_webhook_counts_once(store: Arc<dyn Store>) {
    let mut hook = webhook("hubspot", &["a", "a", "b"]);
    for event in &mut hook.events {
        let mut second = event.outbox[0].clone();
        second.rule = "second".into();
        second.insert_id.push_str("~2");
        event.outbox.push(second);
    }
    hook.claim = Some(Claim {
        owner: "A".into(),
        until_ms: NOW + LEASE,
    });
    let accepted = store.accept(hook).await.unwrap();
    assert_eq!(accepted.duplicates, vec![false, true, false]);
    let handed: Vec<&str> = accepted
        .claimed
        .iter()
        .map(|e| e.insert_id.as_str())
        .collect();
    assert_eq!(
        handed,
        vec![
            "hubspot:a:paid",
            "hubspot:a:paid~2",
            "hubspot:b:paid",
            "hubspot:b:paid~2"
        ]
    );
    let ids: std::collections::HashSet<i64> = accepted.claimed.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4, "each its own outbox event");
    let taken_over = store.lease("B", 10, NOW + LEASE + 1, LEASE).await.unwrap();
    assert_eq!(taken_over.len(), 4, "and nothing more was stored");
}

async fn concurrent_redeliveries_are_stored_once(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .accept(webhook("stripe", &["evt_race"]))
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap().stored_new() {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    assert_eq!(store.lease("w", 100, NOW, LEASE).await.unwrap().len(), 1);
}

async fn each_due_event_is_leased_to_one_owner_until_its_lease_expires(store: Arc<dyn Store>) {
    store
        .accept(webhook("stripe", &["a", "b", "c"]))
        .await
        .unwrap();
    let first = store.lease("A", 2, NOW, LEASE).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = store.lease("B", 10, NOW, LEASE).await.unwrap();
    assert_eq!(second.len(), 1, "only what A does not hold");
    assert!(
        store
            .lease("B", 10, NOW + 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let after_expiry = store.lease("B", 10, NOW + LEASE + 1, LEASE).await.unwrap();
    assert_eq!(after_expiry.len(), 3, "expired leases are taken over");
    assert_eq!(first[0].request_id, "req-1");
}

async fn a_stale_owner_cannot_complete_an_event_taken_over(store: Arc<dyn Store>) {
    store.accept(webhook("stripe", &["a"])).await.unwrap();
    let a = store.lease("A", 1, NOW, LEASE).await.unwrap();
    let b = store.lease("B", 1, NOW + LEASE + 1, LEASE).await.unwrap();
    assert_eq!(a[0].id, b[0].id);
    store
        .complete(
            "A",
            NOW,
            vec![Completion::Dead {
                id: a[0].id,
                status: Some(400),
                error: "late".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        store.outbox_event(a[0].id).await.unwrap().unwrap().state,
        "pending",
        "A no longer holds it"
    );
    store
        .complete(
            "B",
            NOW,
            vec![Completion::Delivered {
                id: b[0].id,
                status: 200,
            }],
        )
        .await
        .unwrap();
    let event = store.outbox_event(b[0].id).await.unwrap().unwrap();
    assert_eq!(
        (event.state.as_str(), event.attempts, event.last_status),
        ("delivered", 1, Some(200))
    );
}

async fn events_stored_under_a_claim_are_leased_to_its_owner(store: Arc<dyn Store>) {
    let claimed = |ids: &[&str]| NewWebhook {
        claim: Some(Claim {
            owner: "A".into(),
            until_ms: NOW + LEASE,
        }),
        ..webhook("stripe", ids)
    };
    let first = store.accept(claimed(&["a", "b"])).await.unwrap();
    assert_eq!(first.duplicates, vec![false, false]);
    let handed: Vec<(&str, u32, i64)> = first
        .claimed
        .iter()
        .map(|e| (e.insert_id.as_str(), e.attempts, e.created_at_ms))
        .collect();
    assert_eq!(
        handed,
        vec![("stripe:a:paid", 0, NOW), ("stripe:b:paid", 0, NOW)]
    );
    let again = store.accept(claimed(&["a"])).await.unwrap();
    assert!(again.claimed.is_empty(), "a duplicate hands nothing over");
    store.accept(webhook("stripe", &["c"])).await.unwrap();
    let unclaimed = store.lease("B", 10, NOW, LEASE).await.unwrap();
    assert_eq!(
        unclaimed
            .iter()
            .map(|e| e.insert_id.as_str())
            .collect::<Vec<_>>(),
        vec!["stripe:c:paid"],
        "A holds what it claimed"
    );
    let done = |id| vec![Completion::Delivered { id, status: 200 }];
    store
        .complete("B", NOW, done(unclaimed[0].id))
        .await
        .unwrap();
    store
        .complete("A", NOW, done(first.claimed[0].id))
        .await
        .unwrap();
    let delivered = store
        .outbox_event(first.claimed[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        delivered.state, "delivered",
        "the claim's owner completes it"
    );
    let taken_over = store.lease("B", 10, NOW + LEASE + 1, LEASE).await.unwrap();
    assert_eq!(
        taken_over,
        vec![first.claimed[1].clone()],
        "once the claim runs out, the event is anyone's, as leased"
    );
}

async fn retries_wait_until_due_and_throttling_does_not_count(store: Arc<dyn Store>) {
    store.accept(webhook("stripe", &["a"])).await.unwrap();
    let e = store.lease("A", 1, NOW, LEASE).await.unwrap().remove(0);
    let retry = |at: i64, counts: bool| Completion::Retry {
        id: e.id,
        next_attempt_ms: at,
        status: Some(503),
        error: "busy".into(),
        counts,
    };
    store
        .complete("A", NOW, vec![retry(NOW + 5_000, true)])
        .await
        .unwrap();
    assert!(
        store
            .lease("A", 1, NOW + 4_999, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_due().await.unwrap(), Some(NOW + 5_000));
    let again = store.lease("A", 1, NOW + 5_000, LEASE).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    store
        .complete("A", NOW, vec![retry(NOW + 6_000, false)])
        .await
        .unwrap();
    let third = store.lease("A", 1, NOW + 6_000, LEASE).await.unwrap();
    assert_eq!(third[0].attempts, 1, "a throttled attempt is not counted");
}

/// One group holding every kind of outcome (delivery stores them together), and a second
/// outcome for an event the group already ended, which the first one's end of lease fences.
async fn a_group_of_outcomes_records_each_as_it_says(store: Arc<dyn Store>) {
    store
        .accept(webhook("stripe", &["a", "b", "c", "d"]))
        .await
        .unwrap();
    let leased = store.lease("A", 10, NOW, LEASE).await.unwrap();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| leased[i].id);
    let earlier = Completion::Retry {
        id: d,
        next_attempt_ms: NOW,
        status: Some(500),
        error: "earlier".into(),
        counts: true,
    };
    store.complete("A", NOW, vec![earlier]).await.unwrap();
    assert_eq!(store.lease("A", 10, NOW, LEASE).await.unwrap()[0].id, d);
    let group = vec![
        Completion::Delivered { id: a, status: 200 },
        Completion::Retry {
            id: b,
            next_attempt_ms: NOW + 5_000,
            status: Some(503),
            error: "busy".into(),
            counts: true,
        },
        Completion::Dead {
            id: c,
            status: Some(422),
            error: "no".into(),
        },
        Completion::Skipped { id: d },
        Completion::Dead {
            id: a,
            status: Some(400),
            error: "too late".into(),
        },
    ];
    store.complete("A", NOW + 1, group).await.unwrap();
    let mut recorded = Vec::new();
    for id in [a, b, c, d] {
        let e = store.outbox_event(id).await.unwrap().unwrap();
        recorded.push((
            e.state,
            e.attempts,
            e.last_status,
            e.last_error,
            e.updated_at_ms,
        ));
    }
    let row = |state: &str, attempts, status, error: Option<&str>| {
        (
            state.to_string(),
            attempts,
            status,
            error.map(String::from),
            NOW + 1,
        )
    };
    assert_eq!(
        recorded,
        vec![
            row("delivered", 1, Some(200), None),
            row("pending", 1, Some(503), Some("busy")),
            row("dead", 1, Some(422), Some("no")),
            row("dry_run", 1, Some(500), Some("earlier")),
        ]
    );
    assert_eq!(store.next_due().await.unwrap(), Some(NOW + 5_000));
}

/// The store may compress what it keeps; replay must still see the bytes the provider sent,
/// whether they compress (JSON) or not.
async fn bodies_come_back_byte_for_byte_compressed_or_not(store: Arc<dyn Store>) {
    let json = format!(
        r#"{{"id":"evt_big","data":[{}]}}"#,
        vec![r#"{"amount":2000,"currency":"usd"}"#; 120].join(",")
    );
    // An xorshift sequence: no run for LZ4 to find.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    // 64 KB: past a database page, so PostgreSQL keeps it out of line.
    let noise: Vec<u8> = (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for (id, body) in [("big", Bytes::from(json)), ("noise", Bytes::from(noise))] {
        let hook = NewWebhook {
            body: body.clone(),
            ..webhook("stripe", &[id])
        };
        store.accept(hook).await.unwrap();
        let stored = store
            .stored_webhooks(ReplayQuery {
                source: "stripe".into(),
                since_ms: None,
                until_ms: None,
                statuses: vec![],
            })
            .await
            .unwrap();
        let kept = stored.iter().find(|w| w.events[0].event_id == id).unwrap();
        assert_eq!(kept.body, body, "{id}");
    }
}

async fn dead_letters_are_listed_retried_and_dropped(store: Arc<dyn Store>) {
    store.accept(webhook("stripe", &["a", "b"])).await.unwrap();
    store.accept(webhook("paddle", &["c"])).await.unwrap();
    let leased = store.lease("A", 10, NOW, LEASE).await.unwrap();
    let dead = leased
        .iter()
        .map(|e| Completion::Dead {
            id: e.id,
            status: Some(422),
            error: "HTTP 422: no".into(),
        })
        .collect();
    store.complete("A", NOW, dead).await.unwrap();
    assert_eq!(store.dead_letters(None).await.unwrap().len(), 3);
    let stripe = store.dead_letters(Some("stripe")).await.unwrap();
    assert_eq!(stripe.len(), 2);
    assert_eq!(stripe[0].last_status, Some(422));
    assert_eq!(
        store
            .retry_dead(DeadSelector::Source("paddle".into()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.drop_dead(&[stripe[0].id]).await.unwrap(), 1);
    assert_eq!(
        store
            .retry_dead(DeadSelector::Ids(vec![stripe[1].id]))
            .await
            .unwrap(),
        1
    );
    assert!(store.dead_letters(None).await.unwrap().is_empty());
    assert_eq!(
        store
            .outbox_event(stripe[0].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "dropped"
    );
    let requeued = store
        .lease("B", 10, greenflash_bridge::store::now_ms(), LEASE)
        .await
        .unwrap();
    assert_eq!(requeued.len(), 2);
    assert!(requeued.iter().all(|e| e.attempts == 0));
}

async fn replay_sees_stored_webhooks_and_records_new_events(store: Arc<dyn Store>) {
    store.accept(webhook("stripe", &["a"])).await.unwrap();
    let query = ReplayQuery {
        source: "stripe".into(),
        since_ms: Some(NOW - 1),
        until_ms: Some(NOW + 1),
        statuses: vec![],
    };
    let stored = store.stored_webhooks(query.clone()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body.as_ref(), br#"{"id":"x"}"#);
    assert_eq!(stored[0].events[0].emitted[0].insert_id, "stripe:a:paid");
    let none = ReplayQuery {
        statuses: vec!["mapping_failed".into()],
        ..query.clone()
    };
    assert!(store.stored_webhooks(none).await.unwrap().is_empty());
    let later = ReplayQuery {
        since_ms: Some(NOW + 1),
        ..query.clone()
    };
    assert!(store.stored_webhooks(later).await.unwrap().is_empty());
    store
        .record_replay(
            "stripe",
            vec![ReplayUpdate {
                event_id: "a".into(),
                status: "mapped",
                detail: None,
                outbox: vec![NewOutboxEvent {
                    rule: "paid".into(),
                    insert_id: "stripe:a:paid~1".into(),
                    payload: "{}".into(),
                }],
            }],
        )
        .await
        .unwrap();
    let stored = store.stored_webhooks(query).await.unwrap();
    assert_eq!(stored[0].events[0].emitted.len(), 2);
}

async fn pruning_keeps_pending_and_dead_events(store: Arc<dyn Store>) {
    store
        .accept(webhook("stripe", &["done", "dead", "waiting"]))
        .await
        .unwrap();
    let leased = store.lease("A", 10, NOW, LEASE).await.unwrap();
    let by_event = |suffix: &str| {
        leased
            .iter()
            .find(|e| e.insert_id.contains(suffix))
            .unwrap()
            .id
    };
    store
        .complete(
            "A",
            NOW,
            vec![
                Completion::Delivered {
                    id: by_event(":done:"),
                    status: 200,
                },
                Completion::Dead {
                    id: by_event(":dead:"),
                    status: Some(400),
                    error: "no".into(),
                },
            ],
        )
        .await
        .unwrap();
    let report = store.prune(NOW + 1).await.unwrap();
    assert_eq!(
        (
            report.outbox_events,
            report.provider_events,
            report.webhooks
        ),
        (1, 1, 0),
        "the body is still needed"
    );
    assert_eq!(store.dead_letters(None).await.unwrap().len(), 1);
    assert!(
        store
            .accept(webhook("stripe", &["done"]))
            .await
            .unwrap()
            .stored_new(),
        "the pruned identity is gone"
    );
    assert!(
        !store
            .accept(webhook("stripe", &["waiting"]))
            .await
            .unwrap()
            .stored_new(),
        "a pending one is kept"
    );
}

/// Retention works through a store of many webhooks (SQLite prunes a window of them at a
/// time): every finished old one goes, the one still pending and the young one stay.
async fn pruning_reaches_every_old_webhook_and_no_young_one(store: Arc<dyn Store>) {
    let old = 1_000usize;
    for n in 0..old {
        store
            .accept(webhook("stripe", &[&format!("evt_{n}")]))
            .await
            .unwrap();
    }
    let mut young = webhook("stripe", &["evt_young"]);
    young.received_at_ms = NOW + 10_000;
    store.accept(young).await.unwrap();
    let leased = store.lease("A", 2 * old, NOW, LEASE).await.unwrap();
    let done = leased
        .iter()
        .filter(|e| e.insert_id != "stripe:evt_500:paid")
        .map(|e| Completion::Delivered {
            id: e.id,
            status: 200,
        });
    store
        .complete("A", NOW + 5_000, done.collect())
        .await
        .unwrap();
    let report = store.prune(NOW + 6_000).await.unwrap();
    assert_eq!(
        (
            report.outbox_events,
            report.provider_events,
            report.webhooks
        ),
        (old as u64 - 1, old as u64 - 1, old as u64 - 1),
        "everything old and delivered, except the webhook still pending"
    );
    for (id, kept) in [("evt_0", false), ("evt_999", false), ("evt_500", true)] {
        let again = store.accept(webhook("stripe", &[id])).await.unwrap();
        assert_eq!(!again.stored_new(), kept, "{id}");
    }
    let mut young = webhook("stripe", &["evt_young"]);
    young.received_at_ms = NOW + 10_000;
    assert!(
        !store.accept(young).await.unwrap().stored_new(),
        "the young webhook is kept"
    );
}

async fn the_throttle_only_grows(store: Arc<dyn Store>) {
    store.throttle(NOW + 4_000).await.unwrap();
    store.throttle(NOW + 1_000).await.unwrap();
    assert_eq!(store.throttled_until().await.unwrap(), NOW + 4_000);
}

async fn the_store_reports_queue_stats_and_answers_pings(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    store.accept(webhook("stripe", &["a", "b"])).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.oldest_pending_ms, stats.dead),
        (2, Some(NOW), 0)
    );
}

/// PostgreSQL accepts in one statement that inserts the raw body only when an event in it is
/// new: a redelivery leaves no copy behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_no_copy_of_a_redelivered_body() {
    let Some(url) = support::postgres::fresh_database().await else {
        return;
    };
    let store = greenflash_bridge::store::open(&url).await.unwrap();
    store.accept(webhook("stripe", &["a"])).await.unwrap();
    let again = store.accept(webhook("stripe", &["a"])).await.unwrap();
    assert_eq!(again.duplicates, vec![true]);
    store.accept(webhook("stripe", &["a", "b"])).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let counts = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM webhooks), (SELECT COUNT(*) FROM provider_events),
                    (SELECT COUNT(*) FROM outbox)",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    assert_eq!(counts, (2, 2, 2), "the redelivery stored nothing");
}
