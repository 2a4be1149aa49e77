//! Forwarding stored events to Greenflash: lease due events, POST them, record the outcome.
//!
//! Every attempt of an event carries the same `insertId`, so Greenflash counts an event once
//! however often it is retried (at-least-once delivery, effectively once).

mod client;
mod handoff;
mod outcomes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

pub use client::{Attempt, ClientError, GreenflashClient, parse_retry_after};
use handoff::Handed;
pub use handoff::{Handoff, Reservation};
use outcomes::Outcomes;

use crate::store::{Completion, Leased, Store, now_ms};
use crate::telemetry;

/// How often the throttle other replicas may have set is read from the store.
const SHARED_THROTTLE_CHECK: Duration = Duration::from_millis(500);
/// How long the dispatcher waits for a fuller batch of free workers before leasing.
const LEASE_BATCH_WAIT: Duration = Duration::from_millis(5);
/// Events intake may hand over per delivery worker: enough that at full speed events go from
/// intake to delivery in memory, few enough that a crash leaves little waiting for its lease.
const HANDOFF_PER_WORKER: usize = 8;

/// When to try again after a retryable failure: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// An event still failing this long after it was accepted becomes a dead letter.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            // Stripe's own redelivery window.
            give_up_after: Duration::from_secs(72 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failures + 1`: uniform in [0, min(cap, base · 2^(failures-1))].
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let ceiling = self.base.saturating_mul(1u32 << exp.min(31)).min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Where events go.
#[derive(Debug, Clone)]
pub enum Sink {
    Greenflash(GreenflashClient),
    /// `serve --dry-run`: log each event instead of sending it.
    DryRun,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// While Greenflash refuses our key, how often one event is tried to see if it is back.
    pub auth_probe_interval: Duration,
    /// How long a leased event belongs to this process before another may take it.
    pub lease: Duration,
    /// The longest the dispatcher sleeps before looking for due work again.
    pub idle_poll: Duration,
    pub retry: RetryPolicy,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: 128,
            auth_probe_interval: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        }
    }
}

/// Delivery's state as `/readyz` and every worker see it.
#[derive(Debug, Default)]
pub struct DeliveryHealth {
    /// Greenflash refuses our API key (401/403): delivery is paused, events are kept.
    key_refused: AtomicBool,
    /// Greenflash asked us to slow down until this time (ms): one budget for all workers.
    throttled_until_ms: AtomicI64,
}

impl DeliveryHealth {
    pub fn key_refused(&self) -> bool {
        self.key_refused.load(Ordering::Relaxed)
    }

    pub fn throttled_until_ms(&self) -> i64 {
        self.throttled_until_ms.load(Ordering::Relaxed)
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    sink: Sink,
    config: DeliveryConfig,
    /// Intake's way in; it also says when intake stored events without handing them over.
    handoff: Handoff,
    /// What intake handed over; taken by `run`.
    handed: Option<mpsc::Receiver<Handed>>,
    owner: String,
    health: Arc<DeliveryHealth>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, sink: Sink, config: DeliveryConfig) -> Self {
        let owner = uuid::Uuid::new_v4().to_string();
        let health = Arc::new(DeliveryHealth::default());
        let (handoff, handed) = Handoff::new(
            config.concurrency.max(1).saturating_mul(HANDOFF_PER_WORKER),
            owner.clone(),
            config.lease,
            health.clone(),
        );
        Self {
            store,
            sink,
            config,
            handoff,
            handed: Some(handed),
            owner,
            health,
        }
    }

    /// Shared with `/readyz`.
    pub fn health(&self) -> Arc<DeliveryHealth> {
        self.health.clone()
    }

    /// For intake: hands new events over, or says where to look for them.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    /// Runs until `shutdown` turns true, then waits for in-flight deliveries up to `grace`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let outcomes = Outcomes::start(self.store.clone(), self.owner.clone());
        let handed = self.handed.take();
        let this = Arc::new(self);
        let taking = handed.map(|handed| {
            tokio::spawn(this.clone().take_handed(
                handed,
                permits.clone(),
                outcomes.clone(),
                shutdown.clone(),
            ))
        });
        let mut last_shared_check = std::time::Instant::now() - SHARED_THROTTLE_CHECK;
        // Lease in batches: when only a few deliveries have finished, wait briefly for more
        // rather than paying a lease round trip per event.
        let batch = (this.config.concurrency / 4).max(1);
        while !*shutdown.borrow() {
            // Greenflash asked everyone — every worker of every replica — to wait. Other
            // replicas' throttles are read at most twice a second: a round trip per lease
            // would cost a networked store more than the throttle saves.
            if last_shared_check.elapsed() >= SHARED_THROTTLE_CHECK {
                last_shared_check = std::time::Instant::now();
                if let Ok(until) = this.store.throttled_until().await {
                    this.health
                        .throttled_until_ms
                        .fetch_max(until, Ordering::Relaxed);
                }
            }
            let wait = this.health.throttled_until_ms() - now_ms();
            if wait > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let paused = this.health.key_refused();
            let free = if paused {
                // One probe at a time while our key is refused.
                usize::from(permits.available_permits() == this.config.concurrency.max(1))
            } else {
                permits.available_permits()
            };
            if free == 0 {
                tokio::select! {
                    p = permits.clone().acquire_owned() => drop(p),
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let free = if !paused && free < batch {
                let more = u32::try_from(batch).unwrap_or(u32::MAX);
                if let Ok(Ok(p)) =
                    tokio::time::timeout(LEASE_BATCH_WAIT, permits.acquire_many(more)).await
                {
                    drop(p);
                }
                permits.available_permits()
            } else {
                free
            };
            let lease_ms = i64::try_from(this.config.lease.as_millis()).unwrap_or(i64::MAX);
            match this
                .store
                .lease(&this.owner, free, now_ms(), lease_ms)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    let probing = paused;
                    for event in batch {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let this = this.clone();
                        let outcomes = outcomes.clone();
                        tokio::spawn(async move {
                            this.deliver(event, &outcomes).await;
                            drop(permit);
                        });
                    }
                    if probing {
                        tokio::select! {
                            _ = tokio::time::sleep(this.config.auth_probe_interval) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
                Ok(_) => {
                    let sleep = this.idle_sleep().await;
                    tokio::select! {
                        _ = this.handoff.woken() => {}
                        _ = tokio::time::sleep(sleep) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "Delivery cannot lease events; retrying shortly.");
                    tokio::select! {
                        _ = tokio::time::sleep(this.config.idle_poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        if let Some(taking) = taking {
            let _ = taking.await;
        }
        // Let in-flight deliveries record their outcome; whatever does not finish in time keeps
        // its lease and is picked up again after restart.
        let all = u32::try_from(this.config.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, permits.acquire_many(all)).await;
    }

    /// Delivers what intake hands over, sharing the workers with the lease path, until
    /// shutdown; then gives back what is still queued, due now.
    async fn take_handed(
        self: Arc<Self>,
        mut handed: mpsc::Receiver<Handed>,
        permits: Arc<Semaphore>,
        outcomes: Outcomes,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut returned = Vec::new();
        loop {
            let next = tokio::select! {
                next = handed.recv() => next,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(next) = next else { break };
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.ok(),
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(permit) = permit else {
                returned.push(next.event);
                break;
            };
            let now = now_ms();
            let paused = self.health.key_refused() || self.health.throttled_until_ms() > now;
            if paused || !next.fresh(self.config.lease, now) {
                // Back to the store, due when delivery may go on; the lease path takes it
                // from there (one probe at a time while the key is refused).
                let due = self.health.throttled_until_ms().max(now);
                let _ = outcomes.record(give_back(next.event.id, due)).await;
                continue;
            }
            let this = self.clone();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                this.deliver(next.event, &outcomes).await;
                drop(permit);
            });
        }
        // Intake has stopped by now (the server drains before delivery stops), bar an accept
        // whose provider hung up: its events wait for their lease, as after a crash. What is
        // queued is given back due now, so another replica need not wait for the leases.
        handed.close();
        while let Ok(next) = handed.try_recv() {
            returned.push(next.event);
        }
        if !returned.is_empty() {
            let now = now_ms();
            let back = returned.iter().map(|e| give_back(e.id, now)).collect();
            if let Err(e) = self.store.complete(&self.owner, now, back).await {
                // Their leases run out and the lease path takes them; nothing is lost.
                tracing::warn!(error = %e, events = returned.len(), "Cannot give back events not yet delivered at shutdown.");
            }
        }
    }

    async fn idle_sleep(&self) -> Duration {
        match self.store.next_due().await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                Duration::from_millis(wait).min(self.config.idle_poll)
            }
            _ => self.config.idle_poll,
        }
    }

    async fn deliver(&self, event: Leased, outcomes: &Outcomes) {
        let completion = match &self.sink {
            Sink::DryRun => {
                tracing::info!(insert_id = %event.insert_id, source = %event.source, payload = %event.payload, "Dry run: event not sent.");
                Completion::Skipped { id: event.id }
            }
            Sink::Greenflash(client) => {
                let started = std::time::Instant::now();
                let attempt = client.send(&event.payload).await;
                let status = match &attempt {
                    Attempt::Delivered { status } | Attempt::Permanent { status, .. } => {
                        Some(*status)
                    }
                    Attempt::Retry { status, .. } => *status,
                };
                telemetry::delivery(telemetry::status_class(status), started.elapsed());
                self.judge(&event, attempt).await
            }
        };
        if let Err(e) = outcomes.record(completion).await {
            // The lease will expire and the event will be sent again with the same insertId.
            tracing::error!(error = %e, insert_id = %event.insert_id, "Cannot record a delivery outcome.");
        }
    }

    async fn judge(&self, event: &Leased, attempt: Attempt) -> Completion {
        let id = event.id;
        match attempt {
            Attempt::Delivered { status } => {
                if self.health.key_refused.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Greenflash accepts our API key again; delivery resumed.");
                }
                tracing::debug!(request_id = %event.request_id, insert_id = %event.insert_id, status, "Event delivered.");
                Completion::Delivered { id, status }
            }
            Attempt::Permanent { status, error } => {
                telemetry::dead_lettered();
                tracing::warn!(request_id = %event.request_id, insert_id = %event.insert_id, status, error = %error, "Greenflash refused an event; kept as a dead letter.");
                Completion::Dead {
                    id,
                    status: Some(status),
                    error,
                }
            }
            Attempt::Retry {
                status,
                retry_after,
                error,
            } => {
                let now = now_ms();
                let as_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                match status {
                    // Throttled: not the event's fault. Everyone waits as long as Greenflash says.
                    Some(429) => {
                        let delay = retry_after
                            .unwrap_or_else(|| self.config.retry.delay(event.attempts + 1));
                        let until = now.saturating_add(as_ms(delay));
                        self.health
                            .throttled_until_ms
                            .fetch_max(until, Ordering::Relaxed);
                        tracing::info!(request_id = %event.request_id, insert_id = %event.insert_id, retry_in_ms = as_ms(delay), "Greenflash is throttling; all deliveries wait.");
                        telemetry::retry_scheduled();
                        return Completion::Retry {
                            id,
                            next_attempt_ms: until,
                            status,
                            error,
                            counts: false,
                        };
                    }
                    // Our key is wrong or revoked: keep everything and probe until it works.
                    Some(401 | 403) => {
                        if !self.health.key_refused.swap(true, Ordering::Relaxed) {
                            tracing::error!(status, error = %error, "Greenflash refuses our API key (check GREENFLASH_API_KEY). Delivery is paused; every event is kept and delivery resumes by itself once the key works.");
                        }
                        return Completion::Retry {
                            id,
                            next_attempt_ms: now,
                            status,
                            error,
                            counts: false,
                        };
                    }
                    _ => {}
                }
                let age =
                    Duration::from_millis(u64::try_from(now - event.created_at_ms).unwrap_or(0));
                if age >= self.config.retry.give_up_after {
                    telemetry::dead_lettered();
                    tracing::warn!(request_id = %event.request_id, insert_id = %event.insert_id, error = %error, "Giving up on an event; kept as a dead letter.");
                    return Completion::Dead {
                        id,
                        status,
                        error: format!("gave up after {} attempts: {error}", event.attempts + 1),
                    };
                }
                telemetry::retry_scheduled();
                // Retry-After is honoured as given, not clamped.
                let delay =
                    retry_after.unwrap_or_else(|| self.config.retry.delay(event.attempts + 1));
                tracing::info!(request_id = %event.request_id, insert_id = %event.insert_id, error = %error, retry_in_ms = as_ms(delay), "Delivery failed; will retry.");
                Completion::Retry {
                    id,
                    next_attempt_ms: now.saturating_add(as_ms(delay)),
                    status,
                    error,
                    counts: true,
                }
            }
        }
    }
}

/// An event handed over but not sent, returned to the store due at `due_ms`; its attempts
/// are untouched.
fn give_back(id: i64, due_ms: i64) -> Completion {
    Completion::Retry {
        id,
        next_attempt_ms: due_ms,
        status: None,
        error: "not sent yet: delivery was paused or busy".into(),
        counts: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            give_up_after: Duration::from_secs(3600),
        };
        for _ in 0..200 {
            assert!(policy.delay(1) <= Duration::from_secs(1));
            assert!(policy.delay(3) <= Duration::from_secs(4));
            assert!(policy.delay(40) <= Duration::from_secs(10));
        }
        let big: Vec<Duration> = (0..200).map(|_| policy.delay(40)).collect();
        assert!(
            big.iter().any(|d| *d > Duration::from_secs(5)),
            "full jitter spans the range"
        );
    }
}
