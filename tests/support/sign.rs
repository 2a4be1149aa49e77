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
