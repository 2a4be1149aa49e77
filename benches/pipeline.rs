//! Per-event CPU of the accept path without I/O: JSON parse + mapping, for each shipped
//! catalog's fixtures. Run: `cargo bench --bench pipeline`. Target (issue #6): the Stripe
//! catalog maps ≥ 200,000 events/s per core, parse excluded.
//!
//! `parse_and_map` is what the accept path does (the body parsed only as far as the rules
//! read it); `parse_whole_and_map` is the same with a whole `serde_json::Value`, for scale.
//! Measured with the allocator the bridge runs with (`src/main.rs`): mapping allocates every
//! string of the events it builds, and with the system's allocator the figures would be of a
//! program nobody runs.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use greenflash_bridge::inbound::Headers;
use greenflash_bridge::mapping::{Options, load_dir};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog = load_dir(&root.join("mappings"))
        .expect("shipped mappings")
        .catalog;
    let options = Options {
        default_product_id: Some("7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b"),
        explain: false,
    };
    let headers = Headers::new();
    for (source, fixture) in [
        ("stripe", "stripe/invoice.paid.json"),
        ("stripe", "stripe/customer.subscription.updated.json"),
        ("paddle", "paddle/transaction.completed.json"),
        ("chargebee", "chargebee/payment_succeeded.json"),
        (
            "hubspot",
            "hubspot/batch_contact.creation_deal.propertyChange.json",
        ),
        ("lemonsqueezy", "lemonsqueezy/order_created.json"),
    ] {
        let body = std::fs::read(root.join("tests/fixtures").join(fixture)).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mapping = catalog.get(source).unwrap();
        let mut group = c.benchmark_group(fixture.replace('/', "_"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("map", |b| {
            b.iter(|| mapping.apply(black_box(&doc), &headers, &options))
        });
        group.bench_function("parse_and_map", |b| {
            b.iter(|| {
                let doc = mapping.parse_body(&headers, black_box(&body)).unwrap();
                mapping.apply(&doc, &headers, &options)
            })
        });
        group.bench_function("parse_whole_and_map", |b| {
            b.iter(|| {
                let doc: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
                mapping.apply(&doc, &headers, &options)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
