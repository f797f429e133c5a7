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
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::batch::TopicKinds;
use super::consumer::GroupConsumer;
use super::replay::{Request, Start};
use crate::cache::{CacheLayer, Marker, MemoryUse};
use crate::config::{Config, Ttls};
use crate::events;
use crate::kafka;

/// How long a metadata or offsets request to the brokers may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

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
            let committed = kafka::committed_offsets(
                consumer.as_ref(),
                &list(&partitions, Offset::Invalid)?,
                KAFKA_TIMEOUT,
            )?;
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
