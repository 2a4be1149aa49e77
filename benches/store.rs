//! Durable accepts through the `Store` trait: a Stripe-sized webhook (3.1 KB body, the headers a
//! provider sends, one outbox event) per accept, with 1, 16 or 128 accepts in flight at once, so
//! that group commit shares one fsync among them. Run: `cargo bench --bench store`.
//!
//! SQLite runs on the real disk under `target/` (a tmpfs would hide the fsync). Set
//! `BRIDGE_BENCH_POSTGRES=postgres://USER:PASSWORD@HOST/DB` to measure PostgreSQL as well; the
//! tables are created in that database if missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use greenflash_bridge::store::{self, NewOutboxEvent, NewProviderEvent, NewWebhook, Store};

const HEADERS: &str = r#"{"content-type":"application/json; charset=utf-8","stripe-signature":"t=1760000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd","user-agent":"Stripe/1.0 (+https://stripe.com/docs/webhooks)","content-length":"3172","accept":"*/*; q=0.5, application/xml","cache-control":"no-cache"}"#;

fn webhook(body: &Bytes, n: u64) -> NewWebhook {
    let event_id = format!("evt_bench_{n:016x}_{:08x}", fastrand::u32(..));
    NewWebhook {
        source: "stripe".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        received_at_ms: store::now_ms(),
        headers_json: HEADERS.into(),
        body: body.clone(),
        events: vec![NewProviderEvent {
            event_id: event_id.clone(),
            event_type: "invoice.paid".into(),
            status: "mapped",
            detail: None,
            outbox: vec![NewOutboxEvent {
                rule: "invoice_paid".into(),
                insert_id: format!("stripe:{event_id}:invoice_paid"),
                payload: format!(
                    r#"{{"eventType":"invoice_paid","productId":"7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b","value":"29.00","valueType":"currency","influence":"positive","externalUserId":"cus_NffrFeUfNV2Hib","eventAt":"2026-11-29T12:00:00.000Z","insertId":"stripe:{event_id}:invoice_paid","properties":{{"currency":"USD","billing_reason":"subscription_cycle","stripe_customer":"cus_NffrFeUfNV2Hib"}}}}"#
                ),
            }],
        }],
        claim: None,
    }
}

fn bench_store(
    c: &mut Criterion,
    name: &str,
    runtime: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = Bytes::from(
        std::fs::read(root.join("tests/fixtures/stripe/invoice.paid.json")).expect("fixture"),
    );
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group(format!("{name}_accept"));
    group.measurement_time(Duration::from_secs(5));
    for in_flight in [1u64, 16, 128] {
        group.throughput(Throughput::Elements(in_flight));
        group.bench_function(format!("in_flight_{in_flight}"), |b| {
            b.iter_custom(|rounds| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..rounds {
                        let accepts: Vec<_> = (0..in_flight)
                            .map(|_| {
                                let store = store.clone();
                                let webhook =
                                    webhook(&body, counter.fetch_add(1, Ordering::Relaxed));
                                tokio::spawn(async move { store.accept(webhook).await })
                            })
                            .collect();
                        for accept in accepts {
                            let accepted = accept.await.expect("task").expect("accepted");
                            assert!(accepted.stored_new());
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-store");
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/bench.db", dir.display());
    let sqlite = runtime.block_on(store::open(&url)).expect("SQLite store");
    bench_store(c, "sqlite", &runtime, sqlite);
    if let Ok(url) = std::env::var("BRIDGE_BENCH_POSTGRES") {
        let postgres = runtime
            .block_on(store::open(&url))
            .expect("PostgreSQL store");
        bench_store(c, "postgres", &runtime, postgres);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
