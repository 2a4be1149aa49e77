//! Several replicas on one PostgreSQL database: concurrent start-up migrations, a redelivery hitting
//! both at once, and one replica killed under load. Skipped without `BRIDGE_TEST_POSTGRES`
//! (never in CI, which sets `BRIDGE_REQUIRE_POSTGRES`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bridge::Setup;
use support::standin::Standin;
use support::{event_id_of, invoice_paid, post_stripe};

const WAIT: Duration = Duration::from_secs(40);

async fn send(client: &reqwest::Client, base: &str, body: &[u8]) -> Option<Value> {
    let response = post_stripe(client, base, body).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

async fn setup(standin: &Standin, dir: &std::path::Path) -> Option<Setup> {
    let url = support::postgres::fresh_database().await?;
    let mut setup = Setup::new(dir, standin)
        .env("BRIDGE_DELIVERY_LEASE", "3s")
        .env("BRIDGE_DELIVERY_TIMEOUT", "1s");
    setup.store_url = Some(url);
    Some(setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrate_concurrently_and_store_a_simultaneous_redelivery_once() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let Some(setup) = setup(&standin, dir.path()).await else {
        return;
    };
    // Both start against an empty database at the same moment.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| setup.start());
        let b = s.spawn(|| setup.start());
        (a.join().unwrap(), b.join().unwrap())
    });
    let client = reqwest::Client::new();
    let body = invoice_paid("evt_both_at_once");
    let (ra, rb) = tokio::join!(send(&client, &a.url, &body), send(&client, &b.url, &body));
    let (ra, rb) = (
        ra.expect("replica a answers 200"),
        rb.expect("replica b answers 200"),
    );
    let statuses: HashSet<&str> = [
        ra["status"].as_str().unwrap(),
        rb["status"].as_str().unwrap(),
    ]
    .into();
    assert_eq!(
        statuses,
        HashSet::from(["accepted", "duplicate"]),
        "{ra} {rb}"
    );
    standin.wait_for_accepted(1, WAIT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(standin.accepted().len(), 1);
    assert_eq!(standin.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_and_doubles_nothing() {
    let standin = Standin::start();
    // A slow Greenflash, so the replica dies holding leases on events in flight.
    standin.delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let Some(setup) = setup(&standin, dir.path()).await else {
        return;
    };
    let a = setup.start();
    let b = setup.start();
    let total = 1000;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for worker in 0..6 {
        let urls = [a.url.clone(), b.url.clone()];
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (worker..total).step_by(6) {
                let id = format!("evt_replica_{i}");
                if send(&client, &urls[i % 2], &invoice_paid(&id))
                    .await
                    .is_some()
                {
                    acked.lock().unwrap().insert(id);
                }
            }
        }));
    }
    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "no load got through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    for s in senders {
        s.await.unwrap();
    }
    // The provider retries what was not acknowledged, at the surviving replica.
    standin.delay(Duration::ZERO);
    let client = reqwest::Client::new();
    let before: HashSet<String> = acked.lock().unwrap().clone();
    for i in 0..total {
        let id = format!("evt_replica_{i}");
        if !before.contains(&id) {
            assert!(
                send(&client, &b.url, &invoice_paid(&id)).await.is_some(),
                "{id}"
            );
        }
    }
    let events = standin.wait_for_accepted(total, WAIT);
    let mut per_event: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &events {
        per_event
            .entry(event_id_of(e))
            .or_default()
            .insert(e["insertId"].as_str().unwrap().to_string());
    }
    assert_eq!(
        per_event.len(),
        total,
        "every acknowledged webhook delivered"
    );
    assert!(
        per_event.values().all(|ids| ids.len() == 1),
        "no event under two insertIds"
    );
    assert_eq!(events.len(), total, "none counted twice");
    drop(b);
}
