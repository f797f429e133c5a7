//! The Redis sink: writes a batch (its dead letters and one Redis pipeline, sent
//! together) and retries it until it is written, waiting as [`RetryLogic`] says between
//! attempts.
//!
//! A batch is never dropped and never half-acknowledged: the caller stores its offsets
//! only after [`Sink::write_until_done`] returned. What Redis refuses for its data is set
//! aside rather than retried: the messages behind the refused writes go to the
//! dead-letter topic with reason `redis_refused`, and the rest of the batch, which Redis
//! applied, is acknowledged. Dead letters already delivered are not sent again on a
//! retry. Dropping the future abandons the batch, unacknowledged, and so does a
//! revocation of one of its partitions ([`Handover`]): then it makes no attempt more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{error, warn};

use super::batch::{Batch, Rejected, TopicKinds};
use super::dead_letter::{DeadLetter, Fate};
use super::handover::{Attempt, Handover};
use super::retry::RetryLogic;
use super::SinkError;
use crate::cache::{CacheLayer, Marker};
use crate::events;
use crate::status::Status;

/// What writing a batch took.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) attempts: u32,
    /// How long the successful Redis pipeline took.
    pub(crate) pipeline: Duration,
    /// The valid messages whose writes Redis refused for their data.
    pub(crate) refused: Vec<Rejected>,
    /// Whether setting the group's marker with the batch found that Redis lost what
    /// this instance wrote before.
    pub(crate) data_lost: bool,
}

pub(crate) struct Sink {
    cache: CacheLayer,
    dead_letter: Option<DeadLetter>,
    kinds: TopicKinds,
    retry: RetryLogic,
    /// Set with every batch, to tell that Redis lost what was written before.
    marker: Arc<Marker>,
    /// Whether setting the marker failed last time, not to log it per batch.
    marker_failing: AtomicBool,
    /// Readiness reads from here that writes are failing.
    status: Arc<Status>,
    /// The write in flight as the rebalance callback sees it.
    handover: Arc<Handover>,
}

/// What the attempts at one batch have done so far.
struct Progress {
    /// The fate of each rejected message's dead letter.
    rejects: Vec<Fate>,
    /// The refused messages and the fate of their dead letters, once Redis refused any.
    refused: Vec<Rejected>,
    refused_fates: Vec<Fate>,
    /// Whether an attempt found the marker gone.
    data_lost: bool,
}

impl Sink {
    pub(super) fn new(
        cache: CacheLayer,
        dead_letter: Option<DeadLetter>,
        kinds: TopicKinds,
        retry: RetryLogic,
        marker: Arc<Marker>,
        status: Arc<Status>,
        handover: Arc<Handover>,
    ) -> Self {
        Self {
            cache,
            dead_letter,
            kinds,
            retry,
            marker,
            marker_failing: AtomicBool::new(false),
            status,
            handover,
        }
    }

    /// Whether rejected messages go to a dead-letter topic.
    pub(crate) fn dead_letters(&self) -> bool {
        self.dead_letter.is_some()
    }

    /// The batch is handed to a write: a revocation of its partitions gives it up from
    /// now on. Called before the write's task runs, so that no revocation falls between.
    pub(crate) fn hold(&self, batch: &Batch) {
        self.handover.hold(
            batch
                .offsets()
                .map(|(topic, partition, _)| (topic.to_owned(), partition))
                .collect(),
        );
    }

    /// Writes the batch held, retrying until it succeeds, or until a revocation of its
    /// partitions gives it up (`None`). `on_failure` runs after each failed attempt,
    /// before the wait.
    pub(crate) async fn write_until_done(
        &self,
        batch: &Batch,
        mut on_failure: impl FnMut(),
    ) -> Option<Written> {
        let mut progress = Progress {
            rejects: vec![Fate::Pending; batch.rejects().len()],
            refused: Vec::new(),
            refused_fates: Vec::new(),
            data_lost: false,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(attempt) = self.handover.attempt() else {
                self.handover.release();
                return None;
            };
            match self.attempt(batch, &mut progress, attempt).await {
                Ok(pipeline) => {
                    self.handover.release();
                    return Some(Written {
                        attempts,
                        pipeline,
                        refused: progress.refused,
                        data_lost: progress.data_lost,
                    });
                }
                Err(e) => {
                    let failure = RetryLogic::failure(&e);
                    events::batch_failed(&self.status, attempts, batch.len(), &e, failure);
                    on_failure();
                    tokio::time::sleep(self.retry.backoff(attempts)).await;
                }
            }
        }
    }

    /// One attempt: the dead letters not sent yet, the pipeline and the marker, side by
    /// side, then the dead letters of what Redis refused. Returns how long the pipeline
    /// took. `attempt` is let go once the pipeline is answered: a revocation waits for
    /// the pipeline only, which is what could overwrite the new owner's values.
    ///
    /// Neither waits for the other: a dead letter's delivery report takes the producer's
    /// linger and a broker round trip, which would otherwise hold back the pipeline of
    /// nearly every batch. Both always run to the end, so that the fates of the dead
    /// letters delivered are kept for a retry even when the pipeline failed.
    async fn attempt(
        &self,
        batch: &Batch,
        progress: &mut Progress,
        attempt: Attempt<'_>,
    ) -> Result<Duration, SinkError> {
        let pipeline = async move {
            let _attempt = attempt;
            let started = Instant::now();
            let report = self
                .cache
                .write(batch.writes(), batch.ttls(), Utc::now())
                .await;
            (report, started.elapsed())
        };
        let (sent, (report, elapsed), marked) = tokio::join!(
            self.send_dead_letters(batch.rejects(), &mut progress.rejects),
            pipeline,
            self.cache.touch_marker(&self.marker)
        );
        match marked {
            // Found once: kept for the attempt that succeeds.
            Ok(lost) => {
                progress.data_lost |= lost;
                self.marker_failing.store(false, Ordering::Relaxed);
            }
            // The marker only detects a loss: it never holds back the data. A Redis
            // that cannot set it (an ACL without `~markers:*`) is logged once.
            Err(e) => {
                if !self.marker_failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        redis_marker = self.marker.key(),
                        error = %e,
                        "cannot set the group's marker key: a Redis that loses its data goes unnoticed"
                    );
                }
            }
        }
        sent?;
        let report = report?;
        if !report.refused.is_empty() && progress.refused.is_empty() {
            progress.refused = batch.refused(&report.refused, self.cache.keys(), &self.kinds);
            progress.refused_fates = vec![Fate::Pending; progress.refused.len()];
            log_refused(&report.refused, &progress.refused);
        }
        self.send_dead_letters(&progress.refused, &mut progress.refused_fates)
            .await?;
        Ok(elapsed)
    }

    async fn send_dead_letters(
        &self,
        letters: &[Rejected],
        fates: &mut [Fate],
    ) -> Result<(), SinkError> {
        let Some(dead_letter) = &self.dead_letter else {
            return Ok(());
        };
        dead_letter
            .send_all(letters, fates)
            .await
            .map_err(|source| SinkError::DeadLetter {
                topic: dead_letter.topic().to_owned(),
                source,
            })
    }
}

/// One ERROR line for what Redis refused, and a WARN line per message set aside, with
/// where it came from, as for a rejected message.
fn log_refused(refusals: &[crate::cache::Refusal], refused: &[Rejected]) {
    let first = &refusals[0];
    error!(
        writes = refusals.len(),
        messages = refused.len(),
        key = %String::from_utf8_lossy(&first.key),
        error = %first.error,
        "Redis refuses writes for their data; their messages are set aside as dead letters and the rest of the batch is written"
    );
    for message in refused {
        warn!(
            topic = message.origin.topic,
            partition = message.origin.partition,
            offset = message.origin.offset,
            reason = message.error.reason.as_str(),
            "message refused by Redis: {}",
            message.error
        );
    }
}
