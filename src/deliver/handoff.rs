//! Events handed from intake straight to delivery. An event stored under a [`Claim`] is
//! already leased to this process, so delivery takes it from memory instead of leasing it back
//! from the store: no lease write, no read of the payload it was just given. The store keeps
//! the lease, so an event that never makes it out of memory (a crash, a full queue of work)
//! falls due when its lease runs out, exactly like an event whose worker stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::DeliveryHealth;
use crate::store::{Claim, Leased, now_ms};

/// An event stored leased to us until `until_ms`, waiting for a delivery worker.
#[derive(Debug)]
pub(super) struct Handed {
    pub(super) event: Leased,
    pub(super) until_ms: i64,
}

impl Handed {
    /// Whether enough of the lease is left to start a delivery: past half of it, the event is
    /// left for the lease path, so that a delivery never runs while the lease lapses and
    /// another worker could take the same event.
    pub(super) fn fresh(&self, lease: Duration, now_ms: i64) -> bool {
        let half = i64::try_from(lease.as_millis() / 2).unwrap_or(i64::MAX);
        self.until_ms.saturating_sub(now_ms) > half
    }
}

/// Intake's side: room for new events in delivery's queue, and a wake-up for events stored
/// without a claim. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    queue: mpsc::Sender<Handed>,
    wake: Arc<Notify>,
    owner: String,
    lease: Duration,
    health: Arc<DeliveryHealth>,
}

impl Handoff {
    /// A handoff into a queue of `capacity` events; the receiver goes to the dispatcher.
    pub(super) fn new(
        capacity: usize,
        owner: String,
        lease: Duration,
        health: Arc<DeliveryHealth>,
    ) -> (Self, mpsc::Receiver<Handed>) {
        let (queue, received) = mpsc::channel(capacity.max(1));
        let handoff = Self {
            queue,
            wake: Arc::new(Notify::new()),
            owner,
            lease,
            health,
        };
        (handoff, received)
    }

    /// Room for `events` new events, if delivery can take them now: not while it is paused
    /// (key refused, throttled) or its queue is full — those events are stored due instead,
    /// and the lease path finds them.
    pub fn reserve(&self, events: usize) -> Option<Reservation> {
        if events == 0 || self.health.key_refused() {
            return None;
        }
        let now = now_ms();
        if self.health.throttled_until_ms() > now {
            return None;
        }
        // Owned places, so that a reservation can outlive the request that made it (see
        // `Intake::receive`); places already taken are given back if one is missing.
        let permits = (0..events)
            .map(|_| self.queue.clone().try_reserve_owned().ok())
            .collect::<Option<Vec<_>>>()?;
        let until_ms = now.saturating_add(i64::try_from(self.lease.as_millis()).ok()?);
        Some(Reservation {
            permits,
            claim: Claim {
                owner: self.owner.clone(),
                until_ms,
            },
        })
    }

    /// New events were stored due now: delivery should look for them.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivery's side of [`Handoff::wake`].
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// Places held in delivery's queue for one webhook's events, and the lease to store them under.
pub struct Reservation {
    permits: Vec<mpsc::OwnedPermit<Handed>>,
    claim: Claim,
}

impl Reservation {
    /// The lease to store the events under.
    pub fn claim(&self) -> Claim {
        self.claim.clone()
    }

    /// Queues the events the store took under [`Reservation::claim`]; places left over
    /// (duplicates) are given back.
    pub fn hand_over(self, claimed: Vec<Leased>) {
        let until_ms = self.claim.until_ms;
        for (permit, event) in self.permits.into_iter().zip(claimed) {
            permit.send(Handed { event, until_ms });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64) -> Leased {
        Leased {
            id,
            source: "stripe".into(),
            insert_id: format!("i{id}"),
            payload: "{}".into(),
            attempts: 0,
            created_at_ms: 0,
            request_id: "r".into(),
        }
    }

    fn handoff(capacity: usize) -> (Handoff, mpsc::Receiver<Handed>, Arc<DeliveryHealth>) {
        let health = Arc::new(DeliveryHealth::default());
        let (handoff, received) = Handoff::new(
            capacity,
            "me".into(),
            Duration::from_secs(60),
            health.clone(),
        );
        (handoff, received, health)
    }

    #[test]
    fn a_full_queue_refuses_a_reservation_until_events_leave_it() {
        let (handoff, mut received, _) = handoff(3);
        let first = handoff.reserve(2).expect("room for two");
        assert!(handoff.reserve(2).is_none(), "only one place left");
        let claim = first.claim();
        assert_eq!(claim.owner, "me");
        first.hand_over(vec![event(1), event(2)]);
        assert_eq!(received.try_recv().map(|h| h.event.id).ok(), Some(1));
        assert_eq!(
            received.try_recv().map(|h| h.until_ms).ok(),
            Some(claim.until_ms)
        );
        assert!(
            handoff.reserve(3).is_some(),
            "delivered events free their places"
        );
    }

    #[test]
    fn places_left_over_by_duplicates_are_given_back() {
        let (handoff, mut received, _) = handoff(2);
        handoff.reserve(2).expect("room").hand_over(vec![event(7)]);
        assert!(received.try_recv().is_ok());
        assert!(handoff.reserve(2).is_some(), "both places free again");
    }

    #[test]
    fn nothing_is_claimed_while_delivery_is_paused() {
        let (handoff, _received, health) = handoff(8);
        health
            .throttled_until_ms
            .store(now_ms() + 60_000, std::sync::atomic::Ordering::Relaxed);
        assert!(handoff.reserve(1).is_none(), "throttled");
        health
            .throttled_until_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
        health
            .key_refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(handoff.reserve(1).is_none(), "key refused");
        assert!(handoff.reserve(0).is_none(), "no events, no claim");
    }

    #[test]
    fn an_event_past_half_its_lease_is_left_for_the_lease_path() {
        let lease = Duration::from_secs(60);
        let handed = Handed {
            event: event(1),
            until_ms: 100_000,
        };
        assert!(handed.fresh(lease, 40_000 - 1));
        assert!(!handed.fresh(lease, 70_000), "30 s left of 60");
    }
}
