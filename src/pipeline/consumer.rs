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
//! ([`close`]). Which offsets a written batch stores is the loop's to decide, from its
//! table of the partitions held ([`Partitions`]); the rebalance callback only tells it
//! what was assigned and revoked, as [`GroupEvent`]s on a channel, and makes no call to
//! a broker but the commit of what was stored. Before a revocation lets partitions go,
//! it gives up the batch in flight that holds any of them ([`Handover`]).
//!
//! Pausing and resuming live here too, with the state they share with rebalances: a
//! partition assigned while the daemon is paused is paused at once, one assigned while
//! it fetches is fetched (whatever pause librdkafka kept from before a revocation), and
//! resuming seeks every partition back to where the loop stands rather than trusting
//! librdkafka's fetch position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

use super::handover::Handover;
use super::health::ErrorReporter;
use super::partitions::{GroupEvent, Partitions};
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
    /// Each partition's high watermark (its last stable offset, under read_committed), as
    /// the last statistics reported it: where a rebuild of a partition the loop has taken
    /// nothing of yet ends.
    high_watermarks: Mutex<HashMap<(String, i32), i64>>,
    /// Assignments and revocations, to the loop that owns the partitions' state.
    events: tokio::sync::mpsc::UnboundedSender<GroupEvent>,
    /// The write in flight, given up when its partitions are revoked.
    handover: Arc<Handover>,
}

impl GroupContext {
    pub(crate) fn errors(&self) -> &ErrorReporter {
        &self.errors
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
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

/// The (topic, partition) pairs of a list.
fn pairs(partitions: &TopicPartitionList) -> Vec<(String, i32)> {
    partitions
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl GroupContext {
    /// Tells the loop what a rebalance assigned or revoked.
    fn tell(&self, event: GroupEvent) {
        // The loop is gone only when the consumer is being closed.
        let _ = self.events.send(event);
    }

    /// Sets the partitions just assigned paused or fetching, as the daemon is now.
    ///
    /// librdkafka starts a partition assigned fetching, but keeps the pause of a
    /// partition paused before it was revoked (librdkafka #1849): a member that paused,
    /// lost every partition in an eager rebalance and resumed while it held none would
    /// get some of them back paused, for good. And while writes fail, what a partition
    /// assigned fetched would pile up in a batch that cannot be written.
    fn follow_pause(&self, consumer: &BaseConsumer<Self>, partitions: &TopicPartitionList) {
        if self.is_paused() {
            match consumer.pause(partitions) {
                Ok(()) => {
                    info!(partitions = %describe(partitions), "assigned while writes are failing; paused")
                }
                Err(e) => warn!(error = %e, "cannot pause the partitions just assigned"),
            }
        } else if let Err(e) = consumer.resume(partitions) {
            warn!(error = %e, "cannot resume the partitions just assigned");
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
                let revoked = pairs(partitions);
                // Before they move: no batch of theirs may land after the next owner's.
                self.handover.revoke(&revoked);
                self.tell(GroupEvent::Revoked(revoked));
                // Whatever was written of them is committed before they move, so the next
                // owner starts after it (with the stored offsets of the partitions kept).
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.errors.recovered();
        if let Rebalance::Assign(partitions) = rebalance {
            self.tell(GroupEvent::Assigned(pairs(partitions)));
            self.follow_pause(consumer, partitions);
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

/// The group's assignments and revocations, in the order the rebalances made them.
pub(crate) type GroupEvents = tokio::sync::mpsc::UnboundedReceiver<GroupEvent>;

/// Creates the group consumer and subscribes it to the three source topics.
pub(crate) fn subscribe(
    config: &Config,
    topics: &[&str],
    status: Arc<Status>,
    handover: Arc<Handover>,
) -> KafkaResult<(Arc<GroupConsumer>, GroupEvents)> {
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let context = GroupContext {
        errors: ErrorReporter::new(Arc::clone(&status), config.kafka.bootstrap_servers.clone()),
        status,
        paused: AtomicBool::new(false),
        high_watermarks: Mutex::default(),
        events,
        handover,
    };
    let consumer: GroupConsumer = kafka::consumer_config(config).create_with_context(context)?;
    consumer.subscribe(topics)?;
    Ok((Arc::new(consumer), received))
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

/// Stores offsets for the next commit, in one call: the loop's [`Partitions`] chose them.
pub(crate) fn store(consumer: &GroupConsumer, offsets: &[(String, i32, i64)]) {
    if offsets.is_empty() {
        return;
    }
    let mut next = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        add(&mut next, topic, *partition, Offset::Offset(*offset));
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

/// librdkafka's position of each assigned partition: the offset after the last message
/// delivered, or past the transaction markers and aborted records after it.
pub(crate) fn positions(consumer: &GroupConsumer) -> HashMap<(String, i32), i64> {
    match consumer.position() {
        Ok(positions) => positions
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            debug!(error = %e, "cannot read the consumer's positions");
            HashMap::new()
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
/// daemon's own. Returns false, with the partitions whose committed offset could not be
/// read still paused, for the caller to try again.
pub(crate) async fn resume(
    consumer: &Arc<GroupConsumer>,
    positions: &Partitions,
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
            kafka::committed_offsets(reader.as_ref(), &unknown, COMMITTED_TIMEOUT)
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
    // fetched from the old position. Nothing to seek when nothing is assigned (between
    // an eager rebalance's revocation and its assignment).
    if seeks.count() > 0 {
        match consumer.seek_partitions(seeks, Duration::ZERO) {
            Ok(seeks) => {
                info!(positions = %describe(&seeks), "fetching resumed where the daemon stands")
            }
            Err(e) => warn!(error = %e, "cannot seek back on resume"),
        }
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
