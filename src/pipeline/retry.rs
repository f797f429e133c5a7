//! How the pipeline treats a failed batch write, as Vector's `RetryLogic` sits beside its
//! service: the sink asks it after every failed attempt whether the failure can end by
//! itself (which decides how loudly it is told) and how long to wait. The sink only
//! loops.
//!
//! Every failure that reaches it is retried with the same batch: a batch is never dropped
//! and never half-acknowledged. These are failures of a server's state (Redis full,
//! read-only, loading or down; the dead-letter topic unreachable), which end by
//! themselves or by an operator's hand. What Redis refuses for the data never reaches
//! here: the sink sets those messages aside. An error that no category above explains
//! (a command refused whole) is logged at ERROR, since only an operator can end it.

use std::time::Duration;

use rand::Rng;

use super::SinkError;
use crate::config::BatchConfig;
use crate::events::BatchFailure;

pub(crate) struct RetryLogic {
    initial: Duration,
    max: Duration,
}

impl RetryLogic {
    pub(super) fn new(config: &BatchConfig) -> Self {
        Self {
            initial: config.retry_initial,
            max: config.retry_max,
        }
    }

    /// Whether the failure can end without anyone acting: the server or the topic comes
    /// back. A command that Redis refuses keeps being refused until someone fixes it.
    pub(crate) fn is_retriable(error: &SinkError) -> bool {
        match error {
            SinkError::Redis(e) => e.is_retryable(),
            SinkError::DeadLetter { .. } => true,
        }
    }

    /// What the failure is, for the event that tells it.
    pub(crate) fn failure(error: &SinkError) -> BatchFailure {
        match error {
            SinkError::Redis(e) => BatchFailure::Redis {
                kind: e.kind_label(),
                retriable: Self::is_retriable(error),
            },
            SinkError::DeadLetter { .. } => BatchFailure::DeadLetter,
        }
    }

    /// `initial * 2^(attempt-1)`, capped at `max`, then scaled by a random factor in
    /// [0.5, 1.0] so that instances do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .initial
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let capped = exponential.min(self.max);
        capped.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let config = BatchConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(1_000),
            ..BatchConfig::default()
        };
        let retry = RetryLogic::new(&config);
        for (attempt, full) in [(1, 100), (2, 200), (4, 800), (5, 1_000), (40, 1_000)] {
            let delay = retry.backoff(attempt);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }
}
