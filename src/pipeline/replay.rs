//! The replays that rebuild the cache, partition by partition: where each starts and
//! ends, which of its messages are written (a message older than its category's TTL is
//! skipped), when it is done, and the round of them, for readiness and the logs. State
//! only, no Kafka or Redis call: the partitions table holds it (`partitions`), and
//! `rebuild` finds the requests and where they start.

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::info;

use crate::config::Ttls;
use crate::events;
use crate::models::MessageKind;
use crate::status::RebuildProgress;

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
