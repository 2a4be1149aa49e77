//! Twilio: `X-Twilio-Signature` = base64 HMAC-SHA1(auth token, URL + every POST parameter as
//! `name + value`, sorted by name). JSON bodies instead carry `bodySHA256=<hex>` in the URL's
//! query: the signature covers the URL alone, and the body must hash to that value.

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Secret, base64_decode, base64_encode, first_match};

const HEADER: &str = "x-twilio-signature";

pub(super) fn verify(ctx: &Context<'_>) -> Result<Option<usize>, Rejection> {
    let signature = ctx
        .request
        .headers
        .get_str(HEADER)
        .ok_or(Rejection::MissingSignature)?;
    let signature = base64_decode(signature).ok_or(Rejection::MalformedSignature)?;
    let url = ctx.url.as_deref().unwrap_or("");
    let message = match body_hash(url) {
        Some(expected) => {
            // Compared as hex text of equal length; the hash is not secret, the MAC is.
            if !mac::same_secret(
                mac::sha256_hex(ctx.request.body).as_bytes(),
                expected.to_ascii_lowercase().as_bytes(),
            ) {
                return Err(Rejection::NoMatchingSignature);
            }
            url.to_string()
        }
        None => form_message(url, ctx.request.body),
    };
    first_match(
        ctx.secrets,
        &[signature],
        None,
        ctx.window,
        |secret, sig| mac::verify(Algorithm::Sha1, secret.expose(), &[message.as_bytes()], sig),
    )
}

/// The `bodySHA256` query parameter, if the URL has one.
fn body_hash(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

fn form_message(url: &str, body: &[u8]) -> String {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    let mut message = url.to_string();
    for (name, value) in params {
        message.push_str(&name);
        message.push_str(&value);
    }
    message
}

pub(super) fn sign(url: &str, body: &[u8], secret: &Secret) -> super::Signed {
    let is_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{' || *b == b'[');
    let (message, query) = if is_json {
        let query = format!("bodySHA256={}", mac::sha256_hex(body));
        let sep = if url.contains('?') { '&' } else { '?' };
        (format!("{url}{sep}{query}"), Some(query))
    } else {
        (form_message(url, body), None)
    };
    let sig = base64_encode(&mac::compute(
        Algorithm::Sha1,
        secret.expose(),
        &[message.as_bytes()],
    ));
    super::Signed {
        headers: vec![("X-Twilio-Signature".to_string(), sig)],
        query,
    }
}
