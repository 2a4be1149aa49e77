//! Shared test harness: the Greenflash stand-in, the real bridge binary, provider signing.

#![allow(dead_code)]

pub mod bridge;
pub mod postgres;
pub mod sign;
pub mod standin;

pub const PRODUCT_ID: &str = "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b";
pub const STRIPE_SECRET: &str = "whsec_e2e_0f9a8b7c6d5e4f3a";

/// The project's own files, so tests do not depend on the working directory.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn fixture(relative: &str) -> Vec<u8> {
    let path = repo_path(&format!("tests/fixtures/{relative}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Stripe's `invoice.paid` fixture with another event id, for tests that send many events.
pub fn invoice_paid(id: &str) -> Vec<u8> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("stripe/invoice.paid.json")).unwrap();
    doc["id"] = serde_json::json!(id);
    serde_json::to_vec(&doc).unwrap()
}

/// POSTs `body` to the bridge at `base` as Stripe would: to `/webhooks/stripe`, signed now with
/// `STRIPE_SECRET`.
pub async fn post_stripe(
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/webhooks/stripe"))
        .header(
            "Stripe-Signature",
            sign::stripe_header(STRIPE_SECRET, sign::unix_now(), body),
        )
        .body(body.to_vec())
        .send()
        .await
}

/// The provider event id inside a delivered event's insertId (`<source>:<id>:<rule>[~hash]`).
pub fn event_id_of(event: &serde_json::Value) -> String {
    event["insertId"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string()
}
