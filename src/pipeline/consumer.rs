//! The Kafka side: building the group consumer, its context (which logs rebalances and
//! commits), and storing offsets.
//!
//! Offsets follow rust-rdkafka's `at_least_once` example: `enable.auto.offset.store` is
//! off, the daemon stores an offset only after the batch that holds its message was
//! written, and librdkafka commits the stored offsets every `kafka.commit_interval_ms`.
//! On revocation the stored offsets are committed before the partitions move, and on
//! shutdown they are committed synchronously.

use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::health::ErrorReporter;
use super::kafka;
use crate::config::Config;
use crate::metrics;
use crate::status::Status;

pub(crate) type GroupConsumer = StreamConsumer<GroupContext>;

/// Logs what librdkafka reports, and tracks whether the brokers are reachable.
pub(crate) struct GroupContext {
    /// Rebalances set the assignment size here.
    status: Arc<Status>,
    /// Counts and logs errors, and tells readiness when the consumer cannot fetch.
    errors: ErrorReporter,
}

impl GroupContext {
    pub(crate) fn errors(&self) -> &ErrorReporter {
        &self.errors
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!(facility, "librdkafka: {message}")
            }
            // librdkafka's "errors" (a refused connection, say) are recovered by itself.
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                warn!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(facility, "librdkafka: {message}"),
        }
    }

    /// librdkafka's statistics, every `statistics.interval.ms`: the consumer lag, and
    /// whether a broker is up, so that readiness follows the brokers and not the traffic:
    /// an idle instance is ready again as soon as a broker is back.
    fn stats(&self, statistics: Statistics) {
        // Bootstrap entries have no node id yet; a known broker that is UP is reachable.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if up {
            self.errors.recovered();
        }
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a negative lag is unknown.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    metrics::consumer_lag(topic, *partition, stats.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                info!(partitions = %describe(partitions), "partitions revoked; committing stored offsets");
                metrics::lag_revoked(
                    partitions
                        .elements()
                        .iter()
                        .map(|e| (e.topic(), e.partition())),
                );
                // Whatever was written before the partitions move is committed now, so the
                // next owner starts after it.
                if let Err(e) = commit_stored(consumer) {
                    warn!(error = %e, "commit on revocation failed; the next owner replays from the last commit");
                }
            }
            Rebalance::Assign(partitions) => {
                info!(partitions = %describe(partitions), "partitions assigned")
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        self.errors.recovered();
        match consumer.assignment() {
            Ok(assignment) => self.status.set_assigned(assignment.count()),
            Err(e) => warn!(error = %e, "cannot read the assignment after a rebalance"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.errors.recovered();
                metrics::offsets_committed(true);
                debug!(offsets = %describe(offsets), "offsets committed")
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                metrics::offsets_committed(false);
                warn!(error = %e, offsets = %describe(offsets), "offset commit failed; retried at the next interval")
            }
        }
    }
}

/// `topic[partition]@offset, ...` for logs.
fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|e| match e.offset().to_raw() {
            Some(offset) if offset >= 0 => format!("{}[{}]@{offset}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates the group consumer and subscribes it to the three source topics.
pub(crate) fn subscribe(
    config: &Config,
    topics: &[&str],
    status: Arc<Status>,
) -> KafkaResult<Arc<GroupConsumer>> {
    let context = GroupContext {
        errors: ErrorReporter::new(Arc::clone(&status), config.kafka.bootstrap_servers.clone()),
        status,
    };
    let consumer: GroupConsumer = kafka::consumer_config(config).create_with_context(context)?;
    consumer.subscribe(topics)?;
    Ok(Arc::new(consumer))
}

/// Commits the stored offsets synchronously. Having nothing new to commit is success.
pub(crate) fn commit_stored<C: Consumer<GroupContext>>(consumer: &C) -> KafkaResult<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        other => other,
    }
}

/// Stores, in one call, the offset after the last written message of each partition,
/// for the next commit. A partition that moved to another member meanwhile is skipped:
/// its new owner replays from the last commit, which the idempotent writes make harmless.
pub(crate) fn store_offsets<'a>(
    consumer: &GroupConsumer,
    offsets: impl Iterator<Item = (&'a str, i32, i64)>,
) {
    let mut next = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        // Kafka commits the offset of the next message to read.
        if let Err(e) = next.add_partition_offset(topic, partition, Offset::Offset(offset + 1)) {
            warn!(topic, partition, offset, error = %e, "offset not stored");
        }
    }
    if next.count() == 0 {
        return;
    }
    if let Err(e) = consumer.store_offsets(&next) {
        debug!(offsets = %describe(&next), error = %e, "offsets not stored (partitions no longer assigned)");
        return;
    }
    for element in next.elements() {
        if let Err(e) = element.error() {
            debug!(topic = element.topic(), partition = element.partition(), error = %e, "offset not stored (partition no longer assigned)");
        }
    }
}

/// Pauses or resumes every assigned partition. While paused the fetcher stops and
/// librdkafka drops what it had prefetched; resuming fetches from the message after the
/// last one the daemon received, so nothing is skipped.
pub(crate) fn set_paused(consumer: &GroupConsumer, paused: bool) {
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(e) => {
            warn!(error = %e, "cannot read the assignment to pause or resume it");
            return;
        }
    };
    let result = if paused {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => info!(
            paused,
            partitions = assignment.count(),
            "fetching {}",
            if paused { "paused" } else { "resumed" }
        ),
        Err(e) => warn!(error = %e, paused, "pause/resume failed"),
    }
}
