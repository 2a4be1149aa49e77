//! Keyed hashes shared by the schemes. Comparison is always `Mac::verify_slice`, which is
//! constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = new_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether `expected` is the HMAC-SHA256 of `parts`, compared in constant time.
pub fn verify_sha256(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let mut mac = new_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected).is_ok()
}

fn new_sha256(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key rather
    // than panic on a request path if that ever changed.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| {
        HmacSha256::new_from_slice(&[]).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
    })
}
