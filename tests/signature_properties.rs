//! Property: for every scheme that signs the body, any single-byte change to a signed body is
//! refused.

use greenflash_bridge::inbound::{Headers, Request};
use greenflash_bridge::verify::{Rejection, Scheme, Spec, Verifier};
use proptest::prelude::*;

const URL: &str = "https://hooks.example.com/webhooks/x";
const NOW: i64 = 1_760_000_000;

fn verifier(scheme: Scheme) -> Verifier {
    let mut spec = Spec::new(scheme);
    spec.secrets_env = Some("S".into());
    if scheme.needs_url() {
        spec.url = Some(URL.into());
    }
    let secret = match scheme {
        Scheme::StandardWebhooks | Scheme::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        Scheme::Close => "058bfb6a3d8cfdc4da7c3be5901b16ae",
        _ => "property-secret",
    };
    Verifier::from_spec(&spec, |_| Some(secret.to_string())).unwrap()
}

/// Schemes whose signature covers the body (Basic and token authenticate the sender only).
fn body_signing() -> Vec<Scheme> {
    Scheme::NAMES
        .iter()
        .filter_map(|n| Scheme::parse(n))
        .filter(|s| {
            !matches!(
                s,
                Scheme::None | Scheme::Basic | Scheme::Token | Scheme::Hmac
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_single_byte_change_is_refused(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        for scheme in body_signing() {
            // Twilio signs form parameters; keep its body a JSON object so it signs the bytes.
            let body = if scheme == Scheme::Twilio { format!("{{\"b\":\"{}\"}}", hex::encode(&body)).into_bytes() } else { body.clone() };
            let v = verifier(scheme);
            let signed = v.sign("POST", URL, &body, NOW);
            let url = match &signed.query { Some(q) => format!("{URL}?{q}"), None => URL.to_string() };
            let mut headers = Headers::new();
            for (k, val) in &signed.headers {
                headers.insert(k, val.as_bytes());
            }
            let ok = Request { method: "POST", url: Some(&url), headers: &headers, body: &body };
            prop_assert!(v.verify(&ok, NOW).is_ok(), "{:?} refuses its own signature", scheme);

            let mut changed = body.clone();
            let i = at.index(changed.len());
            changed[i] ^= flip;
            let bad = Request { method: "POST", url: Some(&url), headers: &headers, body: &changed };
            prop_assert_eq!(v.verify(&bad, NOW).map(|_| ()), Err(Rejection::NoMatchingSignature), "{:?} accepted a changed byte at {}", scheme, i);
        }
    }
}
