//! The partitions this member holds, where each stands, and the replays rebuilding
//! them: one table, owned by the consume loop and changed only by explicit events: the
//! group's assignments and revocations (which the rebalance callback sends as
//! [`GroupEvent`]s, never touching the table itself), the messages the loop takes, the
//! offsets it stores once a batch is written, the rebuilds it starts, and a rewind.
//!
//! - A partition revoked takes its rebuild with it (the request stays in Redis, for its
//!   new owner); a rewind drops every rebuild (the requests are read again by the next
//!   round of housekeeping, and the replays start over).
//!
//! - A partition revoked starts clean if it is assigned back: whoever held it meanwhile
//!   moved the group's commit on, and librdkafka fetches it again from the commit. A
//!   batch taken before a revocation stores no offset of the partitions it revoked, even
//!   of one assigned back since. A batch holding a partition revoked is given up before
//!   the partition moves (`handover`), and the partitions kept are rewound: read again
//!   from the offset stored last ([`Partitions::rewind`]).
//! - Offsets are not checked for holes. Apache Kafka answers a fetch from inside a record
//!   batch with the whole batch, and librdkafka drops the records before the fetch
//!   offset, so no seek, resume or rebalance skips a record; and the holes the log holds
//!   itself (transaction markers, aborted records under `read_committed`, compaction,
//!   retention) are normal and cost nothing (docs/delivery.md has the measurements).
//! - The offset stored for a written partition is the one after its last message, or,
//!   when the loop has taken nothing of it since, librdkafka's position, which steps over
//!   the transaction markers and aborted records after that message: so a transactional
//!   topic's lag comes back to 0. A partition whose position passed messages the loop
//!   could not take (a full batch while paused) has its position ignored until resuming
//!   seeks it back.

use tracing::debug;

use super::replay::{Rebuilds, Start};
use crate::config::Ttls;
use crate::status::RebuildProgress;

/// What the rebalance callback tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// One partition held.
#[derive(Debug, Clone, Copy)]
struct Partition {
    /// The offset after the last message taken; `None` before the first.
    next: Option<i64>,
    /// The offset stored last, for the next commit.
    stored: Option<i64>,
    /// The revocations counted when it was assigned (see [`Partitions::epoch`]).
    since: u64,
    /// librdkafka's position passed a message the loop did not take.
    passed_untaken: bool,
}

impl Partition {
    fn assigned(since: u64) -> Self {
        Self {
            next: None,
            stored: None,
            since,
            passed_untaken: false,
        }
    }
}

/// Every partition held, by topic (a handful, found by a scan) and partition (small and
/// dense ids, looked up once per message).
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    topics: Vec<(String, Vec<Option<Partition>>)>,
    /// Revocations so far: a batch taken at epoch `e` stores offsets only for the
    /// partitions assigned at `e` or before and held since.
    epoch: u64,
    /// The partitions being replayed, all of them held.
    rebuilds: Rebuilds,
}

impl Partitions {
    /// Takes an assignment or a revocation.
    pub(crate) fn apply(&mut self, event: &GroupEvent) {
        match event {
            GroupEvent::Assigned(partitions) => {
                for (topic, partition) in partitions {
                    let since = self.epoch;
                    *self.slot(topic, *partition) = Some(Partition::assigned(since));
                }
            }
            GroupEvent::Revoked(partitions) => {
                self.epoch += 1;
                for (topic, partition) in partitions {
                    *self.slot(topic, *partition) = None;
                }
                let topics = &self.topics;
                self.rebuilds
                    .retain(|topic, partition| find(topics, topic, partition).is_some());
            }
        }
    }

    /// Revocations so far, for a batch to note when it is taken.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The loop took a message: the partition stands after it.
    pub(crate) fn took(&mut self, topic: &str, partition: i32, offset: i64) {
        self.held(topic, partition).next = Some(offset + 1);
    }

    /// The loop received a message it could not take (a full batch while paused): it is
    /// read again after resuming, from where the partition stands, or from this message
    /// when nothing was taken of it yet.
    pub(crate) fn passed(&mut self, topic: &str, partition: i32, offset: i64) {
        let held = self.held(topic, partition);
        held.next.get_or_insert(offset);
        held.passed_untaken = true;
    }

    /// The batches of every partition held were given up: each is read again from where
    /// its writes stand, the offset stored last, or the group's commit before any.
    /// Their replays start over, from their requests.
    pub(crate) fn rewind(&mut self) {
        for partition in self.iter_mut() {
            partition.next = partition.stored;
        }
        self.rebuilds.retain(|_, _| false);
    }

    /// The replays under way.
    pub(crate) fn rebuilds(&mut self) -> &mut Rebuilds {
        &mut self.rebuilds
    }

    /// Starts replaying a partition held, as a round of housekeeping found it requested:
    /// up to where a replay under way ends, where the partition stands, or, before its
    /// first message, `log_end` (what lies beyond is consumed as usual). Returns the
    /// offsets replayed, `from..target`, to seek to `from`; `None` when the partition is
    /// not held, its request is known already, nothing is to replay, or it is not known
    /// yet where it stands.
    pub(crate) fn start_rebuild(
        &mut self,
        start: Start,
        log_end: Option<i64>,
        ttls: &Ttls,
    ) -> Option<(i64, i64)> {
        let (topic, partition) = (start.request.topic.as_str(), start.request.partition);
        if !self.holds(topic, partition)
            || self
                .rebuilds
                .knows(topic, partition, start.request.since_ms)
        {
            return None;
        }
        let Some(target) = self
            .rebuilds
            .target(topic, partition)
            .or_else(|| self.next(topic, partition))
            .or(log_end)
        else {
            debug!(
                topic,
                partition, "not known yet where the partition stands; its rebuild waits"
            );
            return None;
        };
        let from = start.from;
        let (topic, partition) = (topic.to_owned(), partition);
        if !self.rebuilds.start(start, target, ttls) {
            return None;
        }
        let from = from.expect("a replay starts somewhere");
        self.held(&topic, partition).next = Some(from);
        Some((from, target))
    }

    /// Where each replay stands, for readiness and the metrics.
    pub(crate) fn rebuild_progress(&self) -> Vec<RebuildProgress> {
        self.rebuilds
            .progress(|topic, partition| self.next(topic, partition))
    }

    /// Resuming sought every partition back to where it stands.
    pub(crate) fn resumed(&mut self) {
        for partition in self.iter_mut() {
            partition.passed_untaken = false;
        }
    }

    /// The offset after the last message taken of a partition; `None` when nothing was
    /// taken of it since it was assigned.
    pub(crate) fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.get(topic, partition).and_then(|p| p.next)
    }

    /// Whether a partition is held.
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.get(topic, partition).is_some()
    }

    /// The offsets to store for a batch written, taken at `epoch`, whose last message of
    /// each partition is `offsets`: for each partition held since before the batch was
    /// taken, the offset after that message, or librdkafka's `position` when it is
    /// further and the loop took nothing of the partition since. Never one below what
    /// was stored.
    pub(crate) fn written<'a>(
        &mut self,
        offsets: impl Iterator<Item = (&'a str, i32, i64)>,
        epoch: u64,
        position: impl Fn(&str, i32) -> Option<i64>,
    ) -> Vec<(String, i32, i64)> {
        let mut store = Vec::new();
        for (topic, partition, offset) in offsets {
            let Some(held) = self.get_mut(topic, partition).filter(|p| p.since <= epoch) else {
                continue;
            };
            let mut next = offset + 1;
            if held.next == Some(next) && !held.passed_untaken {
                next = next.max(position(topic, partition).unwrap_or(next));
            }
            if held.stored.is_some_and(|stored| stored >= next) {
                continue;
            }
            held.stored = Some(next);
            store.push((topic.to_owned(), partition, next));
        }
        store
    }

    /// The partitions whose every message taken is stored, and whose `position` has moved
    /// on since without a message (past a transaction marker that ended the partition):
    /// the offsets to store, so that their lag comes back to 0.
    pub(crate) fn idle_moves(
        &mut self,
        position: impl Fn(&str, i32) -> Option<i64>,
    ) -> Vec<(String, i32, i64)> {
        let mut store = Vec::new();
        for (topic, partitions) in &mut self.topics {
            for (i, slot) in partitions.iter_mut().enumerate() {
                let Some(held) = slot.as_mut().filter(|p| !p.passed_untaken) else {
                    continue;
                };
                let (Some(next), Some(stored)) = (held.next, held.stored) else {
                    continue;
                };
                let partition = i as i32;
                match position(topic, partition) {
                    Some(at) if next == stored && at > stored => {
                        held.next = Some(at);
                        held.stored = Some(at);
                        store.push((topic.clone(), partition, at));
                    }
                    _ => {}
                }
            }
        }
        store
    }

    fn get(&self, topic: &str, partition: i32) -> Option<&Partition> {
        find(&self.topics, topic, partition)
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        let (_, partitions) = self.topics.iter_mut().find(|(t, _)| t == topic)?;
        partitions
            .get_mut(usize::try_from(partition).ok()?)?
            .as_mut()
    }

    /// The partition's entry, made as assigned now when the loop meets a message of a
    /// partition before its assignment's event (both come from one poll).
    fn held(&mut self, topic: &str, partition: i32) -> &mut Partition {
        let since = self.epoch;
        self.slot(topic, partition)
            .get_or_insert(Partition::assigned(since))
    }

    fn slot(&mut self, topic: &str, partition: i32) -> &mut Option<Partition> {
        let i = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((topic.to_owned(), Vec::new()));
                self.topics.len() - 1
            }
        };
        let partitions = &mut self.topics[i].1;
        // librdkafka never delivers a message of a negative (unassigned) partition.
        let p = usize::try_from(partition).unwrap_or_default();
        if p >= partitions.len() {
            partitions.resize(p + 1, None);
        }
        &mut partitions[p]
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Partition> {
        self.topics
            .iter_mut()
            .flat_map(|(_, partitions)| partitions.iter_mut().flatten())
    }
}

/// A partition's entry in `topics`, if held.
fn find<'a>(
    topics: &'a [(String, Vec<Option<Partition>>)],
    topic: &str,
    partition: i32,
) -> Option<&'a Partition> {
    let (_, partitions) = topics.iter().find(|(t, _)| t == topic)?;
    partitions.get(usize::try_from(partition).ok()?)?.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::replay::Request;

    fn assigned(partitions: &[(&str, i32)]) -> GroupEvent {
        GroupEvent::Assigned(
            partitions
                .iter()
                .map(|(t, p)| ((*t).to_owned(), *p))
                .collect(),
        )
    }

    fn revoked(partitions: &[(&str, i32)]) -> GroupEvent {
        GroupEvent::Revoked(
            partitions
                .iter()
                .map(|(t, p)| ((*t).to_owned(), *p))
                .collect(),
        )
    }

    #[test]
    fn a_written_partition_stores_the_offset_after_its_last_message() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0), ("t", 1)]));
        table.took("t", 0, 10);
        table.took("t", 0, 11);
        table.took("t", 1, 3);
        let stored = table.written([("t", 0, 11), ("t", 1, 3)].into_iter(), 0, |_, _| None);
        assert_eq!(stored, [("t".to_owned(), 0, 12), ("t".to_owned(), 1, 4)]);
        assert_eq!(table.next("t", 0), Some(12));
    }

    #[test]
    fn the_position_past_a_marker_is_stored_only_when_nothing_newer_was_taken() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0), ("t", 1)]));
        table.took("t", 0, 19);
        table.took("t", 1, 19);
        // Partition 1 has a message taken after the batch's last: its position is not
        // the batch's to store.
        table.took("t", 1, 21);
        let stored = table.written([("t", 0, 19), ("t", 1, 19)].into_iter(), 0, |_, _| Some(22));
        assert_eq!(stored, [("t".to_owned(), 0, 22), ("t".to_owned(), 1, 20)]);
    }

    #[test]
    fn an_idle_partition_stores_the_position_a_marker_moved() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0), ("t", 1)]));
        table.took("t", 0, 19);
        table.took("t", 1, 5);
        table.written([("t", 0, 19)].into_iter(), 0, |_, _| None);
        // Partition 1 has a message taken but not written: not idle.
        let moved = table.idle_moves(|_, _| Some(21));
        assert_eq!(moved, [("t".to_owned(), 0, 21)]);
        assert!(table.idle_moves(|_, _| Some(21)).is_empty());
    }

    #[test]
    fn a_position_past_untaken_messages_is_ignored_until_resuming() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0)]));
        table.took("t", 0, 4);
        table.passed("t", 0, 5);
        table.passed("t", 0, 6);
        let stored = table.written([("t", 0, 4)].into_iter(), 0, |_, _| Some(7));
        assert_eq!(stored, [("t".to_owned(), 0, 5)]);
        assert!(table.idle_moves(|_, _| Some(7)).is_empty());
        table.resumed();
        assert_eq!(table.next("t", 0), Some(5));
    }

    #[test]
    fn a_partition_revoked_and_assigned_back_starts_clean_and_old_batches_store_nothing() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0), ("t", 1)]));
        table.took("t", 0, 100);
        table.took("t", 1, 50);
        let taken_at = table.epoch();
        table.apply(&revoked(&[("t", 0), ("t", 1)]));
        table.apply(&assigned(&[("t", 0)]));
        assert_eq!(table.next("t", 0), None, "starts from the group's commit");
        assert!(!table.holds("t", 1));
        let stored = table.written(
            [("t", 0, 100), ("t", 1, 50)].into_iter(),
            taken_at,
            |_, _| None,
        );
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[test]
    fn offsets_stored_never_go_back() {
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0)]));
        table.took("t", 0, 9);
        table.written([("t", 0, 9)].into_iter(), 0, |_, _| Some(12));
        // A rebuild replays from 0: its messages are taken, and written, but stored
        // offsets stay where they were.
        let start = Start {
            request: Request {
                topic: "t".to_owned(),
                partition: 0,
                since_ms: 0,
            },
            from: Some(0),
        };
        let ttls = crate::config::CacheConfig::default().ttls();
        assert_eq!(table.start_rebuild(start, None, &ttls), Some((0, 10)));
        assert_eq!(table.next("t", 0), Some(0));
        table.took("t", 0, 3);
        assert!(table
            .written([("t", 0, 3)].into_iter(), 0, |_, _| None)
            .is_empty());
    }

    fn rebuild_of(partition: i32) -> Start {
        Start {
            request: Request {
                topic: "t".to_owned(),
                partition,
                since_ms: 0,
            },
            from: Some(0),
        }
    }

    #[test]
    fn a_revocation_or_a_rewind_takes_the_rebuilds_with_it() {
        let ttls = crate::config::CacheConfig::default().ttls();
        let mut table = Partitions::default();
        table.apply(&assigned(&[("t", 0), ("t", 1)]));
        table.took("t", 0, 9);
        table.took("t", 1, 9);
        assert!(table.start_rebuild(rebuild_of(0), None, &ttls).is_some());
        assert!(table.start_rebuild(rebuild_of(1), None, &ttls).is_some());
        // Known already: not started again.
        assert!(table.start_rebuild(rebuild_of(1), None, &ttls).is_none());
        table.apply(&revoked(&[("t", 0)]));
        let progress = table.rebuild_progress();
        assert_eq!(progress.len(), 1);
        assert_eq!((progress[0].partition, progress[0].target), (1, 10));
        // Not held: no rebuild of it.
        assert!(table
            .start_rebuild(rebuild_of(0), Some(10), &ttls)
            .is_none());
        table.rewind();
        assert!(table.rebuild_progress().is_empty());
    }
}
