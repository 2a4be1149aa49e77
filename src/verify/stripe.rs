//! Stripe, and Calendly which copies its format: `<Header>: t=<unix>,v1=<hex>[,v1=<hex>…]`,
//! HMAC-SHA256 over `"{t}.{body}"` keyed with the secret as given (Stripe's `whsec_…` is *not*
//! decoded). Every `v1` is tried (Stripe sends one per active secret after a roll); other
//! schemes such as Stripe's test-mode `v0` are ignored and never accepted.

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Secret, first_match};

/// Where a `t=…,v1=…` scheme carries its signature.
#[derive(Debug, Clone, Copy)]
pub(super) struct Format {
    header: &'static str,
}

pub(super) const STRIPE: Format = Format {
    header: "stripe-signature",
};
pub(super) const CALENDLY: Format = Format {
    header: "calendly-webhook-signature",
};

pub(super) fn verify(ctx: &Context<'_>, format: Format) -> Result<Option<usize>, Rejection> {
    let header = ctx
        .request
        .headers
        .get_str(format.header)
        .ok_or(Rejection::MissingSignature)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(Rejection::MalformedSignature)?;
        match key {
            "t" => {
                let t: i64 = value.parse().map_err(|_| Rejection::MalformedSignature)?;
                timestamp = Some(t);
            }
            "v1" => {
                let bytes = hex::decode(value).map_err(|_| Rejection::MalformedSignature)?;
                signatures.push(bytes);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    let t = timestamp.to_string();
    let parts: [&[u8]; 3] = [t.as_bytes(), b".", ctx.request.body];
    first_match(
        ctx.secrets,
        &signatures,
        Some(timestamp),
        ctx.window,
        |secret, sig| mac::verify(Algorithm::Sha256, secret.expose(), &parts, sig),
    )
}

pub(super) fn sign(
    format: Format,
    body: &[u8],
    secret: &Secret,
    now: i64,
) -> Vec<(String, String)> {
    let t = now.to_string();
    let sig = mac::compute(
        Algorithm::Sha256,
        secret.expose(),
        &[t.as_bytes(), b".", body],
    );
    vec![(
        format.header.to_string(),
        format!("t={t},v1={}", hex::encode(sig)),
    )]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::inbound::{Headers, Request};
    use crate::verify::Window;

    const SECRET: &str = "whsec_test_secret";
    /// stripe-python's DUMMY_WEBHOOK_PAYLOAD, no trailing newline (VERIFICATION.md).
    const PAYLOAD: &str = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
    const VECTOR: &str =
        "t=12345,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda";

    fn check(
        header: Option<&str>,
        body: &str,
        secrets: &[&str],
        now: i64,
    ) -> Result<Option<usize>, Rejection> {
        let mut headers = Headers::new();
        if let Some(h) = header {
            headers.insert("Stripe-Signature", h);
        }
        let request = Request {
            method: "POST",
            url: None,
            headers: &headers,
            body: body.as_bytes(),
        };
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(s.as_bytes())).collect();
        let window = Window {
            now,
            tolerance: Some(Duration::from_secs(300)),
        };
        let ctx = Context {
            request: &request,
            secrets: &secrets,
            window,
            url: None,
        };
        verify(&ctx, STRIPE)
    }

    #[test]
    fn accepts_the_computed_vector() {
        assert_eq!(check(Some(VECTOR), PAYLOAD, &[SECRET], 12345), Ok(Some(0)));
    }

    #[test]
    fn sign_reproduces_the_vector() {
        let headers = sign(STRIPE, PAYLOAD.as_bytes(), &Secret::new(SECRET), 12345);
        assert_eq!(headers[0].1, VECTOR);
    }

    #[test]
    fn refuses_a_tampered_body() {
        let tampered = PAYLOAD.replace("rdr_123", "rdr_124");
        assert_eq!(
            check(Some(VECTOR), &tampered, &[SECRET], 12345),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn refuses_a_wrong_secret() {
        assert_eq!(
            check(Some(VECTOR), PAYLOAD, &["whsec_other"], 12345),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn refuses_stale_and_far_future_timestamps_but_accepts_the_edge() {
        assert_eq!(
            check(Some(VECTOR), PAYLOAD, &[SECRET], 12345 + 301),
            Err(Rejection::TimestampOutsideTolerance)
        );
        assert_eq!(
            check(Some(VECTOR), PAYLOAD, &[SECRET], 12345 - 301),
            Err(Rejection::TimestampOutsideTolerance)
        );
        assert_eq!(
            check(Some(VECTOR), PAYLOAD, &[SECRET], 12345 + 300),
            Ok(Some(0))
        );
    }

    #[test]
    fn reports_missing_and_malformed_headers() {
        assert_eq!(
            check(None, PAYLOAD, &[SECRET], 12345),
            Err(Rejection::MissingSignature)
        );
        for bad in [
            "garbage",
            "t=abc,v1=00",
            "v1=07b1",
            "t=12345",
            "t=12345,v1=zz",
            "t=12345,v0=07b1ede1",
        ] {
            assert_eq!(
                check(Some(bad), PAYLOAD, &[SECRET], 12345),
                Err(Rejection::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn tries_every_v1_and_every_secret_and_ignores_v0() {
        let good = VECTOR.trim_start_matches("t=12345,v1=");
        let two = format!("t=12345,v0={good},v1={},v1={good}", "00".repeat(32));
        assert_eq!(check(Some(&two), PAYLOAD, &[SECRET], 12345), Ok(Some(0)));
        // The rotated-in secret is first; the old one still matches and is reported as index 1.
        assert_eq!(
            check(Some(VECTOR), PAYLOAD, &["whsec_new", SECRET], 12345),
            Ok(Some(1))
        );
        // A v0 alone never passes, even when it holds the right MAC.
        let v0_only = format!("t=12345,v0={good}");
        assert_eq!(
            check(Some(&v0_only), PAYLOAD, &[SECRET], 12345),
            Err(Rejection::MalformedSignature)
        );
    }
}
