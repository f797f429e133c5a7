//! The Redis sink: writes a batch (dead letters first, then one Redis pipeline) and
//! retries it until it is written, waiting as [`RetryLogic`] says between attempts.
//!
//! A batch is never dropped and never half-acknowledged: the caller stores its offsets
//! only after [`Sink::write_until_done`] returned. Dead letters already delivered are not
//! sent again on a retry. Dropping the future abandons the batch, unacknowledged.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::batch::Batch;
use super::dead_letter::DeadLetter;
use super::retry::RetryLogic;
use crate::cache::{CacheError, CacheLayer};
use crate::config::Ttls;

/// Why one write attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
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
pub(crate) struct Written {
    pub attempts: u32,
    /// How long the successful Redis pipeline took.
    pub pipeline: Duration,
}

pub(crate) struct Sink {
    cache: CacheLayer,
    dead_letter: Option<DeadLetter>,
    ttls: Ttls,
    retry: RetryLogic,
}

impl Sink {
    pub(crate) fn new(
        cache: CacheLayer,
        dead_letter: Option<DeadLetter>,
        ttls: Ttls,
        retry: RetryLogic,
    ) -> Self {
        Self {
            cache,
            dead_letter,
            ttls,
            retry,
        }
    }

    /// Whether rejected messages go to a dead-letter topic.
    pub(crate) fn dead_letters(&self) -> bool {
        self.dead_letter.is_some()
    }

    /// Writes the batch, retrying until it succeeds. `on_failure` runs after each failed
    /// attempt, before the wait.
    pub(crate) async fn write_until_done(
        &self,
        batch: &Batch,
        mut on_failure: impl FnMut(),
    ) -> Written {
        let mut dead_letters_sent = batch.rejects().is_empty() || self.dead_letter.is_none();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(batch, &mut dead_letters_sent).await {
                Ok(pipeline) => return Written { attempts, pipeline },
                Err(e) => {
                    let wait = self.retry.failed(attempts, &e, batch.len());
                    on_failure();
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt: the dead letters not sent yet, then the pipeline. Returns how long
    /// the pipeline took.
    async fn attempt(
        &self,
        batch: &Batch,
        dead_letters_sent: &mut bool,
    ) -> Result<Duration, SinkError> {
        if !*dead_letters_sent {
            if let Some(dead_letter) = &self.dead_letter {
                dead_letter
                    .send_all(batch.rejects())
                    .await
                    .map_err(|source| SinkError::DeadLetter {
                        topic: dead_letter.topic().to_owned(),
                        source,
                    })?;
            }
            *dead_letters_sent = true;
        }
        let started = Instant::now();
        self.cache
            .write(batch.writes(), &self.ttls, Utc::now())
            .await?;
        Ok(started.elapsed())
    }
}
