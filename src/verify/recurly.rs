//! Recurly: `recurly-signature: <timestamp_ms>,<hex>[,<hex>…]`, HMAC-SHA256 over
//! `"{timestamp_ms}.{body}"`. After a key is regenerated both keys sign for 24 h, so the header
//! carries two signatures.

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Secret, first_match};

const HEADER: &str = "recurly-signature";

pub(super) fn verify(ctx: &Context<'_>) -> Result<Option<usize>, Rejection> {
    let header = ctx
        .request
        .headers
        .get_str(HEADER)
        .ok_or(Rejection::MissingSignature)?;
    let mut items = header.split(',').map(str::trim);
    let ts_text = items.next().ok_or(Rejection::MalformedSignature)?;
    let ms: i64 = ts_text.parse().map_err(|_| Rejection::MalformedSignature)?;
    let signatures: Vec<Vec<u8>> = items.filter_map(|s| hex::decode(s).ok()).collect();
    if signatures.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    let parts: [&[u8]; 3] = [ts_text.as_bytes(), b".", ctx.request.body];
    first_match(
        ctx.secrets,
        &signatures,
        Some(ms.div_euclid(1000)),
        ctx.window,
        |secret, sig| mac::verify(Algorithm::Sha256, secret.expose(), &parts, sig),
    )
}

pub(super) fn sign(body: &[u8], secret: &Secret, now: i64) -> Vec<(String, String)> {
    let t = (now * 1000).to_string();
    let sig = mac::compute(
        Algorithm::Sha256,
        secret.expose(),
        &[t.as_bytes(), b".", body],
    );
    vec![(
        "recurly-signature".to_string(),
        format!("{t},{}", hex::encode(sig)),
    )]
}
