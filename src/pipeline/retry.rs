//! How the pipeline treats a failed batch write, as Vector's `RetryLogic` sits beside its
//! service: the sink asks it after every failed attempt, and it decides what is counted,
//! how loudly it is logged and how long to wait. The sink only loops.
//!
//! Every failure that reaches it is retried with the same batch: a batch is never dropped
//! and never half-acknowledged. These are failures of a server's state (Redis full,
//! read-only, loading or down; the dead-letter topic unreachable), which end by
//! themselves or by an operator's hand. What Redis refuses for the data never reaches
//! here: the sink sets those messages aside. An error that no category above explains
//! (a command refused whole) is logged at ERROR, since only an operator can end it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tracing::{error, warn};

use super::sink::SinkError;
use crate::config::BatchConfig;
use crate::metrics;
use crate::status::Status;

pub(crate) struct RetryLogic {
    initial: Duration,
    max: Duration,
    /// Readiness reads from here that Redis is failing.
    status: Arc<Status>,
}

impl RetryLogic {
    pub(crate) fn new(config: &BatchConfig, status: Arc<Status>) -> Self {
        Self {
            initial: config.retry_initial,
            max: config.retry_max,
            status,
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

    /// Records a failed attempt of a batch of `messages` (in the status, the metrics and
    /// the log) and returns how long to wait before the next one.
    pub(crate) fn failed(&self, attempt: u32, error: &SinkError, messages: usize) -> Duration {
        metrics::batch_retried();
        self.status.write_failed(error.to_string());
        match error {
            SinkError::Redis(e) => {
                self.status.set_redis_ok(false);
                metrics::redis_error(e.kind_label());
            }
            SinkError::DeadLetter { .. } => metrics::dead_letter_error(),
        }
        if Self::is_retriable(error) {
            warn!(attempt, %error, messages, "batch write failed; retrying the same batch");
        } else {
            error!(attempt, %error, messages, "Redis refuses the batch; retrying until an operator fixes it");
        }
        self.backoff(attempt)
    }

    /// Records that a batch went through.
    pub(crate) fn succeeded(&self) {
        self.status.write_succeeded();
        self.status.set_redis_ok(true);
    }

    /// `initial * 2^(attempt-1)`, capped at `max`, then scaled by a random factor in
    /// [0.5, 1.0] so that instances do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
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
        let retry = RetryLogic::new(&config, Arc::default());
        for (attempt, full) in [(1, 100), (2, 200), (4, 800), (5, 1_000), (40, 1_000)] {
            let delay = retry.backoff(attempt);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }
}
