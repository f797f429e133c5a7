//! The Redis sink: writes a batch (dead letters first, then one Redis pipeline) and
//! retries it until it is written, with capped exponential backoff and jitter.
//!
//! A batch is never dropped and never half-acknowledged: the caller stores its offsets
//! only after [`Sink::write_until_done`] returned. Dead letters already delivered are not
//! sent again on a retry.

use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batch;
use crate::cache::{CacheError, CacheLayer};
use crate::config::{BatchConfig, Ttls};
use crate::dead_letter::DeadLetter;

/// Why one write attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Redis(#[from] CacheError),
    #[error("dead-letter topic {topic:?} unavailable: {source}")]
    DeadLetter {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}

/// What writing a batch took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub commands: usize,
    pub attempts: u32,
    /// How long the successful Redis pipeline took.
    pub pipeline: Duration,
}

pub struct Sink {
    cache: CacheLayer,
    dead_letter: Option<DeadLetter>,
    ttls: Ttls,
    retry_initial: Duration,
    retry_max: Duration,
}

impl Sink {
    pub fn new(
        cache: CacheLayer,
        dead_letter: Option<DeadLetter>,
        ttls: Ttls,
        batch: &BatchConfig,
    ) -> Self {
        Self {
            cache,
            dead_letter,
            ttls,
            retry_initial: batch.retry_initial,
            retry_max: batch.retry_max,
        }
    }

    /// Whether rejected messages go to a dead-letter topic.
    pub fn dead_letters(&self) -> bool {
        self.dead_letter.is_some()
    }

    /// Writes the batch, retrying until it succeeds or `abandon` is cancelled (then
    /// `None`: nothing of the batch may be acknowledged). `on_retry` runs after each
    /// failed attempt, with the attempt number.
    pub async fn write_until_done(
        &self,
        batch: &Batch,
        abandon: &CancellationToken,
        mut on_retry: impl FnMut(u32, &SinkError),
    ) -> Option<Written> {
        let mut dead_letters_sent = batch.rejects().is_empty() || self.dead_letter.is_none();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = async {
                if !dead_letters_sent {
                    if let Some(dead_letter) = &self.dead_letter {
                        dead_letter
                            .send_all(batch.rejects())
                            .await
                            .map_err(|source| SinkError::DeadLetter {
                                topic: dead_letter.topic().to_owned(),
                                source,
                            })?;
                    }
                    dead_letters_sent = true;
                }
                let started = Instant::now();
                let commands = self
                    .cache
                    .write(batch.writes(), &self.ttls, Utc::now())
                    .await?;
                Ok::<_, SinkError>((commands, started.elapsed()))
            };
            let result = tokio::select! {
                biased;
                _ = abandon.cancelled() => return None,
                result = attempt => result,
            };
            match result {
                Ok((commands, pipeline)) => {
                    return Some(Written {
                        commands,
                        attempts,
                        pipeline,
                    })
                }
                Err(e) => {
                    on_retry(attempts, &e);
                    tokio::select! {
                        biased;
                        _ = abandon.cancelled() => return None,
                        _ = tokio::time::sleep(self.backoff(attempts)) => {}
                    }
                }
            }
        }
    }

    /// `retry_initial * 2^(attempt-1)`, capped at `retry_max`, then scaled by a random
    /// factor in [0.5, 1.0] so that instances do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .retry_initial
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let capped = exponential.min(self.retry_max);
        capped.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}
