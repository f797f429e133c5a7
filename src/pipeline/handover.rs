//! Handing partitions over to another member: a batch of a revoked partition never lands
//! after the new owner's writes.
//!
//! Window fields and the trend details of one window are last-writer-wins, so a batch
//! written after its partition moved would roll back what the new owner wrote since (it
//! reads the partition again from the group's commit, and goes on past it). The group
//! hands a partition over only once the rebalance callback has returned, so the callback
//! settles the batch in flight before returning ([`Handover::revoke`]): a batch holding
//! a partition revoked makes no attempt after that, and the callback waits, within a
//! bound, for the attempt under way to end. That batch is then given up whole,
//! unacknowledged, and the loop reads the partitions it kept again from where their
//! writes stand (the batch being collected is dropped the same way).
//!
//! The bound is how long one attempt can take (`redis.connect_timeout_ms` and
//! `redis.response_timeout_ms`): an attempt that outlasts it is told at ERROR, and
//! counted, as the one case left where an older value may land after a newer one.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{error, warn};

use crate::events;

/// The write in flight, as the rebalance callback and the sink share it.
#[derive(Debug, Default)]
struct InFlight {
    /// The partitions the batch being written holds; empty between writes.
    partitions: Vec<(String, i32)>,
    /// An attempt is under way: its pipeline may be reaching Redis now.
    attempting: bool,
    /// A revocation took partitions of the batch: it makes no attempt more.
    abandoned: bool,
}

/// Between the rebalance callback (a librdkafka thread of the consumer's poll) and the
/// write in flight (a task of its own).
#[derive(Debug)]
pub(crate) struct Handover {
    in_flight: Mutex<InFlight>,
    /// Signalled when an attempt ends.
    attempt_ended: Condvar,
    /// The longest a revocation waits for an attempt under way.
    bound: Duration,
}

/// What a revocation did to the write in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoked {
    /// The batch in flight holds none of the partitions revoked, or there is none.
    NotHeld,
    /// The batch is given up: no attempt of it is under way or will be.
    Abandoned,
    /// The batch is given up, but an attempt was still under way at the bound.
    Unfinished,
}

/// An attempt under way; dropping it (the attempt ended, or was cancelled) tells a
/// revocation waiting for it.
pub(crate) struct Attempt<'a>(&'a Handover);

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.0.lock().attempting = false;
        self.0.attempt_ended.notify_all();
    }
}

impl Handover {
    pub(crate) fn new(bound: Duration) -> Self {
        Self {
            in_flight: Mutex::default(),
            attempt_ended: Condvar::new(),
            bound,
        }
    }

    /// A batch holding these partitions is handed to a write.
    pub(crate) fn hold(&self, partitions: Vec<(String, i32)>) {
        *self.lock() = InFlight {
            partitions,
            ..InFlight::default()
        };
    }

    /// The write in flight ended, written or given up.
    pub(crate) fn release(&self) {
        *self.lock() = InFlight::default();
    }

    /// Starts an attempt at the batch in flight, unless a revocation gave it up.
    pub(crate) fn attempt(&self) -> Option<Attempt<'_>> {
        let mut in_flight = self.lock();
        if in_flight.abandoned {
            return None;
        }
        in_flight.attempting = true;
        Some(Attempt(self))
    }

    /// Whether a revocation gave up the batch in flight.
    #[cfg(test)]
    fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// The group revokes these partitions: when the batch in flight holds any, it is
    /// given up, and this waits (blocking its thread, within the bound) until no attempt
    /// of it is under way. Called by the rebalance callback, before the partitions move.
    pub(crate) fn revoke(&self, revoked: &[(String, i32)]) -> Revoked {
        let mut in_flight = self.lock();
        if !in_flight.partitions.iter().any(|p| revoked.contains(p)) {
            return Revoked::NotHeld;
        }
        in_flight.abandoned = true;
        let (in_flight, waited) = blocking(|| {
            self.attempt_ended
                .wait_timeout_while(in_flight, self.bound, |f| f.attempting)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        let outcome = if waited.timed_out() {
            error!(
                bound_ms = self.bound.as_millis() as u64,
                partitions = in_flight.partitions.len(),
                "a batch of partitions revoked was still being written at the bound; it may land after the new owner's writes and roll values back until their TTL"
            );
            Revoked::Unfinished
        } else {
            warn!(
                partitions = in_flight.partitions.len(),
                "a batch of partitions revoked is given up unwritten; their new owner writes them, and this member reads the partitions it kept again"
            );
            Revoked::Abandoned
        };
        events::batch_given_up(outcome == Revoked::Unfinished);
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `wait` on a runtime worker that blocks: the worker's other tasks (the write
/// being waited for among them) move to another thread meanwhile.
fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn partitions(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    #[test]
    fn a_revocation_of_other_partitions_leaves_the_batch_alone() {
        let handover = Handover::new(Duration::from_secs(1));
        handover.hold(partitions(&[("t", 0)]));
        assert_eq!(handover.revoke(&partitions(&[("t", 1)])), Revoked::NotHeld);
        assert!(handover.attempt().is_some());
    }

    #[test]
    fn a_revoked_batch_makes_no_attempt_more() {
        let handover = Handover::new(Duration::from_secs(1));
        handover.hold(partitions(&[("t", 0), ("t", 1)]));
        assert_eq!(
            handover.revoke(&partitions(&[("t", 1)])),
            Revoked::Abandoned
        );
        assert!(handover.is_abandoned());
        assert!(handover.attempt().is_none());
        // The next batch starts afresh.
        handover.release();
        handover.hold(partitions(&[("t", 0)]));
        assert!(handover.attempt().is_some());
    }

    #[test]
    fn a_revocation_waits_for_the_attempt_under_way() {
        let handover = Arc::new(Handover::new(Duration::from_secs(30)));
        handover.hold(partitions(&[("t", 0)]));
        let attempt = handover.attempt().expect("not given up");
        let revocation = std::thread::spawn({
            let handover = Arc::clone(&handover);
            move || handover.revoke(&partitions(&[("t", 0)]))
        });
        // Given up under the lock, which the revocation releases only to wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !handover.is_abandoned() {
            assert!(std::time::Instant::now() < deadline, "never given up");
            std::thread::yield_now();
        }
        assert!(
            !revocation.is_finished(),
            "returned with an attempt under way"
        );
        drop(attempt);
        assert_eq!(revocation.join().unwrap(), Revoked::Abandoned);
    }

    #[test]
    fn an_attempt_that_outlasts_the_bound_is_told() {
        let handover = Handover::new(Duration::from_millis(10));
        handover.hold(partitions(&[("t", 0)]));
        let _attempt = handover.attempt().expect("not given up");
        assert_eq!(
            handover.revoke(&partitions(&[("t", 0)])),
            Revoked::Unfinished
        );
    }
}
