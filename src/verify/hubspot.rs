//! HubSpot's older signatures (v3 is an HMAC preset): `X-HubSpot-Signature` holds the hex
//! SHA-256 — a plain hash, not an HMAC — of `client_secret + body` (v1, webhook
//! subscriptions) or `client_secret + method + uri + body` (v2, workflow actions and CRM cards).
//! No timestamp.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Context, Rejection, Secret, first_match};

const HEADER: &str = "x-hubspot-signature";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

fn digest(version: Version, secret: &[u8], method: &str, url: &str, body: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(secret);
    if version == Version::V2 {
        hash.update(method.as_bytes());
        hash.update(url.as_bytes());
    }
    hash.update(body);
    hash.finalize().to_vec()
}

pub(super) fn verify(ctx: &Context<'_>, version: Version) -> Result<Option<usize>, Rejection> {
    let header = ctx
        .request
        .headers
        .get_str(HEADER)
        .ok_or(Rejection::MissingSignature)?;
    let given = hex::decode(header.trim()).map_err(|_| Rejection::MalformedSignature)?;
    let url = ctx.url.as_deref().unwrap_or("");
    first_match(ctx.secrets, &[given], None, ctx.window, |secret, sig| {
        let expected = digest(
            version,
            secret.expose(),
            ctx.request.method,
            url,
            ctx.request.body,
        );
        bool::from(expected.as_slice().ct_eq(sig))
    })
}

pub(super) fn sign(
    version: Version,
    method: &str,
    url: &str,
    body: &[u8],
    secret: &Secret,
) -> Vec<(String, String)> {
    let sig = hex::encode(digest(version, secret.expose(), method, url, body));
    let label = match version {
        Version::V1 => "v1",
        Version::V2 => "v2",
    };
    vec![
        ("X-HubSpot-Signature".to_string(), sig),
        ("X-HubSpot-Signature-Version".to_string(), label.to_string()),
    ]
}
