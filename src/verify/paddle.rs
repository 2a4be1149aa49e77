//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>…]`, HMAC-SHA256 over
//! `"{ts}:{body}"` (a colon) keyed with the `pdl_ntfset_…` secret as given. Every `h1` is tried
//! (Paddle's Node SDK keeps only the last one; we do not copy that).

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Secret, first_match};

const HEADER: &str = "paddle-signature";

pub(super) fn verify(ctx: &Context<'_>) -> Result<Option<usize>, Rejection> {
    let header = ctx
        .request
        .headers
        .get_str(HEADER)
        .ok_or(Rejection::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(';') {
        match part.trim().split_once('=') {
            Some(("ts", v)) => {
                timestamp = Some((
                    v,
                    v.parse::<i64>()
                        .map_err(|_| Rejection::MalformedSignature)?,
                ))
            }
            Some(("h1", v)) => {
                // A junk h1 next to a valid one must not spoil it (the SDK test sends "dummy").
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            Some(_) => {}
            None => return Err(Rejection::MalformedSignature),
        }
    }
    let (ts_text, timestamp) = timestamp.ok_or(Rejection::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    let parts: [&[u8]; 3] = [ts_text.as_bytes(), b":", ctx.request.body];
    first_match(
        ctx.secrets,
        &signatures,
        Some(timestamp),
        ctx.window,
        |secret, sig| mac::verify(Algorithm::Sha256, secret.expose(), &parts, sig),
    )
}

pub(super) fn sign(body: &[u8], secret: &Secret, now: i64) -> Vec<(String, String)> {
    let t = now.to_string();
    let sig = mac::compute(
        Algorithm::Sha256,
        secret.expose(),
        &[t.as_bytes(), b":", body],
    );
    vec![(
        "Paddle-Signature".to_string(),
        format!("ts={t};h1={}", hex::encode(sig)),
    )]
}
