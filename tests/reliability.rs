//! Nothing lost, nothing doubled: outages, throttling, refused keys, dead letters, crashes,
//! shutdown, replay and retention — against the real binary and a stand-in that injects faults.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bridge::{Bridge, Setup};
use support::standin::{Scripted, Standin};
use support::{event_id_of, invoice_paid, post_stripe, repo_path};

const WAIT: Duration = Duration::from_secs(30);

async fn send(client: &reqwest::Client, bridge_url: &str, body: &[u8]) -> Option<u16> {
    let response = post_stripe(client, bridge_url, body).await.ok()?;
    Some(response.status().as_u16())
}

/// Runs a CLI command against the setup's store: (success, stdout + stderr, stdout).
fn cli_out(setup: &Setup, args: &[&str]) -> (bool, String, String) {
    let out = setup
        .command()
        .args(args)
        .arg("--store")
        .arg(setup.store_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, stdout)
}

fn cli(setup: &Setup, args: &[&str]) -> (bool, String) {
    let (ok, text, _) = cli_out(setup, args);
    (ok, text)
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_20_second_outage_loses_nothing() {
    let standin = Standin::start();
    standin.fail_all(503);
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            send(
                &client,
                &bridge.url,
                &invoice_paid(&format!("evt_outage_{sent}"))
            )
            .await,
            Some(200)
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(standin.accepted().is_empty());
    standin.recover();
    let events = standin.wait_for_accepted(sent, WAIT);
    let ids: HashSet<String> = events.iter().map(event_id_of).collect();
    assert_eq!(ids.len(), sent, "every acknowledged webhook delivered");
    assert_eq!(events.len(), sent, "none twice");
}

#[tokio::test]
async fn events_beyond_what_delivery_holds_in_memory_are_delivered_once_without_waiting() {
    // One worker takes eight events from intake in memory; a slow Greenflash makes the other
    // fifty-two overflow into the store, where delivery finds them due. An overflowing event
    // stored as if handed over would wait out its 60 s lease, past this test's deadline.
    let standin = Standin::start();
    standin.delay(Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .env("BRIDGE_DELIVERY_CONCURRENCY", "1")
        .start();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for task in 0..6 {
        let (client, url) = (client.clone(), bridge.url.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..10 {
                let body = invoice_paid(&format!("evt_overflow_{task}_{i}"));
                assert_eq!(send(&client, &url, &body).await, Some(200));
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let events = standin.wait_for_accepted(60, WAIT);
    let ids: HashSet<String> = events.iter().map(event_id_of).collect();
    assert_eq!(ids.len(), 60, "every acknowledged webhook delivered");
    assert_eq!(standin.duplicates(), 0, "none sent twice");
}

#[tokio::test]
async fn retry_after_is_honoured_and_throttling_does_not_use_up_attempts() {
    let standin = Standin::start();
    standin.script([Scripted {
        status: 429,
        headers: vec![("Retry-After".into(), "4".into())],
    }]);
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin);
    let bridge = setup.start();
    let client = reqwest::Client::new();
    assert_eq!(
        send(&client, &bridge.url, &invoice_paid("evt_throttled")).await,
        Some(200)
    );
    standin.wait_for_accepted(1, WAIT);
    let times = standin.request_times();
    assert_eq!(times.len(), 2, "one 429, then the delivery");
    let waited = times[1] - times[0];
    assert!(
        waited >= Duration::from_millis(3900),
        "next attempt after {waited:?}, Retry-After said 4 s"
    );
    // The stand-in has the event before the bridge records the answer.
    let mut shown = String::new();
    wait_until("the delivery recorded", || {
        shown = cli(&setup, &["dlq", "show", "1"]).1;
        shown.contains("\"state\": \"delivered\"")
    });
    assert!(
        shown.contains("\"attempts\": 1"),
        "only the delivery counts as an attempt:\n{shown}"
    );
}

#[tokio::test]
async fn a_refused_key_pauses_delivery_keeps_events_and_resumes_by_itself() {
    let standin = Standin::start();
    standin.fail_all(401);
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .env("BRIDGE_AUTH_PROBE_INTERVAL", "300ms")
        .start();
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            send(&client, &bridge.url, &invoice_paid(&format!("evt_key_{i}"))).await,
            Some(200)
        );
    }
    let readyz = format!("{}/readyz", bridge.url);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client.get(&readyz).send().await.unwrap();
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            assert!(body["problems"].to_string().contains("API key"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never reported the refused key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bridge.log().contains("refuses our API key"));
    // While paused, only a probe at a time goes out.
    let during = standin.request_count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        standin.request_count() <= during + 8,
        "paused delivery keeps probing gently"
    );

    standin.recover();
    let events = standin.wait_for_accepted(5, WAIT);
    assert_eq!(events.len(), 5);
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_listed_and_retried() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    dead_letter_flow(&standin, Setup::new(dir.path(), &standin)).await;
}

#[tokio::test]
async fn dead_letters_work_the_same_on_postgresql() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = support::postgres::fresh_database().await else {
        return;
    };
    let mut setup = Setup::new(dir.path(), &standin);
    setup.store_url = Some(url);
    dead_letter_flow(&standin, setup).await;
}

async fn dead_letter_flow(standin: &Standin, setup: Setup) {
    standin.script([Scripted {
        status: 400,
        headers: vec![],
    }]);
    let bridge = setup.start();
    let ready = reqwest::get(format!("{}/readyz", bridge.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the store answers");
    let client = reqwest::Client::new();
    assert_eq!(
        send(&client, &bridge.url, &invoice_paid("evt_dead_1")).await,
        Some(200)
    );

    let mut listed = String::new();
    wait_until("the dead letter", || {
        listed = cli_out(&setup, &["dlq", "list", "--json"]).2;
        listed.contains("evt_dead_1")
    });
    let dead: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(dead[0]["last_status"], 400);
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("scripted"),
        "Greenflash's answer is kept"
    );
    let (_, table) = cli(&setup, &["dlq", "list"]);
    assert!(
        table.contains("evt_dead_1") && table.contains("400"),
        "{table}"
    );
    assert!(standin.accepted().is_empty());

    let id = dead[0]["id"].as_i64().unwrap().to_string();
    let (ok, out) = cli(&setup, &["dlq", "retry", &id]);
    assert!(ok && out.contains("1 dead letter queued again"), "{out}");
    let events = standin.wait_for_accepted(1, WAIT);
    assert_eq!(event_id_of(&events[0]), "evt_dead_1");
    assert_eq!(cli(&setup, &["dlq", "list"]).1.trim(), "no dead letters");
    drop(bridge);
}

// Multi-threaded: the senders keep running while this thread waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_and_doubles_nothing() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin);
    let bridge = setup.start();
    let total = 2000;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let url = bridge.url.clone();
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in (worker..total).step_by(8) {
                let id = format!("evt_load_{i}");
                if send(&client, &url, &invoice_paid(&id)).await == Some(200) {
                    acked.lock().unwrap().insert(id);
                }
            }
        }));
    }
    wait_until("some acknowledgements", || {
        acked.lock().unwrap().len() >= 120
    });
    bridge.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked_before_crash = acked.lock().unwrap().clone();
    assert!(
        acked_before_crash.len() < total,
        "the crash interrupted the load"
    );

    // The provider retries what was not acknowledged, and redelivers the rest as well (some
    // were stored though their answer was lost); the restarted bridge takes each once.
    let restarted = setup.start();
    let client = reqwest::Client::new();
    for i in 0..total {
        let id = format!("evt_load_{i}");
        let response = post_stripe(&client, &restarted.url, &invoice_paid(&id))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{id}");
        let answer: Value = response.json().await.unwrap();
        if acked_before_crash.contains(&id) {
            assert_eq!(
                answer["status"], "duplicate",
                "{id} was acknowledged before the crash"
            );
        }
    }
    let events = standin.wait_for_accepted(total, WAIT);
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *per_event.entry(event_id_of(e)).or_default() += 1;
    }
    for id in &acked_before_crash {
        assert_eq!(
            per_event.get(id),
            Some(&1),
            "{id} acknowledged before the crash, delivered once"
        );
    }
    assert_eq!(per_event.len(), total);
    assert!(
        per_event.values().all(|n| *n == 1),
        "no event under two insertIds"
    );
}

#[tokio::test]
async fn sigterm_drains_and_nothing_in_flight_is_lost() {
    let standin = Standin::start();
    standin.delay(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin);
    let bridge = setup.start();
    let client = reqwest::Client::new();
    for i in 0..10 {
        assert_eq!(
            send(
                &client,
                &bridge.url,
                &invoice_paid(&format!("evt_drain_{i}"))
            )
            .await,
            Some(200)
        );
    }
    standin.wait_for_requests(1, WAIT);
    let url = bridge.url.clone();
    let status = bridge.terminate();
    assert!(
        status.success(),
        "exit 0 within the grace period: {status:?}"
    );
    assert!(
        send(&client, &url, &invoice_paid("evt_after_stop"))
            .await
            .is_none(),
        "stopped accepting"
    );

    // Whatever did not finish went back to the queue; the next start delivers it.
    standin.delay(Duration::ZERO);
    let _restarted = setup.start();
    let events = standin.wait_for_accepted(10, WAIT);
    let ids: HashSet<String> = events.iter().map(event_id_of).collect();
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn replay_backfills_after_a_mapping_fix() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("mappings");
    std::fs::create_dir_all(&maps).unwrap();
    let good = std::fs::read_to_string(repo_path("mappings/stripe.toml")).unwrap();
    // A typo in a path: the amount is absent, so the rule fails.
    let broken = good.replacen(
        "value = { money = \"$.data.object.amount_paid\"",
        "value = { money = \"$.data.object.amount_payd\"",
        1,
    );
    assert_ne!(broken, good);
    std::fs::write(maps.join("stripe.toml"), &broken).unwrap();
    let mut setup = Setup::new(dir.path(), &standin).env("BRIDGE_WATCH_MAPPINGS", "false");
    setup.mappings = maps.clone();
    let bridge = setup.start();
    let client = reqwest::Client::new();
    let response = post_stripe(&client, &bridge.url, &invoice_paid("evt_fixme"))
        .await
        .unwrap();
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(
        receipt["events"][0]["outcome"], "mapping_failed",
        "{receipt}"
    );

    std::fs::write(maps.join("stripe.toml"), &good).unwrap();
    let args = [
        "replay",
        "--source",
        "stripe",
        "--mappings",
        maps.to_str().unwrap(),
        "--status",
        "mapping_failed",
    ];
    let (ok, preview) = cli(&setup, &[&args[..], &["--dry-run"]].concat());
    assert!(ok, "{preview}");
    assert!(
        preview.contains("event evt_fixme (mapping_failed -> mapped)"),
        "{preview}"
    );
    assert!(preview.contains("rule invoice_paid: new"), "{preview}");
    assert!(standin.accepted().is_empty(), "a dry run queues nothing");

    let (ok, out) = cli(&setup, &args);
    assert!(ok && out.contains("queued 1 Greenflash events"), "{out}");
    let events = standin.wait_for_accepted(1, WAIT);
    assert_eq!(events[0]["value"], "20.00");

    // Changing a delivered event re-emits it under a new insertId; replaying again is a no-op.
    std::fs::write(
        maps.join("stripe.toml"),
        good.replacen("properties.billing_reason", "properties.reason", 1),
    )
    .unwrap();
    let all = [
        "replay",
        "--source",
        "stripe",
        "--mappings",
        maps.to_str().unwrap(),
    ];
    let (_, preview) = cli(&setup, &[&all[..], &["--dry-run"]].concat());
    assert!(preview.contains("rule invoice_paid: changed"), "{preview}");
    assert!(
        preview.contains(".properties.billing_reason: - \"subscription_create\""),
        "{preview}"
    );
    assert!(cli(&setup, &all).1.contains("queued 1 Greenflash events"));
    let events = standin.wait_for_accepted(2, WAIT);
    assert_ne!(events[0]["insertId"], events[1]["insertId"]);
    assert!(
        events[1]["insertId"]
            .as_str()
            .unwrap()
            .starts_with("stripe:evt_fixme:invoice_paid~")
    );
    assert!(
        cli(&setup, &all).1.contains("queued 0 Greenflash events"),
        "idempotent"
    );
    drop(bridge);
}

#[tokio::test]
async fn retention_prunes_what_is_done_and_keeps_what_is_not() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin)
        .env("BRIDGE_RETENTION", "1s")
        .env("BRIDGE_PRUNE_INTERVAL", "200ms");
    let bridge = setup.start();
    let client = reqwest::Client::new();
    assert_eq!(
        send(&client, &bridge.url, &invoice_paid("evt_old")).await,
        Some(200)
    );
    standin.wait_for_accepted(1, WAIT);
    // One more that cannot be delivered: it must survive pruning.
    standin.fail_all(503);
    assert_eq!(
        send(&client, &bridge.url, &invoice_paid("evt_stuck")).await,
        Some(200)
    );

    let db = rusqlite::Connection::open(&setup.store).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    wait_until("pruning", || {
        count("SELECT COUNT(*) FROM provider_events WHERE event_id = 'evt_old'") == 0
    });
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE event_id = 'evt_old'"),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE event_id = 'evt_stuck' AND state = 'pending'"),
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM provider_events WHERE event_id = 'evt_stuck'"),
        1
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM webhooks"),
        1,
        "only the stuck event's raw body is left"
    );
    drop(bridge);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_works_with_it() {
    let standin = Standin::start();
    standin.script([Scripted {
        status: 422,
        headers: vec![],
    }]);
    let dir = tempfile::tempdir().unwrap();
    let plain: Bridge = Setup::new(dir.path(), &standin).start();
    let client = reqwest::Client::new();
    let disabled = client
        .get(format!("{}/admin/dlq", plain.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        disabled.status(),
        404,
        "disabled without BRIDGE_ADMIN_TOKEN"
    );
    drop(plain);

    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .env("BRIDGE_ADMIN_TOKEN", "admin-e2e-token")
        .start();
    assert_eq!(
        send(&client, &bridge.url, &invoice_paid("evt_admin")).await,
        Some(200)
    );
    let dlq = format!("{}/admin/dlq", bridge.url);
    assert_eq!(client.get(&dlq).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&dlq)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead: Value = client
            .get(&dlq)
            .bearer_auth("admin-e2e-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if dead.as_array().is_some_and(|a| !a.is_empty()) {
            break dead;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead[0]["last_status"], 422);
    let retried: Value = client
        .post(format!("{}/admin/dlq/retry", bridge.url))
        .bearer_auth("admin-e2e-token")
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retried["retried"], 1);
    standin.wait_for_accepted(1, WAIT);
    let reload = client
        .post(format!("{}/admin/reload", bridge.url))
        .bearer_auth("admin-e2e-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
}
