//! Shared credentials rather than signatures: HTTP Basic auth (Chargebee, Pipedrive; secret
//! `user:password`) and a token in a named header. Compared through digests in constant time.

use super::mac;
use super::{Context, Rejection, Secret, base64_decode, base64_encode, first_match};

pub(super) fn verify_basic(ctx: &Context<'_>) -> Result<Option<usize>, Rejection> {
    let header = ctx
        .request
        .headers
        .get_str("authorization")
        .ok_or(Rejection::MissingSignature)?;
    let encoded = header
        .strip_prefix("Basic ")
        .ok_or(Rejection::MalformedSignature)?;
    let credentials = base64_decode(encoded).ok_or(Rejection::MalformedSignature)?;
    if !credentials.contains(&b':') {
        return Err(Rejection::MalformedSignature);
    }
    first_match(
        ctx.secrets,
        &[credentials],
        None,
        ctx.window,
        |secret, given| mac::same_secret(secret.expose(), given),
    )
}

pub(super) fn sign_basic(secret: &Secret) -> Vec<(String, String)> {
    vec![(
        "Authorization".to_string(),
        format!("Basic {}", base64_encode(secret.expose())),
    )]
}

pub(super) fn verify_token(
    ctx: &Context<'_>,
    header: &str,
    prefix: Option<&str>,
) -> Result<Option<usize>, Rejection> {
    let value = ctx
        .request
        .headers
        .get(header)
        .ok_or(Rejection::MissingSignature)?;
    let token = match prefix {
        Some(p) => value
            .strip_prefix(p.as_bytes())
            .ok_or(Rejection::MalformedSignature)?,
        None => value,
    };
    first_match(
        ctx.secrets,
        &[token.to_vec()],
        None,
        ctx.window,
        |secret, given| mac::same_secret(secret.expose(), given),
    )
}

pub(super) fn sign_token(
    header: &str,
    prefix: Option<&str>,
    secret: &Secret,
) -> Vec<(String, String)> {
    let token = String::from_utf8_lossy(secret.expose());
    vec![(
        header.to_string(),
        format!("{}{token}", prefix.unwrap_or("")),
    )]
}
