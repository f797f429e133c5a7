//! Rebuilding a cache that Redis lost, from Kafka.
//!
//! Kafka still holds what the cache held: every message within the longest category TTL
//! (and the topic's retention). When Redis is found to have lost the data (the group's
//! marker gone, see [`Marker`]), or an operator asks (`cache-layer rebuild`), a rebuild
//! is requested for every partition of the source topics, in Redis, where every instance
//! of the group sees it. Each instance replays only the requested partitions assigned to
//! it: it seeks each back to the first offset at or after the request's time
//! (`offsets_for_times`, by Kafka message timestamp), and replays up to the offset where
//! it stood when the rebuild started, its target, through the same idempotent writes as
//! any message.
//!
//! - A replayed message older than its category's TTL is skipped: written now, it would
//!   live another TTL, past when the cache would have dropped it.
//! - A replayed message's offset is never stored: the group's commit stays where it was,
//!   so a crash or a rebalance in the middle replays from there, and the request, still
//!   in Redis, makes the next owner replay the rest again.
//! - A partition's request is deleted once the batch with its last replayed message was
//!   written, and only if it is still the request that was replayed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::batch::TopicKinds;
use super::consumer::GroupConsumer;
use crate::cache::{CacheLayer, Marker, MemoryUse};
use crate::config::{Config, Ttls};
use crate::events;
use crate::kafka;
use crate::models::MessageKind;
use crate::status::RebuildProgress;

/// How long a metadata or offsets request to the brokers may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition to replay from `since_ms`, a Kafka timestamp in unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) since_ms: i64,
}

/// A request of an assigned partition, with where its replay starts: `None` when the
/// partition holds no message at or after the request's time.
#[derive(Debug)]
pub(super) struct Start {
    pub(crate) request: Request,
    pub(crate) from: Option<i64>,
}

/// What a message of a partition is to the rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Not replayed: taken as any message, its offset stored.
    No,
    /// Replayed: written, its offset not stored.
    Write,
    /// Replayed, but older than its category's TTL: neither written nor stored.
    Skip,
}

/// One partition being replayed.
#[derive(Debug)]
struct Rebuild {
    request: Request,
    /// The first offset replayed, and the offset where the partition stood when the
    /// rebuild started: what is below it was taken before.
    from: i64,
    target: i64,
    /// The message timestamp below which a message of each kind is skipped.
    cutoffs: [i64; 3],
    replayed: u64,
    skipped: u64,
    /// Replayed messages not yet counted in the metric.
    unreported: u64,
    /// The batch that holds the last message replayed (0: none).
    last_batch: u64,
    /// Whether the replay got to the target.
    reached: bool,
}

/// The rebuilds of this instance.
#[derive(Debug, Default)]
pub(super) struct Rebuilds {
    active: Vec<Rebuild>,
    /// Requests replayed and written, whose fields are still to delete.
    finished: Vec<Request>,
    /// Since when partitions are being replayed, and what the round replayed so far.
    round: Option<Round>,
}

#[derive(Debug, Default)]
struct Round {
    started: Option<Instant>,
    partitions: usize,
    replayed: u64,
    skipped: u64,
}

impl Rebuilds {
    pub(super) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether a partition is being replayed for the request from `since_ms`, or was
    /// and waits for the request to be deleted. A request written anew (another loss
    /// found meanwhile) is not known: its replay starts over.
    pub(super) fn knows(&self, topic: &str, partition: i32, since_ms: i64) -> bool {
        let same =
            |r: &Request| r.topic == topic && r.partition == partition && r.since_ms == since_ms;
        self.active.iter().any(|r| same(&r.request)) || self.finished.iter().any(same)
    }

    /// The partitions being replayed, with the request each replays.
    pub(super) fn active(&self) -> Vec<Request> {
        self.active.iter().map(|r| r.request.clone()).collect()
    }

    /// Starts replaying a partition from `from` up to `target`; `written` is the last
    /// batch written. Returns whether there is anything to replay.
    pub(super) fn start(&mut self, start: Start, target: i64, ttls: &Ttls) -> bool {
        let round = self.round.get_or_insert_with(|| Round {
            started: Some(Instant::now()),
            ..Round::default()
        });
        round.partitions += 1;
        // A replay of an older request of the partition gives way to this one.
        self.active.retain(|r| {
            r.request.topic != start.request.topic || r.request.partition != start.request.partition
        });
        let Some(from) = start.from.filter(|from| *from < target) else {
            self.finished.push(start.request);
            return false;
        };
        let since = start.request.since_ms;
        let now = Utc::now().timestamp_millis();
        let cutoff = |ttl: Duration| since.max(now - ttl.as_millis() as i64);
        self.active.push(Rebuild {
            request: start.request,
            from,
            target,
            cutoffs: [
                cutoff(ttls.trends),
                cutoff(ttls.users),
                cutoff(ttls.windows),
            ],
            replayed: 0,
            skipped: 0,
            unreported: 0,
            last_batch: 0,
            reached: false,
        });
        true
    }

    /// Where the replay of a partition under way ends: a newer request for it (another
    /// instance found the same loss) replays up to there too, not up to where the replay
    /// under way has got.
    pub(super) fn target(&self, topic: &str, partition: i32) -> Option<i64> {
        self.active
            .iter()
            .find(|r| r.request.partition == partition && r.request.topic == topic)
            .map(|r| r.target)
    }

    /// Judges a message the loop took of a partition: `batch` is the sequence number of
    /// the batch being collected, `timestamp` the message's (unix milliseconds).
    pub(super) fn replay(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        kind: Option<MessageKind>,
        timestamp: Option<i64>,
        batch: u64,
    ) -> Replay {
        let Some(rebuild) = self
            .active
            .iter_mut()
            .find(|r| r.request.partition == partition && r.request.topic == topic)
        else {
            return Replay::No;
        };
        if offset >= rebuild.target {
            rebuild.reached = true;
            return Replay::No;
        }
        if offset + 1 == rebuild.target {
            rebuild.reached = true;
        }
        let cutoff = match kind {
            Some(MessageKind::Trends) => rebuild.cutoffs[0],
            Some(MessageKind::UserMetrics) => rebuild.cutoffs[1],
            Some(MessageKind::Windows) => rebuild.cutoffs[2],
            None => i64::MAX,
        };
        if timestamp.is_some_and(|ts| ts < cutoff) {
            rebuild.skipped += 1;
            return Replay::Skip;
        }
        rebuild.replayed += 1;
        rebuild.unreported += 1;
        rebuild.last_batch = batch;
        Replay::Write
    }

    /// Counts the replayed messages of the batch about to be written.
    pub(super) fn report(&mut self) {
        for rebuild in &mut self.active {
            if rebuild.unreported > 0 {
                events::rebuild_messages(&rebuild.request.topic, rebuild.unreported);
                rebuild.unreported = 0;
            }
        }
    }

    /// Batch `written` went through: the partitions that reached their target with
    /// every replayed message written are done. Logs the end of the round once the last
    /// is. Returns whether any finished.
    pub(super) fn written(&mut self, written: u64) -> bool {
        let before = self.active.len();
        let mut i = 0;
        while i < self.active.len() {
            let rebuild = &self.active[i];
            if rebuild.reached && rebuild.last_batch <= written {
                let rebuild = self.active.swap_remove(i);
                let round = self.round.get_or_insert_with(Round::default);
                round.replayed += rebuild.replayed;
                round.skipped += rebuild.skipped;
                info!(
                    topic = rebuild.request.topic,
                    partition = rebuild.request.partition,
                    from = rebuild.from,
                    target = rebuild.target,
                    replayed = rebuild.replayed,
                    skipped = rebuild.skipped,
                    "partition rebuilt"
                );
                self.finished.push(rebuild.request);
            } else {
                i += 1;
            }
        }
        self.end_round();
        self.active.len() != before
    }

    /// Logs the end of the round, once no partition is being replayed.
    fn end_round(&mut self) {
        if !self.active.is_empty() {
            return;
        }
        if let Some(round) = self.round.take() {
            info!(
                partitions = round.partitions,
                replayed = round.replayed,
                skipped_as_expired = round.skipped,
                duration_ms = round.started.map_or(0, |s| s.elapsed().as_millis() as u64),
                "rebuild done: the cache holds again what Kafka holds"
            );
        }
    }

    /// Drops the replays of partitions no longer assigned: their requests stay in Redis
    /// for the next owner, which replays them whole.
    pub(super) fn retain(&mut self, assigned: impl Fn(&str, i32) -> bool) {
        let before = self.active.len();
        self.active
            .retain(|r| assigned(&r.request.topic, r.request.partition));
        if self.active.len() != before {
            info!(
                partitions = before - self.active.len(),
                "partitions being rebuilt were revoked; their new owner rebuilds them"
            );
            self.end_round();
        }
    }

    /// The requests replayed and written, to delete; put back what could not be.
    pub(super) fn take_finished(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.finished)
    }

    pub(super) fn put_back_finished(&mut self, requests: Vec<Request>) {
        self.finished.extend(requests);
    }

    /// Where each replay stands, for readiness: `position` is where the loop stands.
    pub(super) fn progress(
        &self,
        position: impl Fn(&str, i32) -> Option<i64>,
    ) -> Vec<RebuildProgress> {
        self.active
            .iter()
            .map(|r| RebuildProgress {
                topic: r.request.topic.clone(),
                partition: r.request.partition,
                from: r.from,
                target: r.target,
                position: position(&r.request.topic, r.request.partition).unwrap_or(r.from),
                replayed: r.replayed,
            })
            .collect()
    }
}

/// What the housekeeping of the loop is given: the loss to report (found by a write),
/// and what the loop knows of its partitions.
pub(super) struct Chores {
    /// A write found the marker gone.
    pub(crate) lost: bool,
    /// No write is on its way to set the marker: look at it.
    pub(crate) check_marker: bool,
    pub(crate) assigned: Vec<(String, i32)>,
    pub(crate) rebuilds: Vec<Request>,
    pub(crate) finished: Vec<Request>,
}

/// What a round of housekeeping found.
#[derive(Debug, Default)]
pub(super) struct Found {
    /// Requests of assigned partitions not being replayed yet, with where each starts.
    pub(crate) starts: Vec<Start>,
    /// The finished requests whose deletion failed, to try again.
    pub(crate) not_deleted: Vec<Request>,
    /// Redis's memory use, when it was read (`redis.pause_above_memory_ratio` set, and
    /// INFO answered); inside, `None` is a Redis without a memory limit.
    pub(crate) memory: Option<Option<MemoryUse>>,
}

/// The loss detection and the rebuild requests of one consumer loop.
pub(super) struct Housekeeper {
    pub(crate) cache: CacheLayer,
    pub(crate) marker: Arc<Marker>,
    /// Not an owner: after the drain, `consumer::close` waits for every other holder
    /// before it closes the consumer, so a round holds it only where it must, inside a
    /// blocking task that its Kafka timeout bounds.
    pub(crate) consumer: Weak<GroupConsumer>,
    pub(crate) topics: Vec<String>,
    /// The TTLs, as the last reload left them.
    pub(crate) ttls: std::sync::RwLock<Ttls>,
    pub(crate) rebuild_on_loss: bool,
    /// Whether a round reads Redis's memory use, for `redis.pause_above_memory_ratio`.
    pub(crate) watch_memory: bool,
    /// Redis's `evicted_keys` at the last round: a marker gone while it grew was evicted
    /// at Redis's memory limit (an `allkeys-*` policy, or a `volatile-*` one), not lost
    /// with the data, and replaying every partition for it would only fill Redis again.
    pub(crate) evicted_keys: std::sync::atomic::AtomicU64,
}

impl Housekeeper {
    pub(super) fn ttls(&self) -> Ttls {
        *self.ttls.read().expect("not poisoned")
    }

    /// One round: reads Redis's memory use if asked to, deletes the finished requests,
    /// reports a loss (and requests its rebuild), and reads the requests for the
    /// partitions assigned.
    pub(super) async fn round(self: Arc<Self>, chores: Chores) -> Found {
        let mut found = Found::default();
        if self.watch_memory {
            match self.cache.memory_use().await {
                Ok(memory) => found.memory = Some(memory),
                Err(e) => debug!(error = %e, "cannot read Redis's memory use"),
            }
        }
        for request in chores.finished {
            let done = self
                .cache
                .rebuild_done(&request.topic, request.partition, request.since_ms)
                .await;
            if let Err(e) = done {
                warn!(topic = request.topic, partition = request.partition, error = %e, "cannot delete a finished rebuild request; trying again");
                found.not_deleted.push(request);
            }
        }
        let lost = chores.lost
            || (chores.check_marker
                && self.cache.check_marker(&self.marker).await.unwrap_or(false));
        let evicting = match self.cache.evicted_keys().await {
            Ok(now) => now > self.evicted_keys.swap(now, Ordering::Relaxed),
            Err(e) => {
                debug!(error = %e, "cannot read Redis's evicted keys");
                false
            }
        };
        if lost && evicting {
            info!(
                redis_marker = self.marker.key(),
                "the group's marker key is gone while Redis evicts keys at its memory limit: evicted, not a loss; the next batch sets it again"
            );
        } else if lost {
            self.lost(
                "the group's marker key is gone although this instance set it within its TTL",
            )
            .await;
        }
        let requests = match self.cache.rebuild_requests().await {
            Ok(requests) => requests,
            Err(e) => {
                warn!(error = %e, "cannot read the rebuild requests");
                return found;
            }
        };
        let wanted: Vec<Request> = chores
            .assigned
            .into_iter()
            .filter_map(|(topic, partition)| {
                let since_ms = *requests.get(&(topic.clone(), partition))?;
                Some(Request {
                    topic,
                    partition,
                    since_ms,
                })
            })
            .filter(|r| !chores.rebuilds.contains(r) && !found.not_deleted.contains(r))
            .collect();
        if wanted.is_empty() {
            return found;
        }
        let Some(consumer) = self.consumer.upgrade() else {
            return found;
        };
        match starts(consumer, &wanted).await {
            Ok(starts) => found.starts = starts,
            Err(e) => {
                warn!(error = %e, "cannot find where the rebuild requested starts; trying again")
            }
        }
        found
    }

    /// Reports a loss, and requests the rebuild of every partition unless turned off.
    pub(super) async fn lost(&self, why: &str) {
        events::redis_data_loss();
        if !self.rebuild_on_loss {
            warn!(
                redis_marker = self.marker.key(),
                "Redis lost the cache's data ({why}); not rebuilt, as cache.rebuild_on_loss = false: it fills again as messages arrive"
            );
            return;
        }
        let longest = self.ttls().longest();
        let since = Utc::now() - longest;
        warn!(
            redis_marker = self.marker.key(),
            since = %since.to_rfc3339(),
            "Redis lost the cache's data ({why}); rebuilding it from Kafka"
        );
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        if let Err(e) = request(
            consumer,
            &self.cache,
            &self.topics,
            since.timestamp_millis(),
            longest,
        )
        .await
        {
            warn!(error = %e, "cannot request the rebuild; the cache fills again as messages arrive");
        }
    }

    /// At start-up, before the first write: Redis holds no marker for the group although
    /// the group committed offsets past messages that are within the longest TTL. That
    /// is a Redis that lost its data while the daemon was stopped, or a new, empty one
    /// for a group already running; either way the cache lacks what Kafka holds. A
    /// never-written Redis for a new group (nothing committed) is not a loss.
    pub(super) async fn check_at_startup(&self) {
        if let Ok(evicted) = self.cache.evicted_keys().await {
            self.evicted_keys.store(evicted, Ordering::Relaxed);
        }
        match self.cache.has_marker(&self.marker).await {
            Ok(false) => {}
            // The marker is there: whatever this Redis loses from now on shows later.
            Ok(true) => return,
            Err(e) => {
                warn!(error = %e, "cannot look at Redis's marker at startup; a loss while the daemon was stopped goes unnoticed");
                return;
            }
        }
        let since = (Utc::now() - self.ttls().longest()).timestamp_millis();
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        let topics = self.topics.clone();
        let behind = tokio::task::spawn_blocking(move || {
            let partitions = partitions(consumer.as_ref(), &topics)?;
            let committed =
                consumer.committed_offsets(list(&partitions, Offset::Invalid)?, KAFKA_TIMEOUT)?;
            let times = consumer
                .offsets_for_times(list(&partitions, Offset::Offset(since))?, KAFKA_TIMEOUT)?;
            // A partition whose commit is past its first message within the TTL.
            Ok::<_, rdkafka::error::KafkaError>(committed.elements().iter().any(|c| {
                let Offset::Offset(committed) = c.offset() else {
                    return false;
                };
                times.find_partition(c.topic(), c.partition()).is_some_and(
                    |t| matches!(t.offset(), Offset::Offset(first) if first < committed),
                )
            }))
        })
        .await;
        match behind {
            Ok(Ok(true)) => {
                self.lost(
                    "Redis holds no marker although the group committed messages within the TTL",
                )
                .await
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the group's offsets at startup; a loss while the daemon was stopped goes unnoticed")
            }
            Err(e) => warn!(error = %e, "reading the group's offsets at startup failed"),
        }
    }
}

/// Requests the rebuild of every partition of `topics` from `since_ms`, for their
/// owners to replay; returns the partitions requested.
async fn request<X, C>(
    client: Arc<C>,
    cache: &CacheLayer,
    topics: &[String],
    since_ms: i64,
    ttl: Duration,
) -> anyhow::Result<Vec<(String, i32)>>
where
    X: ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let topics = topics.to_vec();
    let partitions =
        tokio::task::spawn_blocking(move || partitions(client.as_ref(), &topics)).await??;
    cache.request_rebuild(&partitions, since_ms, ttl).await?;
    Ok(partitions)
}

/// Requests the rebuild of every partition of the source topics from `since` ago, as
/// `cache-layer rebuild` does: the running instances replay their partitions. Returns
/// how many; fails naming the topics when none of them exists on the brokers, and warns
/// of each that is missing.
pub async fn request_rebuild(
    config: &Config,
    cache: &CacheLayer,
    since: Duration,
) -> anyhow::Result<usize> {
    let client: BaseConsumer = kafka::client_config(config).create()?;
    let since_ms = (Utc::now() - since).timestamp_millis();
    let topics: Vec<String> = TopicKinds::new(&config.topics)
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let requested = request(
        Arc::new(client),
        cache,
        &topics,
        since_ms,
        since.max(config.cache.ttls().longest()),
    )
    .await?;
    let missing: Vec<&str> = topics
        .iter()
        .filter(|topic| !requested.iter().any(|(t, _)| t == *topic))
        .map(String::as_str)
        .collect();
    if requested.is_empty() {
        anyhow::bail!(
            "none of the source topics exists on the brokers ({}): nothing to rebuild from",
            missing.join(", ")
        );
    }
    for topic in missing {
        warn!(
            topic,
            "the source topic does not exist on the brokers; nothing of it to rebuild"
        );
    }
    Ok(requested.len())
}

/// Every partition of `topics`, from the brokers' metadata.
pub(super) fn partitions<X, C>(
    client: &C,
    topics: &[String],
) -> rdkafka::error::KafkaResult<Vec<(String, i32)>>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let mut partitions = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
        for t in metadata.topics() {
            if t.error().is_none() {
                partitions.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
            }
        }
    }
    Ok(partitions)
}

pub(super) fn list(
    partitions: &[(String, i32)],
    offset: Offset,
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, offset)?;
    }
    Ok(list)
}

/// The first offset at or after `since_ms` (a Kafka timestamp) of each partition, by
/// `offsets_for_times`; `None` for a partition that holds no message from then on. The
/// rebuild's replay and `cache-layer offsets reset --to-datetime` both start there.
pub(super) fn first_offsets_at<X, C>(
    client: &C,
    partitions: &[(String, i32)],
    since_ms: i64,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<HashMap<(String, i32), Option<i64>>>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let found = client.offsets_for_times(list(partitions, Offset::Offset(since_ms))?, timeout)?;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| {
            let first = match e.offset() {
                Offset::Offset(offset) => Some(offset),
                // No message at or after the time.
                Offset::End => None,
                Offset::Beginning => Some(0),
                _ => return None,
            };
            Some(((e.topic().to_owned(), e.partition()), first))
        })
        .collect())
}

/// Where each request starts: the first offset at or after its time.
async fn starts(consumer: Arc<GroupConsumer>, requests: &[Request]) -> anyhow::Result<Vec<Start>> {
    let mut by_time: HashMap<i64, Vec<(String, i32)>> = HashMap::new();
    for r in requests {
        by_time
            .entry(r.since_ms)
            .or_default()
            .push((r.topic.clone(), r.partition));
    }
    let found = tokio::task::spawn_blocking(move || {
        let mut found = HashMap::new();
        for (since_ms, partitions) in by_time {
            for (partition, first) in
                first_offsets_at(consumer.as_ref(), &partitions, since_ms, KAFKA_TIMEOUT)?
            {
                found.insert((partition, since_ms), first);
            }
        }
        Ok::<_, rdkafka::error::KafkaError>(found)
    })
    .await??;
    Ok(requests
        .iter()
        .filter_map(|r| {
            let from = *found.get(&((r.topic.clone(), r.partition), r.since_ms))?;
            Some(Start {
                request: r.clone(),
                from,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(partition: i32) -> Request {
        Request {
            topic: "t".into(),
            partition,
            since_ms: 1_000,
        }
    }

    fn ttls() -> Ttls {
        Ttls::uniform(Duration::from_secs(3600))
    }

    fn now_ms() -> i64 {
        Utc::now().timestamp_millis()
    }

    #[test]
    fn a_replay_writes_up_to_the_target_and_is_done_once_written() {
        let mut rebuilds = Rebuilds::default();
        let start = Start {
            request: request(0),
            from: Some(5),
        };
        assert!(rebuilds.start(start, 8, &ttls()));
        let kind = Some(MessageKind::Trends);
        let ts = Some(now_ms());
        assert_eq!(
            rebuilds.replay("t", 1, 5, kind, ts, 1),
            Replay::No,
            "another partition"
        );
        assert_eq!(rebuilds.replay("t", 0, 5, kind, ts, 1), Replay::Write);
        assert_eq!(rebuilds.replay("t", 0, 6, kind, ts, 2), Replay::Write);
        assert!(!rebuilds.written(1), "batch 2 holds a replayed message");
        assert_eq!(rebuilds.replay("t", 0, 7, kind, ts, 2), Replay::Write);
        assert_eq!(
            rebuilds.replay("t", 0, 8, kind, ts, 2),
            Replay::No,
            "the target"
        );
        assert!(rebuilds.written(2));
        assert!(rebuilds.is_empty());
        assert_eq!(rebuilds.take_finished(), [request(0)]);
    }

    #[test]
    fn a_replayed_message_older_than_its_ttl_is_skipped() {
        let mut rebuilds = Rebuilds::default();
        let ttls = Ttls {
            trends: Duration::from_secs(60),
            users: Duration::from_secs(60),
            windows: Duration::from_secs(3600),
            from: crate::config::TtlFrom::Write,
        };
        rebuilds.start(
            Start {
                request: request(0),
                from: Some(0),
            },
            10,
            &ttls,
        );
        let ten_minutes_ago = Some(now_ms() - 600_000);
        assert_eq!(
            rebuilds.replay("t", 0, 0, Some(MessageKind::Trends), ten_minutes_ago, 1),
            Replay::Skip
        );
        assert_eq!(
            rebuilds.replay("t", 0, 1, Some(MessageKind::Windows), ten_minutes_ago, 1),
            Replay::Write
        );
    }

    #[test]
    fn nothing_to_replay_is_finished_at_once() {
        let mut rebuilds = Rebuilds::default();
        assert!(!rebuilds.start(
            Start {
                request: request(0),
                from: None
            },
            10,
            &ttls()
        ));
        assert!(!rebuilds.start(
            Start {
                request: request(1),
                from: Some(10)
            },
            10,
            &ttls()
        ));
        assert!(rebuilds.is_empty());
        assert_eq!(rebuilds.take_finished(), [request(0), request(1)]);
    }

    #[test]
    fn a_revoked_partition_is_dropped_unfinished() {
        let mut rebuilds = Rebuilds::default();
        rebuilds.start(
            Start {
                request: request(0),
                from: Some(0),
            },
            10,
            &ttls(),
        );
        rebuilds.start(
            Start {
                request: request(1),
                from: Some(0),
            },
            10,
            &ttls(),
        );
        rebuilds.retain(|_, partition| partition == 1);
        assert_eq!(rebuilds.active(), [request(1)]);
        assert!(
            rebuilds.take_finished().is_empty(),
            "its request stays for the next owner"
        );
        assert!(rebuilds.knows("t", 1, 1_000));
    }
}
