//! Signature schemes through the running binary: a valid request is accepted and delivered, a
//! wrong one is refused with its reason, and `/metrics` counts both per source and reason.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::bridge::{Bridge, Setup};
use support::sign::{self, unix_now};
use support::standin::Standin;
use support::{fixture, repo_path};

const WAIT: Duration = Duration::from_secs(20);
const PADDLE: &str = "pdl_ntfset_01hv_e2e_secret";
const HUBSPOT: &str = "hubspot-client-secret-e2e";
const SHOPIFY: &str = "shpss_e2e_secret";
const CHARGEBEE: &str = "chargebee:s3cr:et";
const GITHUB: &str = "github-e2e-secret";
const STANDARD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const GITHUB_TOML: &str = r#"[source]
name = "github"
verify = { scheme = "github", secrets_env = "GITHUB_WEBHOOK_SECRET" }
event_id = { header = "X-GitHub-Delivery" }
event_type = { header = "X-GitHub-Event" }

[[rules]]
name = "starred"
on = "star"
when = [{ path = "$.action", equals = "created" }]
event_type = "repo_starred"
value = "1"
value_type = "numeric"
external_user_id = "$.sender.login"
"#;

const STANDARD_TOML: &str = r#"[source]
name = "standard"
verify = { scheme = "standard-webhooks", secrets_env = "STANDARD_WEBHOOK_SECRET" }
event_id = { header = "webhook-id" }
event_type = "$.type"

[[rules]]
name = "paid"
on = "invoice.paid"
event_type = "invoice_paid"
value = { money = "$.amount", currency = "$.currency" }
value_type = "currency"
"#;

fn mappings(dir: &Path) {
    for name in ["paddle", "hubspot", "shopify", "chargebee"] {
        std::fs::copy(
            repo_path(&format!("mappings/{name}.toml")),
            dir.join(format!("{name}.toml")),
        )
        .unwrap();
    }
    std::fs::write(dir.join("github.toml"), GITHUB_TOML).unwrap();
    std::fs::write(dir.join("standard.toml"), STANDARD_TOML).unwrap();
}

fn start(standin: &Standin, dir: &Path) -> Bridge {
    let maps = dir.join("mappings");
    std::fs::create_dir_all(&maps).unwrap();
    mappings(&maps);
    let mut setup = Setup::new(dir, standin);
    setup.mappings = maps;
    setup
        .env("PADDLE_WEBHOOK_SECRET", PADDLE)
        .env("HUBSPOT_CLIENT_SECRET", HUBSPOT)
        .env(
            "SHOPIFY_WEBHOOK_SECRET",
            &format!("old_shopify_secret,{SHOPIFY}"),
        )
        .env("CHARGEBEE_WEBHOOK_AUTH", CHARGEBEE)
        .env("GITHUB_WEBHOOK_SECRET", GITHUB)
        .env("STANDARD_WEBHOOK_SECRET", STANDARD)
        .start()
}

async fn post(url: &str, body: &[u8], headers: &[(String, String)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn with(mut headers: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    headers
}

#[tokio::test]
async fn each_scheme_accepts_its_provider_and_refuses_a_forgery() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(&standin, dir.path());
    let now = unix_now();

    // Paddle Billing
    let body = fixture("paddle/transaction.completed.json");
    let (status, reply) = post(
        &bridge.webhook_url("paddle"),
        &body,
        &sign::paddle(PADDLE, now, &body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = post(
        &bridge.webhook_url("paddle"),
        &body,
        &sign::paddle("pdl_wrong", now, &body),
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("no_matching_signature"))
    );

    // HubSpot v3 signs the URL configured in the mapping, not the one the test connects to.
    let body = fixture("hubspot/batch_contact.creation_deal.propertyChange.json");
    let url = "https://hooks.example.com/webhooks/hubspot";
    let (status, reply) = post(
        &bridge.webhook_url("hubspot"),
        &body,
        &sign::hubspot_v3(HUBSPOT, url, &body, now * 1000),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["events"].as_array().unwrap().len(),
        2,
        "the batch is split into its events"
    );
    let stale = sign::hubspot_v3(HUBSPOT, url, &body, (now - 3600) * 1000);
    let (status, reply) = post(&bridge.webhook_url("hubspot"), &body, &stale).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("timestamp_outside_tolerance"))
    );

    // Shopify, signed with the second of two configured secrets (rotation).
    let body = fixture("shopify/orders_create.json");
    let ids = [
        ("X-Shopify-Topic", "orders/create"),
        ("X-Shopify-Webhook-Id", "b54557e4-e2e"),
        ("X-Shopify-Shop-Domain", "quillpad.myshopify.com"),
    ];
    let (status, reply) = post(
        &bridge.webhook_url("shopify"),
        &body,
        &with(sign::shopify(SHOPIFY, &body), &ids),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = post(&bridge.webhook_url("shopify"), &body, &with(vec![], &ids)).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("missing_signature"))
    );

    // Chargebee: HTTP Basic.
    let body = fixture("chargebee/payment_succeeded.json");
    let (status, reply) = post(
        &bridge.webhook_url("chargebee"),
        &body,
        &sign::basic(CHARGEBEE),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = post(
        &bridge.webhook_url("chargebee"),
        &body,
        &sign::basic("chargebee:guess"),
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("no_matching_signature"))
    );

    // GitHub: identity and type from headers.
    let body = br#"{"action":"created","sender":{"login":"octocat"}}"#;
    let gh = [
        ("X-GitHub-Event", "star"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    let (status, reply) = post(
        &bridge.webhook_url("github"),
        body,
        &with(sign::github(GITHUB, body), &gh),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let tampered = br#"{"action":"created","sender":{"login":"mallory"}}"#;
    let (status, _) = post(
        &bridge.webhook_url("github"),
        tampered,
        &with(sign::github(GITHUB, body), &gh),
    )
    .await;
    assert_eq!(status, 401);

    // Standard Webhooks.
    let body = br#"{"type":"invoice.paid","amount":1999,"currency":"eur"}"#;
    let (status, reply) = post(
        &bridge.webhook_url("standard"),
        body,
        &sign::standard_webhooks(STANDARD, "msg_e2e_1", now, body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = post(
        &bridge.webhook_url("standard"),
        body,
        &sign::standard_webhooks(STANDARD, "msg_e2e_2", now + 3600, body),
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (401, Some("timestamp_outside_tolerance"))
    );

    let events = standin.wait_for_accepted(7, WAIT);
    let types: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    for t in [
        "invoice_paid",
        "signup_completed",
        "deal_won",
        "order_placed",
        "repo_starred",
    ] {
        assert!(types.contains(t), "{t} missing from {types:?}");
    }
    let euro = events
        .iter()
        .find(|e| e["value"] == "19.99")
        .expect("standard webhooks event");
    assert_eq!(
        euro["properties"],
        Value::Null,
        "no properties configured, none sent"
    );

    // Metrics count refusals per source and reason, and which secret matched.
    let metrics = reqwest::get(format!("{}/metrics", bridge.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |metric: &str, source: &str, label: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(metric) && l.contains(source) && l.contains(label))
    };
    let received = "bridge_webhooks_received_total";
    assert!(
        counted(received, "paddle", "no_matching_signature"),
        "{metrics}"
    );
    assert!(
        counted(received, "hubspot", "timestamp_outside_tolerance"),
        "{metrics}"
    );
    assert!(
        counted(
            "bridge_signature_secret_index_total",
            "shopify",
            r#"index="1""#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn send_signs_like_the_provider_and_posts_to_a_running_bridge() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let bridge = start(&standin, dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_greenflash-bridge"))
        .args([
            "send",
            "--source",
            "paddle",
            "--to",
            &bridge.url,
            "--mappings",
        ])
        .arg(dir.path().join("mappings"))
        .arg(repo_path("tests/fixtures/paddle/subscription.created.json"))
        .env("PADDLE_WEBHOOK_SECRET", PADDLE)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("200 OK"), "{stdout}");
    let events = standin.wait_for_accepted(1, WAIT);
    assert_eq!(events[0]["eventType"], "subscription_started");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_greenflash-bridge"))
        .args([
            "send",
            "--source",
            "paddle",
            "--to",
            &bridge.url,
            "--mappings",
        ])
        .arg(dir.path().join("mappings"))
        .arg(repo_path(
            "tests/fixtures/paddle/subscription.canceled.json",
        ))
        .env("PADDLE_WEBHOOK_SECRET", "pdl_not_the_one")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).starts_with("401"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
}
