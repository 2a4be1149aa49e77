//! Signatures computed the way the providers' own libraries compute them, written out here
//! independently of `src/verify` so the tests check the bridge against the scheme, not against
//! itself.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// stripe-node `generateTestHeaderString`: `t=<ts>,v1=hex(HMAC-SHA256(secret, "<ts>.<body>"))`.
pub fn stripe_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

use base64::Engine;

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard Webhooks spec: key = base64-decode(secret without `whsec_`), message
/// `"{id}.{timestamp}.{body}"`, header `v1,<base64>`.
pub fn standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let sig = hmac256(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{}", b64(&sig))),
    ]
}

/// GitHub docs: `X-Hub-Signature-256: sha256=hex(HMAC-SHA256(secret, body))`.
pub fn github(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![(
        "X-Hub-Signature-256".into(),
        format!(
            "sha256={}",
            hex::encode(hmac256(secret.as_bytes(), &[body]))
        ),
    )]
}

/// shopify-api `getHmac`: base64 HMAC-SHA256 of the body.
pub fn shopify(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![(
        "X-Shopify-Hmac-Sha256".into(),
        b64(&hmac256(secret.as_bytes(), &[body])),
    )]
}

/// Paddle Billing: `ts=<t>;h1=hex(HMAC-SHA256(secret, "<t>:<body>"))`.
pub fn paddle(secret: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let t = timestamp.to_string();
    let sig = hmac256(secret.as_bytes(), &[t.as_bytes(), b":", body]);
    vec![(
        "Paddle-Signature".into(),
        format!("ts={t};h1={}", hex::encode(sig)),
    )]
}

/// HubSpot v3: base64 HMAC-SHA256(secret, method + uri + body + timestamp_ms).
pub fn hubspot_v3(
    secret: &str,
    url: &str,
    body: &[u8],
    timestamp_ms: i64,
) -> Vec<(String, String)> {
    let t = timestamp_ms.to_string();
    let sig = hmac256(
        secret.as_bytes(),
        &[b"POST", url.as_bytes(), body, t.as_bytes()],
    );
    vec![
        ("X-HubSpot-Signature-v3".into(), b64(&sig)),
        ("X-HubSpot-Request-Timestamp".into(), t),
    ]
}

/// HTTP Basic: `Authorization: Basic base64(user:password)`.
pub fn basic(credentials: &str) -> Vec<(String, String)> {
    vec![(
        "Authorization".into(),
        format!("Basic {}", b64(credentials.as_bytes())),
    )]
}
