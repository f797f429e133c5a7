//! Collecting consumed messages into a batch: decoded, validated and coalesced on arrival.
//!
//! A batch holds the coalesced [`WriteSet`] of its valid messages, the raw bytes of its
//! rejected ones (for the dead-letter topic), and for every partition it touched the
//! highest offset it holds. That offset is stored only after the whole batch was written,
//! so a batch is the unit of at-least-once delivery.
//!
//! The valid messages are kept whole too, in one buffer, until the batch is written:
//! Redis may still refuse a write for its data (a foreign key of another type at one of
//! the schema's keys), and the messages behind that write then go to the dead-letter
//! topic like rejected ones ([`Batch::refused`]).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::cache::{touched_keys, Refusal, WriteSet};
use crate::config::{BatchConfig, TopicsConfig, TtlFrom, Ttls};
use crate::models::{
    decode, decode_tombstone, Message, MessageKind, RejectReason, ValidationError,
};
use crate::schema::Keys;

/// Which decoder each source topic uses.
#[derive(Debug, Clone)]
pub(crate) struct TopicKinds(Vec<(String, MessageKind)>);

impl TopicKinds {
    pub(super) fn new(topics: &TopicsConfig) -> Self {
        Self(vec![
            (topics.trends.clone(), MessageKind::Trends),
            (topics.user_metrics.clone(), MessageKind::UserMetrics),
            (topics.windows.clone(), MessageKind::Windows),
        ])
    }

    pub(crate) fn kind(&self, topic: &str) -> Option<MessageKind> {
        self.0
            .iter()
            .find(|(name, _)| name == topic)
            .map(|(_, kind)| *kind)
    }

    /// The topic that carries a kind of message.
    pub(crate) fn name(&self, kind: MessageKind) -> &str {
        self.0
            .iter()
            .find(|(_, k)| *k == kind)
            .map_or("", |(name, _)| name.as_str())
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// A message that failed decoding or validation, kept whole for the dead-letter topic.
#[derive(Debug, Clone)]
pub(crate) struct Rejected {
    pub(crate) origin: Origin,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) error: ValidationError,
}

/// One consumed message, borrowed from the consumer for as long as it is pushed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    /// The Kafka message timestamp, when it has one.
    pub(crate) timestamp: Option<DateTime<Utc>>,
    /// Replayed by a rebuild: its offset is behind the partition's and not stored, and
    /// if it is invalid, it was dead-lettered when it was first read.
    pub(crate) replay: bool,
}

/// What a push did with the message, for the caller to log and count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pushed<'a> {
    Accepted,
    /// Kept in the batch for the dead-letter topic.
    Rejected(&'a Rejected),
    /// From a topic that is not one of the three sources; only its offset is kept.
    Ignored,
    /// Past its expiry already (`cache.ttl_from = "event"`): only its offset is kept.
    Expired,
}

#[derive(Debug)]
pub(crate) struct Batch {
    writes: WriteSet,
    rejects: Vec<Rejected>,
    /// Per topic: how many messages, and each partition's highest offset. A batch holds
    /// a few topics, so a scan by `&str` finds one faster than hashing its name, and a
    /// message from a topic already seen allocates nothing here.
    topics: Vec<(String, TopicProgress)>,
    /// Rejected messages per topic.
    rejected_per_topic: HashMap<String, u64>,
    /// The Kafka timestamps (unix milliseconds) of the messages, for end-to-end latency.
    timestamps: Vec<i64>,
    /// The valid messages, their keys and payloads in `kept_bytes`.
    kept: Vec<Kept>,
    kept_bytes: Vec<u8>,
    messages: usize,
    /// The keys and payloads of every message pushed, in bytes.
    bytes: usize,
    started: Option<Instant>,
    /// The clock at the batch's first message, against which event times expire.
    opened: DateTime<Utc>,
    /// The latest event time accepted in this batch: the clock at its first message
    /// plus `batch.max_future_skew_secs`.
    not_after: DateTime<Utc>,
    limits: Limits,
}

/// A valid message of the batch; its key and payload are ranges of `Batch::kept_bytes`.
#[derive(Debug, Clone)]
struct Kept {
    kind: MessageKind,
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    payload: Range<usize>,
}

/// What a batch holds of one topic.
#[derive(Debug, Default)]
struct TopicProgress {
    messages: u64,
    /// Partition to the highest offset in the batch, looked up for every message.
    offsets: foldhash::HashMap<i32, i64>,
}

/// The `[batch]` settings a batch enforces.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_messages: usize,
    max_wait: Duration,
    max_bytes: usize,
    max_message_bytes: usize,
    max_future_skew: chrono::TimeDelta,
    ttls: Ttls,
}

impl Batch {
    pub(super) fn new(config: &BatchConfig, ttls: Ttls) -> Self {
        Self::empty(Limits {
            max_messages: config.max_messages,
            max_wait: config.max_wait,
            max_bytes: config.max_bytes,
            max_message_bytes: config.max_message_bytes,
            max_future_skew: chrono::TimeDelta::from_std(config.max_future_skew)
                .unwrap_or(chrono::TimeDelta::MAX),
            ttls,
        })
    }

    fn empty(limits: Limits) -> Self {
        Self {
            writes: WriteSet::new(),
            rejects: Vec::new(),
            topics: Vec::new(),
            rejected_per_topic: HashMap::new(),
            timestamps: Vec::new(),
            kept: Vec::new(),
            kept_bytes: Vec::new(),
            messages: 0,
            bytes: 0,
            started: None,
            opened: DateTime::<Utc>::MIN_UTC,
            not_after: DateTime::<Utc>::MAX_UTC,
            limits,
        }
    }

    /// Decodes, validates and adds one message.
    pub(crate) fn push(&mut self, kinds: &TopicKinds, message: Incoming<'_>) -> Pushed<'_> {
        if self.messages == 0 {
            self.started = Some(Instant::now());
            // Once per batch rather than per message: a batch lasts milliseconds.
            self.opened = Utc::now();
            self.not_after = self
                .opened
                .checked_add_signed(self.limits.max_future_skew)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
        self.messages += 1;
        self.bytes += message.key.map_or(0, <[u8]>::len) + message.payload.map_or(0, <[u8]>::len);
        let progress = match self.topics.iter().position(|(t, _)| t == message.topic) {
            Some(i) => &mut self.topics[i].1,
            None => {
                self.topics
                    .push((message.topic.to_owned(), TopicProgress::default()));
                &mut self.topics.last_mut().expect("just pushed").1
            }
        };
        progress.messages += 1;
        if !message.replay {
            let slot = progress
                .offsets
                .entry(message.partition)
                .or_insert(message.offset);
            *slot = (*slot).max(message.offset);
        }
        if let Some(ts) = message.timestamp {
            self.timestamps.push(ts.timestamp_millis());
        }
        let Some(kind) = kinds.kind(message.topic) else {
            return Pushed::Ignored;
        };
        let Some(payload) = message.payload else {
            // A tombstone deletes what its key names; one that names nothing is rejected.
            return match decode_tombstone(kind, message.key) {
                Ok(tombstone) => {
                    self.writes.add_tombstone(tombstone);
                    Pushed::Accepted
                }
                Err(_) if message.replay => Pushed::Ignored,
                Err(error) => self.reject(&message, &[], error),
            };
        };
        let decoded = if payload.len() > self.limits.max_message_bytes {
            Err(ValidationError::new(
                RejectReason::TooLarge,
                format!(
                    "{} bytes, over batch.max_message_bytes = {}",
                    payload.len(),
                    self.limits.max_message_bytes
                ),
            ))
        } else {
            decode(kind, payload).and_then(|decoded| {
                decoded.check_not_after(self.not_after)?;
                Ok(decoded)
            })
        };
        match decoded {
            Ok(mut decoded) => {
                if self.limits.ttls.from == TtlFrom::Event
                    && drop_expired(&mut decoded, &self.limits.ttls, self.opened)
                {
                    return Pushed::Expired;
                }
                self.writes
                    .add_message(decoded, message.timestamp.unwrap_or_else(Utc::now));
                let key = message.key.map(|key| self.keep(key));
                let payload = self.keep(payload);
                self.kept.push(Kept {
                    kind,
                    partition: message.partition,
                    offset: message.offset,
                    key,
                    payload,
                });
                Pushed::Accepted
            }
            Err(_) if message.replay => Pushed::Ignored,
            Err(error) => self.reject(&message, payload, error),
        }
    }

    /// Sets a message aside for the dead-letter topic.
    fn reject(
        &mut self,
        message: &Incoming<'_>,
        payload: &[u8],
        error: ValidationError,
    ) -> Pushed<'_> {
        *self
            .rejected_per_topic
            .entry(message.topic.to_owned())
            .or_default() += 1;
        self.rejects.push(Rejected {
            origin: Origin {
                topic: message.topic.to_owned(),
                partition: message.partition,
                offset: message.offset,
            },
            key: message.key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            error,
        });
        Pushed::Rejected(self.rejects.last().expect("just pushed"))
    }

    fn keep(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.kept_bytes.len();
        self.kept_bytes.extend_from_slice(bytes);
        start..self.kept_bytes.len()
    }

    /// The valid messages whose writes Redis refused for their data, as dead letters
    /// with reason `redis_refused` and Redis's error in the detail.
    pub(crate) fn refused(
        &self,
        refusals: &[Refusal],
        keys: &Keys,
        kinds: &TopicKinds,
    ) -> Vec<Rejected> {
        let refused: HashMap<&[u8], &str> = refusals
            .iter()
            .map(|r| (r.key.as_slice(), r.error.as_str()))
            .collect();
        let mut out = Vec::new();
        for kept in &self.kept {
            let payload = &self.kept_bytes[kept.payload.clone()];
            // It decoded when it was pushed, and decoding is deterministic.
            let Ok(message) = decode(kept.kind, payload) else {
                continue;
            };
            let Some((key, error)) = touched_keys(&message, keys)
                .into_iter()
                .find_map(|key| refused.get(key.as_bytes()).map(|e| (key, *e)))
            else {
                continue;
            };
            out.push(Rejected {
                origin: Origin {
                    topic: kinds.name(kept.kind).to_owned(),
                    partition: kept.partition,
                    offset: kept.offset,
                },
                key: kept.key.clone().map(|k| self.kept_bytes[k].to_vec()),
                payload: payload.to_vec(),
                error: ValidationError::new(
                    RejectReason::RedisRefused,
                    format!("Redis refused the write to {key}: {error}"),
                ),
            });
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Whether the batch reached `batch.max_messages` or `batch.max_bytes` (it passes
    /// the latter by less than one message).
    pub(crate) fn is_full(&self) -> bool {
        self.messages >= self.limits.max_messages || self.bytes >= self.limits.max_bytes
    }

    /// When the batch must be written even if it is not full: `max_wait` after its first
    /// message. `None` for an empty batch.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.started.map(|t| t + self.limits.max_wait)
    }

    /// Hands the collected batch over and starts an empty one with the same limits, its
    /// buffers and maps sized as this one's were: the next batch does not grow them again
    /// by doubling, copy after copy.
    pub(crate) fn seal(&mut self) -> Batch {
        let mut next = Self::empty(self.limits);
        next.writes = self.writes.sized_like();
        next.kept.reserve(self.kept.len());
        next.kept_bytes.reserve(self.kept_bytes.len());
        next.timestamps.reserve(self.timestamps.len());
        std::mem::replace(self, next)
    }

    /// Applies reloaded `[batch]` limits and TTLs: to what this batch takes from now on,
    /// and to the batches after it.
    pub(crate) fn set_limits(&mut self, config: &BatchConfig, ttls: Ttls) {
        let limits = Self::new(config, ttls).limits;
        self.limits = limits;
    }

    /// The TTLs the batch's writes get.
    pub(super) fn ttls(&self) -> &Ttls {
        &self.limits.ttls
    }

    pub(crate) fn writes(&self) -> &WriteSet {
        &self.writes
    }

    pub(crate) fn rejects(&self) -> &[Rejected] {
        &self.rejects
    }

    /// Every (topic, partition, highest offset) this batch holds.
    pub(crate) fn offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.topics.iter().flat_map(|(topic, progress)| {
            progress
                .offsets
                .iter()
                .map(move |(partition, offset)| (topic.as_str(), *partition, *offset))
        })
    }

    /// Messages per topic, valid or not.
    pub(crate) fn per_topic(&self) -> impl Iterator<Item = (&str, u64)> {
        self.topics
            .iter()
            .map(|(topic, p)| (topic.as_str(), p.messages))
    }

    /// Rejected messages per topic.
    pub(crate) fn rejected_per_topic(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rejected_per_topic
            .iter()
            .map(|(topic, n)| (topic.as_str(), *n))
    }

    /// Seconds from each message's Kafka timestamp to `now`.
    pub(crate) fn latencies(&self, now: DateTime<Utc>) -> impl Iterator<Item = f64> + '_ {
        let now = now.timestamp_millis();
        self.timestamps
            .iter()
            .map(move |ts| (now - ts) as f64 / 1_000.0)
    }
}

/// Drops the items of `message` whose key would have expired by `now` already, with TTLs
/// that count from the event; returns whether none is left.
fn drop_expired(message: &mut Message, ttls: &Ttls, now: DateTime<Utc>) -> bool {
    match message {
        Message::Trends(alerts) => {
            alerts.retain(|a| !ttls.expired(ttls.trends, Some(a.window_end), now))
        }
        Message::UserMetrics(all) => all.retain(|m| !ttls.expired(ttls.users, m.timestamp, now)),
        Message::Windows(counts) => {
            counts.retain(|c| !ttls.expired(ttls.windows, Some(c.window_end), now))
        }
    }
    message.is_empty()
}

#[cfg(test)]
mod tests {
    use cache_layer_testkit::TREND;

    use super::*;

    /// The reason a push rejected its message for, if it did.
    fn rejected(pushed: Pushed<'_>) -> Option<RejectReason> {
        match pushed {
            Pushed::Rejected(r) => Some(r.error.reason),
            _ => None,
        }
    }

    fn incoming<'a>(
        topic: &'a str,
        partition: i32,
        offset: i64,
        payload: &'a [u8],
    ) -> Incoming<'a> {
        Incoming {
            topic,
            partition,
            offset,
            key: Some(b"k"),
            payload: Some(payload),
            timestamp: None,
            replay: false,
        }
    }

    fn ttls() -> Ttls {
        Ttls::uniform(Duration::from_secs(300))
    }

    fn config(max_messages: usize) -> BatchConfig {
        BatchConfig {
            max_messages,
            max_message_bytes: 1_000,
            ..BatchConfig::default()
        }
    }

    #[test]
    fn a_replayed_message_is_written_but_neither_stored_nor_dead_lettered_again() {
        let kinds = TopicKinds::new(&TopicsConfig::default());
        let mut batch = Batch::new(&config(10), ttls());
        let replay = |offset, payload| Incoming {
            replay: true,
            ..incoming("trend-alerts", 0, offset, payload)
        };
        batch.push(&kinds, incoming("trend-alerts", 0, 40, TREND.as_bytes()));
        assert!(matches!(
            batch.push(&kinds, replay(3, TREND.as_bytes())),
            Pushed::Accepted
        ));
        assert!(matches!(
            batch.push(&kinds, replay(4, b"{oops")),
            Pushed::Ignored
        ));
        assert!(matches!(
            batch.push(&kinds, replay(50, TREND.as_bytes())),
            Pushed::Accepted
        ));
        assert_eq!(
            batch.offsets().collect::<Vec<_>>(),
            [("trend-alerts", 0, 40)]
        );
        assert!(batch.rejects().is_empty());
        assert_eq!(batch.writes().items(), 3, "the replayed alerts are written");
    }

    #[test]
    fn offsets_track_the_highest_per_partition_good_or_bad() {
        let kinds = TopicKinds::new(&TopicsConfig::default());
        let mut batch = Batch::new(&config(10), ttls());
        assert!(matches!(
            batch.push(&kinds, incoming("trend-alerts", 0, 5, TREND.as_bytes())),
            Pushed::Accepted
        ));
        assert_eq!(
            rejected(batch.push(&kinds, incoming("trend-alerts", 0, 7, b"{oops"))),
            Some(RejectReason::NotJson)
        );
        assert!(matches!(
            batch.push(&kinds, incoming("trend-alerts", 1, 3, TREND.as_bytes())),
            Pushed::Accepted
        ));
        assert!(matches!(
            batch.push(&kinds, incoming("elsewhere", 0, 9, b"x")),
            Pushed::Ignored
        ));
        let mut offsets: Vec<_> = batch.offsets().collect();
        offsets.sort();
        assert_eq!(
            offsets,
            [
                ("elsewhere", 0, 9),
                ("trend-alerts", 0, 7),
                ("trend-alerts", 1, 3)
            ]
        );
        assert_eq!(batch.rejects().len(), 1);
        assert_eq!(batch.rejects()[0].origin.offset, 7);
        assert_eq!(batch.rejects()[0].payload, b"{oops");
        assert_eq!(batch.len(), 4);
    }

    #[test]
    fn oversized_messages_are_rejected_without_decoding() {
        let kinds = TopicKinds::new(&TopicsConfig::default());
        let mut batch = Batch::new(&config(10), ttls());
        let big = vec![b' '; 1_001];
        assert_eq!(
            rejected(batch.push(&kinds, incoming("keyword-windows", 0, 0, &big))),
            Some(RejectReason::TooLarge)
        );
    }

    #[test]
    fn hostile_sizes_are_refused_before_decoding() {
        let kinds = TopicKinds::new(&TopicsConfig::default());
        let mut batch = Batch::new(&BatchConfig::default(), ttls());
        let huge_array = format!("[{}{{}}]", "{},".repeat(1_000_000));
        let long_keyword = format!("{{\"keyword\":\"{}\"}}", "k".repeat(5_000_000));
        for payload in [huge_array.as_bytes(), long_keyword.as_bytes()] {
            let Pushed::Rejected(rejected) =
                batch.push(&kinds, incoming("trend-alerts", 0, 0, payload))
            else {
                panic!("{} bytes accepted", payload.len());
            };
            assert_eq!(rejected.error.reason, RejectReason::TooLarge);
            assert!(
                rejected.error.detail.contains("max_message_bytes"),
                "{}",
                rejected.error
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_due_when_full_or_max_wait_after_its_first_message() {
        let kinds = TopicKinds::new(&TopicsConfig::default());
        let mut batch = Batch::new(&config(2), ttls());
        assert_eq!(batch.deadline(), None);
        let start = Instant::now();
        batch.push(&kinds, incoming("trend-alerts", 0, 0, TREND.as_bytes()));
        tokio::time::advance(Duration::from_millis(30)).await;
        batch.push(&kinds, incoming("trend-alerts", 0, 1, TREND.as_bytes()));
        assert_eq!(
            batch.deadline(),
            Some(start + BatchConfig::default().max_wait)
        );
        assert!(batch.is_full());
        let taken = batch.seal();
        assert_eq!((taken.len(), batch.len()), (2, 0));
        assert_eq!(batch.deadline(), None);
        assert!(!batch.is_full());
    }

    #[test]
    fn a_batch_is_full_once_its_messages_add_up_to_max_bytes() {
        let kinds = TopicKinds(vec![("t".to_owned(), MessageKind::Trends)]);
        let mut batch = Batch::new(
            &BatchConfig {
                max_messages: 1_000,
                max_bytes: 2_000,
                max_message_bytes: 1_000,
                ..BatchConfig::default()
            },
            ttls(),
        );
        let trend =
            cache_layer_testkit::fixtures::trend_alert_json("Rust", "2024-01-01T12:01:00Z", 1);
        let mut pushed = 0;
        while !batch.is_full() {
            batch.push(&kinds, incoming("t", 0, pushed, trend.as_bytes()));
            pushed += 1;
        }
        // Each message is its payload and its one-byte key.
        let size = trend.len() + 1;
        assert_eq!(pushed as usize, 2_000usize.div_ceil(size));
        assert!(batch.bytes >= 2_000 && batch.bytes < 2_000 + size);
        assert!(!batch.seal().is_empty());
        assert!(!batch.is_full(), "the next batch starts empty");
    }

    /// What one window count costs, counted as the second pass of the same messages over
    /// a batch sized by a first batch of the same stream: the batch's own growth (a new
    /// window's id and map, a map or a buffer doubling), shared by all its messages, is
    /// then already paid, and what is left is each message's decoding, validation and
    /// coalescing. Mixed-case keywords, each seen three times, in five windows.
    #[test]
    fn a_window_count_costs_at_most_two_allocations() {
        use cache_layer_testkit::allocations::allocations;
        let kinds = TopicKinds(vec![("w".to_owned(), MessageKind::Windows)]);
        // As upstream writes them (and the generator): with its own normalised keyword,
        // which validation computes again, and a null window id.
        let messages: Vec<String> = (0..6_000)
            .map(|i| {
                let keyword = format!("Keyword{}", (i * 7_919) % 2_000);
                let mut count: serde_json::Value = serde_json::from_str(
                    &cache_layer_testkit::window_json(&keyword, i + 1, (i % 5) as u32),
                )
                .unwrap();
                count["normalized_keyword"] = keyword.to_lowercase().into();
                count["window_id"] = serde_json::Value::Null;
                count.to_string()
            })
            .collect();
        let mut batch = Batch::new(&config(20_000), ttls());
        let push_all = |batch: &mut Batch| {
            for (i, payload) in messages.iter().enumerate() {
                let message = incoming("w", (i % 12) as i32, i as i64, payload.as_bytes());
                let pushed = batch.push(
                    &kinds,
                    Incoming {
                        key: None,
                        ..message
                    },
                );
                assert!(matches!(pushed, Pushed::Accepted), "{pushed:?}");
            }
        };
        push_all(&mut batch);
        push_all(&mut batch);
        drop(batch.seal());
        push_all(&mut batch);
        let before = allocations();
        push_all(&mut batch);
        let per_count = (allocations() - before) as f64 / messages.len() as f64;
        // The keyword as upstream spelled it, and its normalised form.
        assert!(
            per_count <= 2.0,
            "{per_count:.3} allocations per window count"
        );
    }
}
