//! Metrics: every observable event is recorded here, once, with fixed names and labels, so the
//! Prometheus output and the code cannot drift apart. Served as text at `GET /metrics`.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for request and delivery histograms.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder. Returns `None` if one is already installed (tests that
/// build several applications in one process share the first).
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    Some(handle)
}

/// The exporter needs periodic upkeep to drain histogram buffers.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// A webhook's fate at the door. `reason` is empty for accepted and duplicate webhooks.
pub fn webhook(source: &str, outcome: &'static str, reason: &'static str, took: Duration) {
    counter!("bridge_webhooks_received_total", "source" => source.to_string(), "outcome" => outcome, "reason" => reason).increment(1);
    histogram!("bridge_request_duration_seconds", "source" => source.to_string())
        .record(took.as_secs_f64());
}

/// Which configured secret verified a request, so an old one can be retired when its count
/// stops growing.
pub fn secret_matched(source: &str, index: usize) {
    counter!("bridge_signature_secret_index_total", "source" => source.to_string(), "index" => index.to_string()).increment(1);
}

/// A provider event's mapping outcome; `rule` is empty for ignored events.
pub fn mapped(source: &str, rule: &str, outcome: &'static str) {
    counter!("bridge_events_mapped_total", "source" => source.to_string(), "rule" => rule.to_string(), "outcome" => outcome).increment(1);
}

/// One delivery attempt's result: `2xx`, `4xx`, `5xx` or `error` (no response).
pub fn delivery(status_class: &'static str, took: Duration) {
    counter!("bridge_deliveries_total", "status_class" => status_class).increment(1);
    histogram!("bridge_delivery_duration_seconds").record(took.as_secs_f64());
}

pub fn retry_scheduled() {
    counter!("bridge_delivery_retries_total").increment(1);
}

pub fn dead_lettered() {
    counter!("bridge_dead_letters_total").increment(1);
}

/// Queue state, refreshed periodically from the store.
pub fn queue(depth: u64, oldest_age: Duration, dead: u64) {
    gauge!("bridge_queue_depth").set(depth as f64);
    gauge!("bridge_queue_oldest_age_seconds").set(oldest_age.as_secs_f64());
    gauge!("bridge_dead_letter_count").set(dead as f64);
}

pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    }
}

/// A mappings reload: `applied` or `refused`.
pub fn reload(outcome: &'static str) {
    counter!("bridge_mappings_reloads_total", "outcome" => outcome).increment(1);
}

/// Which mappings version is live: 1 for the live one, 0 for the one it replaced.
pub fn mappings_version(previous: &str, live: &str) {
    if previous != live {
        gauge!("bridge_mappings_version_info", "version" => previous.to_string()).set(0.0);
    }
    gauge!("bridge_mappings_version_info", "version" => live.to_string()).set(1.0);
}

/// One group commit of the SQLite writer: how many operations shared it and how long it took.
pub fn store_batch(jobs: usize, took: Duration) {
    histogram!("bridge_store_batch_jobs").record(jobs as f64);
    histogram!("bridge_store_commit_seconds").record(took.as_secs_f64());
}

/// One SQLite WAL checkpoint, run `by` the background thread or the writer.
pub fn store_checkpoint(by: &'static str, took: Duration) {
    histogram!("bridge_store_checkpoint_seconds", "by" => by).record(took.as_secs_f64());
}
