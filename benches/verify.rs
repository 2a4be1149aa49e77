//! Verification cost for a ~3 KB body, per scheme family, next to the bare HMAC it wraps.
//! Run: `cargo bench --bench verify`. Target (issue #4): within 1.5× of the bare HMAC.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use greenflash_bridge::inbound::{Headers, Request};
use greenflash_bridge::verify::{Scheme, Spec, Verifier};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const NOW: i64 = 1_773_072_671;

fn body() -> Vec<u8> {
    let fixture = include_bytes!("../tests/fixtures/stripe/invoice.paid.json");
    fixture[..3072.min(fixture.len())].to_vec()
}

fn verifier(scheme: Scheme, secret: &str) -> Verifier {
    let mut spec = Spec::new(scheme);
    spec.secrets_env = Some("S".into());
    if scheme.needs_url() {
        spec.url = Some("https://hooks.example.com/webhooks/x".into());
    }
    Verifier::from_spec(&spec, |_| Some(secret.to_string())).expect("secret")
}

fn bench(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("verify_3kb");
    group.bench_function("bare_hmac_sha256", |b| {
        let key = b"whsec_bench_secret_0123456789";
        let expected = {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(b"1773072671.");
            m.update(&body);
            m.finalize().into_bytes()
        };
        b.iter(|| {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(b"1773072671.");
            m.update(black_box(&body));
            m.verify_slice(&expected).is_ok()
        })
    });
    for (scheme, secret) in [
        (Scheme::Stripe, "whsec_bench_secret_0123456789"),
        (
            Scheme::StandardWebhooks,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (Scheme::Github, "github-bench-secret"),
        (Scheme::Shopify, "shopify-bench-secret"),
        (Scheme::Paddle, "pdl_ntfset_bench"),
        (Scheme::HubspotV3, "hubspot-bench-secret"),
        (Scheme::Basic, "user:password"),
    ] {
        let v = verifier(scheme, secret);
        let signed = v.sign("POST", "https://hooks.example.com/webhooks/x", &body, NOW);
        let mut headers = Headers::new();
        for (k, val) in &signed.headers {
            headers.insert(k, val.as_bytes());
        }
        let request = Request {
            method: "POST",
            url: Some("https://hooks.example.com/webhooks/x"),
            headers: &headers,
            body: &body,
        };
        assert!(v.verify(&request, NOW).is_ok(), "{scheme:?}");
        group.bench_function(scheme.name(), |b| {
            b.iter(|| v.verify(black_box(&request), NOW))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
