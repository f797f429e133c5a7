//! The Kafka side: building the group consumer, its context (which logs rebalances and
//! commits), and storing offsets.
//!
//! Offsets follow rust-rdkafka's `at_least_once` example: `enable.auto.offset.store` is
//! off, the daemon stores an offset only after the batch that holds its message was
//! written, and librdkafka commits the stored offsets every `kafka.commit_interval_ms`.
//! On revocation the stored offsets of the partitions revoked (only those: with
//! `cooperative-sticky` a rebalance moves some partitions and leaves the rest fetching)
//! are committed before they move, and on shutdown every stored offset is committed
//! synchronously, before the consumer leaves the group by the shutdown's deadline
//! ([`close`]). A batch stores offsets only for the partitions this member held without
//! a break since the batch was handed to its write: a partition revoked meanwhile, even
//! one assigned back since, has moved on under its other owner, and an offset stored
//! now would commit it back.
//!
//! Pausing and resuming live here too, with the state they share with rebalances: a
//! partition assigned while the daemon is paused is paused at once, and resuming seeks
//! every partition back to where the loop stands ([`Positions`]) rather than trusting
//! librdkafka's fetch position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use super::position::Positions;
use crate::config::{AutoOffsetReset, Config};
use crate::events;
use crate::kafka;
use crate::status::Status;

pub(crate) type GroupConsumer = StreamConsumer<GroupContext>;

/// Logs what librdkafka reports, and tracks whether the brokers are reachable.
pub(crate) struct GroupContext {
    /// Rebalances set the assignment size here.
    status: Arc<Status>,
    /// Counts and logs errors, and tells readiness when the consumer cannot fetch.
    errors: ErrorReporter,
    /// Whether fetching is paused because writes are failing; a rebalance pauses what it
    /// assigns while it is.
    paused: AtomicBool,
    /// Rebalances so far, for the loop to notice one and forget the partitions it lost.
    rebalances: AtomicU64,
    /// Each partition's high watermark (its last stable offset, under read_committed), as
    /// the last statistics reported it: how far the loop should have got.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// The committed offsets of the partitions just assigned, where each is expected to
    /// start, for the loop to take into its positions before their first message.
    starts: Mutex<Vec<(String, i32, i64)>>,
    /// The partitions this member holds: since which rebalance, and the offset stored.
    held: Mutex<HashMap<(String, i32), Holding>>,
}

/// One partition this member holds.
#[derive(Debug, Clone, Copy)]
struct Holding {
    /// The rebalance (the count of [`GroupContext::rebalances`]) that assigned it.
    since: u64,
    /// The offset stored last, the next one to read, for the commit on its revocation.
    stored: Option<i64>,
}

impl GroupContext {
    pub(crate) fn errors(&self) -> &ErrorReporter {
        &self.errors
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(crate) fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// The start offsets of the partitions assigned since the last call.
    pub(crate) fn take_starts(&self) -> Vec<(String, i32, i64)> {
        self.starts
            .lock()
            .map(|mut starts| std::mem::take(&mut *starts))
            .unwrap_or_default()
    }

    /// The high watermarks of the last statistics.
    pub(crate) fn high_watermarks(&self) -> HashMap<(String, i32), i64> {
        self.high_watermarks
            .lock()
            .map(|hw| hw.clone())
            .unwrap_or_default()
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
        let mut high_watermarks = HashMap::new();
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a negative lag is unknown.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    events::consumer_lag(topic, *partition, stats.consumer_lag);
                }
                let end = if stats.ls_offset >= 0 {
                    stats.ls_offset
                } else {
                    stats.hi_offset
                };
                if *partition >= 0 && end >= 0 {
                    high_watermarks.insert((topic.clone(), *partition), end);
                }
            }
        }
        if let Ok(mut hw) = self.high_watermarks.lock() {
            *hw = high_watermarks;
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }
}

impl GroupContext {
    /// Notes the partitions just assigned, by the rebalance that assigned them.
    fn hold(&self, partitions: &TopicPartitionList, since: u64) {
        if let Ok(mut held) = self.held.lock() {
            for e in partitions.elements() {
                let holding = Holding {
                    since,
                    stored: None,
                };
                held.insert((e.topic().to_owned(), e.partition()), holding);
            }
        }
    }

    /// Forgets the partitions revoked, and returns the offsets stored for them.
    fn let_go(&self, partitions: &TopicPartitionList) -> TopicPartitionList {
        let mut stored = TopicPartitionList::new();
        let Ok(mut held) = self.held.lock() else {
            return stored;
        };
        for e in partitions.elements() {
            let holding = held.remove(&(e.topic().to_owned(), e.partition()));
            if let Some(offset) = holding.and_then(|h| h.stored) {
                add(
                    &mut stored,
                    e.topic(),
                    e.partition(),
                    Offset::Offset(offset),
                );
            }
        }
        stored
    }

    /// Reads where the partitions just assigned start (their committed offsets), so that
    /// their first delivered offsets are checked too: a new owner that starts inside a
    /// record batch on tansu is delivered the batches after it, or nothing. A partition
    /// without a commit starts at `kafka.auto_offset_reset`, wherever that is.
    fn note_starts(&self, consumer: &BaseConsumer<Self>, partitions: &TopicPartitionList) {
        let committed = match consumer.committed_offsets(partitions.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed,
            Err(e) => {
                warn!(error = %e, "cannot read where the partitions just assigned start; their first offsets are taken as they come");
                return;
            }
        };
        let starts = committed
            .elements()
            .into_iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.topic().to_owned(), e.partition(), offset)),
                _ => None,
            });
        if let Ok(mut noted) = self.starts.lock() {
            noted.extend(starts);
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                info!(partitions = %describe(partitions), "partitions revoked; committing their stored offsets");
                events::lag_revoked(
                    partitions
                        .elements()
                        .iter()
                        .map(|e| (e.topic(), e.partition())),
                );
                // Whatever was written of them is committed before they move, so the next
                // owner starts after it.
                let stored = self.let_go(partitions);
                if stored.count() > 0 {
                    if let Err(e) = consumer.commit(&stored, CommitMode::Sync) {
                        warn!(error = %e, offsets = %describe(&stored), "commit on revocation failed; the next owner replays from the last commit");
                    }
                }
            }
            Rebalance::Assign(partitions) => {
                info!(partitions = %describe(partitions), "partitions assigned")
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.errors.recovered();
        let rebalance_count = self.rebalances.fetch_add(1, Ordering::Relaxed) + 1;
        if let Rebalance::Assign(partitions) = rebalance {
            self.hold(partitions, rebalance_count);
        }
        // A partition starts fetching when it is assigned, paused or not: while writes
        // fail, what arrives would pile up in a batch that cannot be written.
        if let Rebalance::Assign(partitions) = rebalance {
            self.note_starts(consumer, partitions);
            if self.is_paused() {
                match consumer.pause(partitions) {
                    Ok(()) => {
                        info!(partitions = %describe(partitions), "assigned while writes are failing; paused")
                    }
                    Err(e) => warn!(error = %e, "cannot pause the partitions just assigned"),
                }
            }
        }
        match consumer.assignment() {
            Ok(assignment) => {
                if !matches!(rebalance, Rebalance::Error(_)) {
                    let revoke = matches!(rebalance, Rebalance::Revoke(_));
                    events::rebalanced(revoke, assignment.count());
                }
                self.status.set_assigned(assignment.count());
            }
            Err(e) => warn!(error = %e, "cannot read the assignment after a rebalance"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.errors.recovered();
                events::offsets_committed(true);
                debug!(offsets = %describe(offsets), "offsets committed")
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                events::offsets_committed(false);
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
        paused: AtomicBool::new(false),
        rebalances: AtomicU64::new(0),
        high_watermarks: Mutex::default(),
        starts: Mutex::default(),
        held: Mutex::default(),
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

/// How often [`close`] looks whether the consumer's other holders have let go.
const CLOSE_POLL: Duration = Duration::from_millis(10);

/// Leaves the group and closes the consumer, by `deadline`, on a thread of its own.
///
/// Dropping the last handle closes the consumer, and rust-rdkafka's close blocks its
/// thread until librdkafka has left the group, without a bound: with the broker gone it
/// never returns. So the close waits here for the other holders (a topic lookup or a
/// rebuild's offset lookup still running in a blocking task, each bounded by its own
/// timeout) and happens while the daemon still runs, never later in whichever task let
/// go last. It is not a Tokio blocking task: the runtime waits for those at exit, and a
/// close that cannot finish would then hold the process past the deadline forever.
pub(crate) async fn close(consumer: Arc<GroupConsumer>, deadline: tokio::time::Instant) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".to_owned())
        .spawn(move || {
            let mut consumer = consumer;
            loop {
                match Arc::try_unwrap(consumer) {
                    Ok(last) => break drop(last),
                    Err(shared) => consumer = shared,
                }
                std::thread::sleep(CLOSE_POLL);
            }
            let _ = closed.send(());
        });
    if let Err(e) = spawned {
        return warn!(error = %e, "cannot start the thread that closes the Kafka consumer");
    }
    match tokio::time::timeout_at(deadline, done).await {
        Ok(_) => debug!("left the consumer group"),
        Err(_) => warn!(
            "the Kafka consumer did not leave the group within kafka.shutdown_timeout_ms; \
             the group reassigns its partitions after session.timeout.ms"
        ),
    }
}

/// Stores, in one call, the offset after the last written message of each partition,
/// for the next commit: only for the partitions held without a break since rebalance
/// `taken_at` (the count of [`GroupContext::rebalances`] when the batch was handed to its
/// write). A partition revoked meanwhile is skipped, even if it was assigned back: its
/// other owner moved its commit on, and its new start was read then. The idempotent
/// writes make what this batch wrote of it harmless; its owner writes it again.
pub(crate) fn store_offsets<'a>(
    consumer: &GroupConsumer,
    offsets: impl Iterator<Item = (&'a str, i32, i64)>,
    taken_at: u64,
) {
    let mut next = TopicPartitionList::new();
    let Ok(mut held) = consumer.context().held.lock() else {
        return;
    };
    for (topic, partition, offset) in offsets {
        let holding = held
            .get_mut(&(topic.to_owned(), partition))
            .filter(|h| h.since <= taken_at);
        let Some(holding) = holding else {
            debug!(
                topic,
                partition,
                offset,
                "offset not stored: the partition was revoked since its batch was taken"
            );
            continue;
        };
        // Kafka commits the offset of the next message to read.
        holding.stored = Some(offset + 1);
        add(&mut next, topic, partition, Offset::Offset(offset + 1));
    }
    drop(held);
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

/// Pauses every assigned partition: the fetcher stops and librdkafka drops what it had
/// prefetched. Called after every failed write, so that a partition resumed meanwhile
/// (see [`resume`]) is paused again; logged once per pause. The loop keeps polling, so
/// the group membership stays alive.
pub(crate) fn pause(consumer: &GroupConsumer) {
    let was_paused = consumer.context().paused.swap(true, Ordering::Relaxed);
    match consumer.assignment().and_then(|assignment| {
        consumer.pause(&assignment)?;
        Ok(assignment.count())
    }) {
        Ok(partitions) if !was_paused => info!(partitions, "fetching paused"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot pause fetching"),
    }
}

/// How long reading the group's committed offsets may take when resuming.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Resumes fetching, seeking each assigned partition to where the loop stands: the
/// message after the last one it took, or, for a partition it took nothing from since
/// the assignment, the group's committed offset (`kafka.auto_offset_reset` without one).
///
/// librdkafka resumes from the message after the last one the application received when
/// there is one, and otherwise from where its fetcher stood, which may be past messages
/// it had prefetched and dropped on pausing. The seek makes the resume position the
/// daemon's own; what the broker then delivers is checked message by message
/// (`position`). Returns false, with the partitions whose committed offset could not be
/// read still paused, for the caller to try again.
pub(crate) async fn resume(
    consumer: &Arc<GroupConsumer>,
    positions: &Positions,
    reset: AutoOffsetReset,
) -> bool {
    let assignment = match consumer.assignment() {
        Ok(assignment) => assignment,
        Err(e) => {
            warn!(error = %e, "cannot read the assignment to resume it");
            return false;
        }
    };
    let mut seeks = TopicPartitionList::new();
    let mut unknown = TopicPartitionList::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        match positions.next(topic, partition) {
            Some(next) => add(&mut seeks, topic, partition, Offset::Offset(next)),
            None => {
                unknown.add_partition(topic, partition);
            }
        }
    }
    let mut complete = true;
    if unknown.count() > 0 {
        let reader = Arc::clone(consumer);
        let committed = tokio::task::spawn_blocking(move || {
            reader.committed_offsets(unknown, COMMITTED_TIMEOUT)
        })
        .await;
        match committed {
            Ok(Ok(committed)) => {
                for element in committed.elements() {
                    let offset = match element.offset() {
                        Offset::Offset(offset) => Offset::Offset(offset),
                        _ => match reset {
                            AutoOffsetReset::Earliest => Offset::Beginning,
                            AutoOffsetReset::Latest => Offset::End,
                            // librdkafka reports the missing offset instead of fetching.
                            AutoOffsetReset::Error => continue,
                        },
                    };
                    add(&mut seeks, element.topic(), element.partition(), offset);
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the committed offsets to resume from; the partitions nothing was taken from stay paused");
                complete = false;
            }
            Err(e) => {
                warn!(error = %e, "reading the committed offsets failed; the partitions nothing was taken from stay paused");
                complete = false;
            }
        }
    }
    if let Err(e) = consumer.resume(&seeks) {
        warn!(error = %e, "cannot resume fetching");
        return false;
    }
    // Asynchronous: librdkafka's version barrier drops, as of this call, any message
    // fetched from the old position.
    match consumer.seek_partitions(seeks, Duration::ZERO) {
        Ok(seeks) => {
            info!(positions = %describe(&seeks), "fetching resumed where the daemon stands")
        }
        Err(e) => warn!(error = %e, "cannot seek back on resume"),
    }
    if complete {
        consumer.context().paused.store(false, Ordering::Relaxed);
    }
    complete
}

fn add(list: &mut TopicPartitionList, topic: &str, partition: i32, offset: Offset) {
    if let Err(e) = list.add_partition_offset(topic, partition, offset) {
        warn!(topic, partition, ?offset, error = %e, "cannot add a partition's offset to a list");
    }
}

/// Seeks one partition back to `offset`, asynchronously (see [`resume`]).
pub(crate) fn seek(consumer: &GroupConsumer, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), Duration::ZERO) {
        warn!(topic, partition, offset, error = %e, "cannot seek back");
    }
}
