//! Standard Webhooks and Svix: `{prefix}-id`, `{prefix}-timestamp`, and `{prefix}-signature`
//! holding a space-separated list of `v1,<base64>`; HMAC-SHA256 over `"{id}.{timestamp}.{body}"`
//! keyed with the base64 after `whsec_`. Other versions (`v1a` = ed25519) are skipped.

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Secret, base64_decode, base64_encode, first_match};

#[derive(Debug, Clone, Copy)]
pub(super) struct Headers {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
    /// Svix's library also accepts the standard header names.
    fallback: Option<&'static Headers>,
}

pub(super) const WEBHOOK: Headers = Headers {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
    fallback: None,
};
pub(super) const SVIX: Headers = Headers {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
    fallback: Some(&WEBHOOK),
};

pub(super) fn verify(ctx: &Context<'_>, names: Headers) -> Result<Option<usize>, Rejection> {
    let h = ctx.request.headers;
    let names = match (h.get(names.signature), names.fallback) {
        (None, Some(fallback)) if h.get(fallback.signature).is_some() => *fallback,
        _ => names,
    };
    let signature = h
        .get_str(names.signature)
        .ok_or(Rejection::MissingSignature)?;
    let id = h.get_str(names.id).ok_or(Rejection::MalformedSignature)?;
    let ts_text = h
        .get_str(names.timestamp)
        .ok_or(Rejection::MalformedSignature)?;
    let timestamp: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| Rejection::MalformedSignature)?;
    let candidates: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|item| item.strip_prefix("v1,"))
        .filter_map(base64_decode)
        .collect();
    if candidates.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    let parts: [&[u8]; 5] = [
        id.as_bytes(),
        b".",
        ts_text.as_bytes(),
        b".",
        ctx.request.body,
    ];
    first_match(
        ctx.secrets,
        &candidates,
        Some(timestamp),
        ctx.window,
        |secret, sig| mac::verify(Algorithm::Sha256, secret.expose(), &parts, sig),
    )
}

pub(super) fn sign(
    names: Headers,
    body: &[u8],
    secret: &Secret,
    now: i64,
) -> Vec<(String, String)> {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let t = now.to_string();
    let sig = mac::compute(
        Algorithm::Sha256,
        secret.expose(),
        &[id.as_bytes(), b".", t.as_bytes(), b".", body],
    );
    vec![
        (names.id.to_string(), id),
        (names.timestamp.to_string(), t),
        (
            names.signature.to_string(),
            format!("v1,{}", base64_encode(&sig)),
        ),
    ]
}
