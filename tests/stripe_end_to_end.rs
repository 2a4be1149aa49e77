//! The real binary on a random port, a temp SQLite store, and the Greenflash stand-in over
//! HTTP: what a Stripe account and Greenflash would see.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::bridge::Setup;
use support::sign::{stripe_header, unix_now};
use support::standin::Standin;
use support::{PRODUCT_ID, STRIPE_SECRET, fixture, invoice_paid};

const WAIT: Duration = Duration::from_secs(20);

async fn post(url: &str, body: &[u8], signature: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        request = request.header("Stripe-Signature", sig);
    }
    let response = request.send().await.expect("request reaches the bridge");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn post_signed(url: &str, body: &[u8]) -> (u16, Value) {
    let sig = stripe_header(STRIPE_SECRET, unix_now(), body);
    post(url, body, Some(&sig)).await
}

#[tokio::test]
async fn a_signed_stripe_webhook_is_stored_acknowledged_and_forwarded() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();

    let body = fixture("stripe/invoice.paid.json");
    let (status, receipt) = post_signed(&bridge.webhook_url("stripe"), &body).await;

    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["status"], "accepted");
    assert_eq!(receipt["events"][0]["id"], "evt_1T8yCILr4TnX2bKwbilvUUvw");
    assert_eq!(receipt["events"][0]["emitted"], 1);
    let events = standin.wait_for_accepted(1, WAIT);
    let event = &events[0];
    assert_eq!(event["eventType"], "invoice_paid");
    assert_eq!(event["value"], "20.00");
    assert_eq!(event["valueType"], "currency");
    assert_eq!(event["influence"], "positive");
    assert_eq!(event["productId"], PRODUCT_ID);
    assert_eq!(event["eventAt"], "2026-03-09T16:11:11Z");
    assert_eq!(event["externalUserId"], "usr_01JNP4W7G9QK3T8ZV2R6M5XHCD");
    assert_eq!(event["properties"]["currency"], "USD");
    assert!(
        event["insertId"]
            .as_str()
            .unwrap()
            .contains("evt_1T8yCILr4TnX2bKwbilvUUvw")
    );
    assert!(
        event.get("externalConversationId").is_none(),
        "absent fields are omitted, not null"
    );
}

/// Many webhooks in flight on the same two worker threads: each one's log line carries its own
/// request id and no other, so an operator can follow one request through the log.
#[tokio::test]
async fn concurrent_webhooks_each_log_under_their_own_request_id() {
    const SENT: usize = 64;
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let url = bridge.webhook_url("stripe");

    // A client per webhook: a connection each, all in flight at once.
    let sends = (0..SENT).map(|i| {
        let body = invoice_paid(&format!("evt_concurrent_{i}"));
        let url = url.clone();
        async move { post_signed(&url, &body).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );

    let log = bridge.wait_for_log(WAIT, |log| log.matches("Webhook accepted.").count() >= SENT);
    let accepted: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Webhook accepted."))
        .collect();
    for line in &accepted {
        assert_eq!(line.matches("request_id").count(), 1, "{line}");
    }
    let ids: std::collections::HashSet<&str> = accepted
        .iter()
        .filter_map(|line| line.split("request_id=").nth(1))
        .filter_map(|rest| rest.split([' ', '}']).next())
        .collect();
    assert_eq!(ids.len(), SENT, "one request id per webhook: {accepted:#?}");
}

#[tokio::test]
async fn a_redelivered_event_is_acknowledged_as_duplicate_and_forwarded_once() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let url = bridge.webhook_url("stripe");
    let body = fixture("stripe/charge.refunded.json");

    let (first, _) = post_signed(&url, &body).await;
    let (second, receipt) = post_signed(&url, &body).await;
    assert_eq!((first, second), (200, 200));
    assert_eq!(receipt["status"], "duplicate");
    assert_eq!(receipt["events"][0]["duplicate"], true);

    // A later, different event is delivered after the redelivery had every chance to be.
    let (third, _) = post_signed(&url, &fixture("stripe/customer.created.json")).await;
    assert_eq!(third, 200);
    let events = standin.wait_for_accepted(2, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(standin.accepted().len(), 2, "{events:?}");
    assert_eq!(
        standin.duplicates(),
        0,
        "the redelivery was never sent to Greenflash"
    );
}

#[tokio::test]
async fn refusals_get_the_documented_status_and_reason() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .arg("--max-body")
        .arg("8KiB")
        .start();
    let url = bridge.webhook_url("stripe");
    let body = fixture("stripe/invoice.paid.json");
    let now = unix_now();

    let (status, reply) = post(&url, &body, None).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("missing_signature"))
    );

    let wrong = stripe_header("whsec_not_the_secret", now, &body);
    let (status, reply) = post(&url, &body, Some(&wrong)).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("no_matching_signature"))
    );
    assert!(!reply.to_string().contains(STRIPE_SECRET));

    let stale = stripe_header(STRIPE_SECRET, now - 3600, &body);
    let (status, reply) = post(&url, &body, Some(&stale)).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("timestamp_outside_tolerance"))
    );

    let future = stripe_header(STRIPE_SECRET, now + 3600, &body);
    let (status, _) = post(&url, &body, Some(&future)).await;
    assert_eq!(status, 401);

    let (status, reply) = post(&url, &body, Some("t=now,v1=xyz")).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("malformed_signature"))
    );

    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'2').unwrap();
    tampered[at] = b'9';
    let sig = stripe_header(STRIPE_SECRET, now, &body);
    let (status, _) = post(&url, &tampered, Some(&sig)).await;
    assert_eq!(status, 401, "a signature over other bytes is refused");

    let (status, reply) = post_signed(&url, b"{not json").await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_json"))
    );

    let (status, reply) = post_signed(&url, br#"{"type":"invoice.paid","data":{}}"#).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("unidentified_event"))
    );

    let (status, reply) = post_signed(&bridge.webhook_url("nosuch"), &body).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (404, Some("unknown_source"))
    );

    let big = vec![b' '; 9 * 1024];
    let (status, reply) = post_signed(&url, &big).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    // None of the refused requests produced an event; a good one still goes through.
    let (status, _) = post_signed(&url, &body).await;
    assert_eq!(status, 200);
    standin.wait_for_accepted(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(standin.accepted().len(), 1);
    assert!(
        !bridge.log().contains(STRIPE_SECRET),
        "secrets never reach the log"
    );
}

#[tokio::test]
async fn an_event_nothing_maps_is_acknowledged_and_recorded_as_ignored() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let (status, receipt) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/payment_intent.succeeded.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(receipt["events"][0]["outcome"], "ignored");
    assert_eq!(receipt["events"][0]["emitted"], 0);
}

#[tokio::test]
async fn rotated_secrets_accept_signatures_from_either() {
    const NEW: &str = "whsec_new_1234";
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .env("STRIPE_WEBHOOK_SECRET", &format!("{NEW},{STRIPE_SECRET}"))
        .start();
    let url = bridge.webhook_url("stripe");
    let now = unix_now();

    let signed_by_old = invoice_paid("evt_rotation_old");
    let old = stripe_header(STRIPE_SECRET, now, &signed_by_old);
    assert_eq!(post(&url, &signed_by_old, Some(&old)).await.0, 200);

    let signed_by_new = invoice_paid("evt_rotation_new");
    let new = stripe_header(NEW, now, &signed_by_new);
    assert_eq!(post(&url, &signed_by_new, Some(&new)).await.0, 200);

    // During a roll Stripe sends one v1 per active secret in the same header.
    let signed_by_both = invoice_paid("evt_rotation_both");
    let v1 = |secret: &str| {
        stripe_header(secret, now, &signed_by_both)
            .split(',')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let both = format!("t={now},{},{}", v1("whsec_unrelated"), v1(STRIPE_SECRET));
    assert_eq!(post(&url, &signed_by_both, Some(&both)).await.0, 200);
    standin.wait_for_accepted(3, WAIT);
}

#[tokio::test]
async fn a_webhook_the_store_cannot_commit_gets_503_and_is_accepted_on_retry() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin);
    let bridge = setup.start();
    let url = bridge.webhook_url("stripe");
    let body = fixture("stripe/invoice.paid.json");

    // Another process holds the database's write lock longer than the bridge waits for it.
    let locker = rusqlite::Connection::open(&setup.store).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, reply) = post_signed(&url, &body).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (503, Some("store_unavailable"))
    );
    locker.execute_batch("ROLLBACK").unwrap();

    // Stripe retries; now it is stored and delivered exactly once.
    let (status, receipt) = post_signed(&url, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        receipt["status"], "accepted",
        "nothing of the failed attempt was half-written"
    );
    standin.wait_for_accepted(1, WAIT);
}

#[tokio::test]
async fn pending_events_survive_a_crash_and_are_delivered_after_restart() {
    let standin = Standin::start();
    standin.fail_all(503);
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin);
    let bridge = setup.start();
    let (status, _) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/invoice.paid.json"),
    )
    .await;
    assert_eq!(status, 200);
    standin.wait_for_requests(1, WAIT);
    bridge.kill9();

    standin.recover();
    let _restarted = setup.start();
    let events = standin.wait_for_accepted(1, WAIT);
    assert_eq!(events[0]["eventType"], "invoice_paid");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(standin.accepted().len(), 1);
}

#[tokio::test]
async fn greenflash_outages_are_retried_until_delivered() {
    let standin = Standin::start();
    standin.script((0..3).map(|_| support::standin::Scripted {
        status: 503,
        headers: vec![],
    }));
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let (status, _) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/customer.created.json"),
    )
    .await;
    assert_eq!(status, 200);
    let events = standin.wait_for_accepted(1, WAIT);
    assert_eq!(events[0]["eventType"], "signup_completed");
    assert!(
        standin.request_count() >= 4,
        "three refusals, then the delivery"
    );
    let insert_ids: std::collections::HashSet<String> = standin
        .accepted()
        .iter()
        .map(|e| e["insertId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(insert_ids.len(), 1);
}

#[tokio::test]
async fn serve_needs_an_api_key_unless_dry_run() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), &standin).without_env("GREENFLASH_API_KEY");
    let (code, log) = setup.start_failure();
    assert_ne!(code, Some(0));
    assert!(log.contains("GREENFLASH_API_KEY"), "{log}");

    let bridge = setup.arg("--dry-run").start();
    let (status, _) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/invoice.paid.json"),
    )
    .await;
    assert_eq!(status, 200);
    bridge.wait_for_log(WAIT, |log| log.contains("Dry run"));
    assert!(bridge.log().contains("invoice_paid"));
    assert_eq!(standin.request_count(), 0, "dry run sends nothing");
}

#[tokio::test]
async fn a_source_without_its_secret_is_not_served_and_says_which_variable() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin)
        .without_env("STRIPE_WEBHOOK_SECRET")
        .start();
    assert!(
        bridge.log().contains("STRIPE_WEBHOOK_SECRET"),
        "{}",
        bridge.log()
    );
    let (status, reply) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/invoice.paid.json"),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("STRIPE_WEBHOOK_SECRET"),
        "{reply}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = Setup::new(dir.path(), &standin).start();
    let (status, _) = post_signed(
        &bridge.webhook_url("stripe"),
        &fixture("stripe/invoice.paid.json"),
    )
    .await;
    assert_eq!(status, 200);
    standin.wait_for_accepted(1, WAIT);
    assert!(bridge.terminate().success());
}
