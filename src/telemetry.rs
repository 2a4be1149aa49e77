//! Metrics: every observable event is recorded here, once, with fixed names and labels, so the
//! Prometheus output and the code cannot drift apart. Served as text at `GET /metrics`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::LocalKey;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};
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
    let installed = metrics::set_global_recorder(recorder).is_ok();
    // Installed now or by an earlier call: either way handles record from here on.
    RECORDING.store(true, Ordering::Release);
    installed.then_some(handle)
}

/// Set once a recorder is installed. A handle registered before then records nothing, so none
/// is kept until it is.
static RECORDING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNTERS: RefCell<Handles<Counter>> = RefCell::new(Handles::new());
    static HISTOGRAMS: RefCell<Handles<Histogram>> = RefCell::new(Handles::new());
}

/// Handles this thread registered, by metric name and label values. Registering one builds
/// its key, with a copy of every label, and looks it up in the recorder's shared registry: at
/// saturation that was 2.5 % of the bridge's CPU for the metrics recorded per webhook and per
/// delivery, more than recording itself. Their label values are few (sources, rules,
/// outcomes), so each thread keeps what it registered.
struct Handles<H> {
    /// Scratch for building a key, kept to save an allocation per lookup.
    key: String,
    by_key: HashMap<String, H>,
}

impl<H> Handles<H> {
    fn new() -> Self {
        Self {
            key: String::new(),
            by_key: HashMap::new(),
        }
    }

    /// Hands `use_` the handle for `parts`, registering it with `register` the first time.
    fn with(&mut self, parts: &[&str], register: impl FnOnce() -> H, use_: impl FnOnce(&H)) {
        self.key.clear();
        for part in parts {
            // Length first: no two lists of values make the same key.
            let _ = write!(self.key, "{}:{part}", part.len());
        }
        match self.by_key.get(self.key.as_str()) {
            Some(handle) => use_(handle),
            None => {
                let handle = register();
                use_(&handle);
                self.by_key.insert(self.key.clone(), handle);
            }
        }
    }
}

/// Hands `use_` the handle named and labelled by `parts` from this thread's `cache`,
/// registered by `register` the first time (every time until a recorder is installed).
fn with_handle<H: 'static>(
    cache: &'static LocalKey<RefCell<Handles<H>>>,
    parts: &[&str],
    register: impl FnOnce() -> H,
    use_: impl FnOnce(&H),
) {
    if !RECORDING.load(Ordering::Acquire) {
        return use_(&register());
    }
    cache.with_borrow_mut(|handles| handles.with(parts, register, use_));
}

/// Increments the counter named and labelled by `parts`.
fn count(parts: &[&str], register: impl FnOnce() -> Counter) {
    with_handle(&COUNTERS, parts, register, |c| c.increment(1));
}

/// Records `value` in the histogram named and labelled by `parts`.
fn record(parts: &[&str], value: f64, register: impl FnOnce() -> Histogram) {
    with_handle(&HISTOGRAMS, parts, register, |h| h.record(value));
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
    const RECEIVED: &str = "bridge_webhooks_received_total";
    const DURATION: &str = "bridge_request_duration_seconds";
    count(
        &[RECEIVED, source, outcome, reason],
        || counter!(RECEIVED, "source" => source.to_string(), "outcome" => outcome, "reason" => reason),
    );
    record(
        &[DURATION, source],
        took.as_secs_f64(),
        || histogram!(DURATION, "source" => source.to_string()),
    );
}

/// Which configured secret verified a request, so an old one can be retired when its count
/// stops growing.
pub fn secret_matched(source: &str, index: usize) {
    const MATCHED: &str = "bridge_signature_secret_index_total";
    let index = index.to_string();
    count(
        &[MATCHED, source, &index],
        || counter!(MATCHED, "source" => source.to_string(), "index" => index.clone()),
    );
}

/// A provider event's mapping outcome; `rule` is empty for ignored events.
pub fn mapped(source: &str, rule: &str, outcome: &'static str) {
    const MAPPED: &str = "bridge_events_mapped_total";
    count(
        &[MAPPED, source, rule, outcome],
        || counter!(MAPPED, "source" => source.to_string(), "rule" => rule.to_string(), "outcome" => outcome),
    );
}

/// One delivery attempt's result: `2xx`, `4xx`, `5xx` or `error` (no response).
pub fn delivery(status_class: &'static str, took: Duration) {
    const DELIVERIES: &str = "bridge_deliveries_total";
    const DURATION: &str = "bridge_delivery_duration_seconds";
    count(
        &[DELIVERIES, status_class],
        || counter!(DELIVERIES, "status_class" => status_class),
    );
    record(&[DURATION], took.as_secs_f64(), || histogram!(DURATION));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_handles_count_each_set_of_labels_apart() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let rendered = recorder.handle();
        // As once a recorder is installed; this test's thread keeps handles of its own.
        RECORDING.store(true, Ordering::Release);
        metrics::with_local_recorder(&recorder, || {
            let took = Duration::from_millis(3);
            for _ in 0..3 {
                webhook("stripe", "accepted", "", took);
            }
            webhook("stripe", "rejected", "no_matching_signature", took);
            webhook("paddle", "accepted", "", took);
            // Joined without their lengths, each pair's keys would be the same.
            mapped("stripe", "a:b", "mapped");
            mapped("stripe:a", "b", "mapped");
            mapped("stripe:a", "b", "mapped");
            mapped("stripe", "ab", "mapped");
            mapped("stripea", "b", "mapped");
            secret_matched("stripe", 1);
            delivery("2xx", took);
            delivery("2xx", took);
            delivery("5xx", took);
        });
        let text = rendered.render();
        for line in [
            r#"bridge_webhooks_received_total{source="stripe",outcome="accepted",reason=""} 3"#,
            r#"bridge_webhooks_received_total{source="stripe",outcome="rejected",reason="no_matching_signature"} 1"#,
            r#"bridge_webhooks_received_total{source="paddle",outcome="accepted",reason=""} 1"#,
            r#"bridge_request_duration_seconds_count{source="stripe"} 4"#,
            r#"bridge_events_mapped_total{source="stripe",rule="a:b",outcome="mapped"} 1"#,
            r#"bridge_events_mapped_total{source="stripe:a",rule="b",outcome="mapped"} 2"#,
            r#"bridge_events_mapped_total{source="stripe",rule="ab",outcome="mapped"} 1"#,
            r#"bridge_events_mapped_total{source="stripea",rule="b",outcome="mapped"} 1"#,
            r#"bridge_signature_secret_index_total{source="stripe",index="1"} 1"#,
            r#"bridge_deliveries_total{status_class="2xx"} 2"#,
            r#"bridge_deliveries_total{status_class="5xx"} 1"#,
            "bridge_delivery_duration_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
