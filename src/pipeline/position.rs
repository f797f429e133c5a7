//! Where each assigned partition stands: the offset of the next message the loop expects,
//! one after the last it took. Neither librdkafka nor the broker is trusted to deliver a
//! partition without holes: after a pause, tansu (a broker in its own process) answered
//! the fetch from the middle of a record batch with the batches after it, and the
//! daemon, storing the offset of the last message it took, acknowledged the rest of that
//! batch unread. So every delivered offset is checked against the expected one, and
//! resuming seeks each partition back to where it stands (see `consumer::resume`).
//!
//! A gap is not always a fault: compaction, transaction markers and retention leave
//! offsets with no message. Nor does seeking back to the expected offset always tell:
//! tansu answers a fetch from an offset inside a record batch with the batches after it,
//! so the same gap comes back. A gap is therefore refetched from before it, each time
//! twice as far back (the expected offset less 1, 2, 4, ...): once the partition is read
//! without a break up to the gap (a message before the expected offset arrives, then one
//! past it), or from offset 0, the log itself has nothing in between and the gap is
//! accepted. Messages before the expected offset were taken already and are dropped.

/// What to do with a delivered message, as [`Positions::check`] judges its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The expected offset, the first one seen of the partition, or an earlier one
    /// (a replay after a rebalance, which the idempotent writes make harmless).
    Take,
    /// The expected offset, delivered by the refetch of a gap: the gap was the
    /// delivery's, not the log's. Taken.
    Refilled,
    /// Before the expected offset while a gap is refetched: taken already, dropped.
    TakenAlready,
    /// Past the expected offset: the message is dropped and the partition must seek back
    /// to `seek_to`. `first` for the first seek of this gap.
    Gap {
        expected: i64,
        seek_to: i64,
        first: bool,
    },
    /// Past the expected offset again, after the partition was read without a break up
    /// to it: the log has no message from `expected` up to this one. Taken.
    GapInLog { expected: i64 },
}

#[derive(Debug, Clone, Copy)]
struct Position {
    next: i64,
    refetch: Option<Refetch>,
    /// `next` at the last [`Positions::stalled`] check.
    checked: Option<i64>,
}

/// A gap being refetched.
#[derive(Debug, Clone, Copy)]
struct Refetch {
    /// Where the last seek went.
    from: i64,
    /// Whether a message before the expected offset came since: the partition is read
    /// without a break up to the gap.
    reached: bool,
}

impl Position {
    fn at(next: i64) -> Self {
        Self {
            next,
            refetch: None,
            checked: None,
        }
    }
}

/// The position of every partition the loop has taken a message from since it was
/// assigned.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Per topic (a handful, found by a scan without hashing a name), per partition.
    topics: Vec<(String, Partitions)>,
}

/// The positions of one topic's partitions, indexed by partition: their ids are small
/// and dense, and the check runs once per message.
#[derive(Debug, Default)]
struct Partitions(Vec<Option<Position>>);

impl Partitions {
    fn or_insert(&mut self, partition: i32, position: Position) -> &mut Position {
        // librdkafka never delivers a message of a negative (unassigned) partition.
        let i = usize::try_from(partition).unwrap_or_default();
        if i >= self.0.len() {
            self.0.resize(i + 1, None);
        }
        self.0[i].get_or_insert(position)
    }

    fn get(&self, partition: i32) -> Option<&Position> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.0.get(i))
            .and_then(Option::as_ref)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut Position)> {
        self.0
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.as_mut().map(|p| (i as i32, p)))
    }

    fn retain(&mut self, mut keep: impl FnMut(i32) -> bool) {
        for (i, position) in self.0.iter_mut().enumerate() {
            if !keep(i as i32) {
                *position = None;
            }
        }
    }
}

impl Positions {
    fn partitions(&mut self, topic: &str) -> &mut Partitions {
        let i = match self.topics.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((topic.to_owned(), Partitions::default()));
                self.topics.len() - 1
            }
        };
        &mut self.topics[i].1
    }

    /// Checks a delivered offset, and moves the partition past it unless it is a gap to
    /// refetch.
    pub(crate) fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Checked {
        let position = self
            .partitions(topic)
            .or_insert(partition, Position::at(offset));
        let next = position.next;
        let Some(refetch) = &mut position.refetch else {
            if offset > next {
                let seek_to = (next - 1).max(0);
                position.refetch = Some(Refetch {
                    from: seek_to,
                    reached: false,
                });
                return Checked::Gap {
                    expected: next,
                    seek_to,
                    first: true,
                };
            }
            position.next = offset + 1;
            return Checked::Take;
        };
        let checked = match offset.cmp(&next) {
            std::cmp::Ordering::Less => {
                refetch.reached = true;
                return Checked::TakenAlready;
            }
            std::cmp::Ordering::Equal => Checked::Refilled,
            std::cmp::Ordering::Greater if refetch.reached || refetch.from == 0 => {
                Checked::GapInLog { expected: next }
            }
            std::cmp::Ordering::Greater => {
                refetch.from = (next - 2 * (next - refetch.from)).max(0);
                return Checked::Gap {
                    expected: next,
                    seek_to: refetch.from,
                    first: false,
                };
            }
        };
        position.next = offset + 1;
        position.refetch = None;
        checked
    }

    /// The partitions that have not moved since the last call although the broker holds
    /// more (`high_watermark`, from librdkafka's statistics): a fetch from inside a
    /// record batch may deliver nothing at all when the batch is the partition's last.
    /// Each is refetched as a gap is, and one whose refetch delivered nothing is
    /// refetched from further back at the next call. Called every few seconds, never while paused.
    pub(crate) fn stalled(
        &mut self,
        high_watermark: impl Fn(&str, i32) -> Option<i64>,
    ) -> Vec<(String, i32, Checked)> {
        let mut stalled = Vec::new();
        for (topic, partitions) in &mut self.topics {
            for (partition, position) in partitions.iter_mut() {
                let still = position.checked.replace(position.next) == Some(position.next);
                let behind = high_watermark(topic, partition).is_some_and(|hw| hw > position.next);
                if !(still && behind) {
                    continue;
                }
                let next = position.next;
                let gap = match &mut position.refetch {
                    None => {
                        let seek_to = (next - 1).max(0);
                        position.refetch = Some(Refetch {
                            from: seek_to,
                            reached: false,
                        });
                        Checked::Gap {
                            expected: next,
                            seek_to,
                            first: true,
                        }
                    }
                    // Eight times as far back each time rather than twice: each step
                    // here waits a check interval, not a fetch.
                    Some(refetch) if !refetch.reached && refetch.from > 0 => {
                        refetch.from = (next - 8 * (next - refetch.from)).max(0);
                        Checked::Gap {
                            expected: next,
                            seek_to: refetch.from,
                            first: false,
                        }
                    }
                    // Read up to the gap, or from offset 0: what follows comes when the
                    // broker has it (a transaction marker may end the partition).
                    Some(_) => continue,
                };
                stalled.push((topic.clone(), partition, gap));
            }
        }
        stalled
    }

    /// Starts every partition's stall check afresh, after fetching was paused.
    pub(crate) fn restart_stall_checks(&mut self) {
        for (_, partitions) in &mut self.topics {
            for (_, position) in partitions.iter_mut() {
                position.checked = None;
            }
        }
    }

    /// Expects `offset` next of a partition without a position yet: where a partition
    /// just assigned starts, or a message the loop could not take (a full batch while
    /// paused) that must be read again. A partition with a position keeps it.
    pub(crate) fn start_at(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions(topic)
            .or_insert(partition, Position::at(offset));
    }

    /// Expects `offset` next of a partition, wherever it stood: a rebuild replays it from
    /// there.
    pub(crate) fn move_to(&mut self, topic: &str, partition: i32, offset: i64) {
        *self
            .partitions(topic)
            .or_insert(partition, Position::at(offset)) = Position::at(offset);
    }

    /// The offset of the next message expected of a partition; `None` when nothing was
    /// delivered of it since it was assigned.
    pub(crate) fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.topics
            .iter()
            .find(|(t, _)| t == topic)
            .and_then(|(_, partitions)| partitions.get(partition))
            .map(|p| p.next)
    }

    /// Forgets the partitions that are no longer assigned: once another member had one,
    /// it starts again from the group's commit.
    pub(crate) fn retain(&mut self, assigned: impl Fn(&str, i32) -> bool) {
        for (topic, partitions) in &mut self.topics {
            partitions.retain(|partition| assigned(topic, partition));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_offsets_and_replays_are_taken() {
        let mut positions = Positions::default();
        assert_eq!(positions.check("t", 0, 10), Checked::Take);
        assert_eq!(positions.check("t", 0, 11), Checked::Take);
        assert_eq!(positions.next("t", 0), Some(12));
        // A replay after a rebalance, from an earlier offset, moves the position back.
        assert_eq!(positions.check("t", 0, 5), Checked::Take);
        assert_eq!(positions.next("t", 0), Some(6));
        assert_eq!(positions.next("t", 1), None);
    }

    #[test]
    fn a_gap_is_refetched_from_just_before_it_and_refilled() {
        let mut positions = Positions::default();
        positions.check("t", 3, 448);
        assert_eq!(
            positions.check("t", 3, 621),
            Checked::Gap {
                expected: 449,
                seek_to: 448,
                first: true
            }
        );
        // The message past the gap was not taken: the partition still expects 449.
        assert_eq!(positions.next("t", 3), Some(449));
        assert_eq!(positions.check("t", 3, 448), Checked::TakenAlready);
        assert_eq!(positions.check("t", 3, 449), Checked::Refilled);
        assert_eq!(positions.check("t", 3, 450), Checked::Take);
    }

    #[test]
    fn a_broker_that_skips_the_rest_of_a_batch_is_refetched_from_further_back() {
        let mut positions = Positions::default();
        positions.check("t", 0, 991);
        let seeks: Vec<_> = std::iter::from_fn(|| match positions.check("t", 0, 1000) {
            Checked::Gap { seek_to, .. } => Some(seek_to),
            _ => None,
        })
        .take(5)
        .collect();
        assert_eq!(seeks, [991, 990, 988, 984, 976]);
        // From 976 the broker sends the batch from 960: taken already up to 991.
        assert_eq!(positions.check("t", 0, 960), Checked::TakenAlready);
        assert_eq!(positions.check("t", 0, 991), Checked::TakenAlready);
        assert_eq!(positions.check("t", 0, 992), Checked::Refilled);
    }

    #[test]
    fn a_gap_read_across_without_a_break_is_the_logs_own() {
        let mut positions = Positions::default();
        positions.check("t", 0, 7);
        assert!(matches!(
            positions.check("t", 0, 9),
            Checked::Gap { expected: 8, .. }
        ));
        assert_eq!(positions.check("t", 0, 7), Checked::TakenAlready);
        assert_eq!(
            positions.check("t", 0, 9),
            Checked::GapInLog { expected: 8 }
        );
        assert_eq!(positions.next("t", 0), Some(10));
        // The next gap is refetched again.
        assert!(matches!(
            positions.check("t", 0, 12),
            Checked::Gap { first: true, .. }
        ));
    }

    #[test]
    fn a_gap_at_the_start_of_the_log_is_the_logs_own() {
        let mut positions = Positions::default();
        positions.start_at("t", 0, 0);
        // Retention deleted the first five messages: offset 0 delivers offset 5.
        assert!(matches!(
            positions.check("t", 0, 5),
            Checked::Gap { seek_to: 0, .. }
        ));
        assert_eq!(
            positions.check("t", 0, 5),
            Checked::GapInLog { expected: 0 }
        );
    }

    #[test]
    fn a_partition_that_stops_short_of_the_high_watermark_is_refetched() {
        let mut positions = Positions::default();
        positions.check("t", 0, 491);
        positions.check("t", 1, 10);
        let behind = |_: &str, partition: i32| Some(if partition == 0 { 500 } else { 11 });
        assert!(
            positions.stalled(behind).is_empty(),
            "the first check only notes"
        );
        let stalled = positions.stalled(behind);
        assert_eq!(
            stalled,
            [(
                "t".to_owned(),
                0,
                Checked::Gap {
                    expected: 492,
                    seek_to: 491,
                    first: true
                }
            )]
        );
        // Nothing came from 491 either: further back.
        let again = positions.stalled(behind);
        assert!(matches!(
            again[0].2,
            Checked::Gap {
                seek_to: 484,
                first: false,
                ..
            }
        ));
        assert_eq!(positions.check("t", 0, 480), Checked::TakenAlready);
        assert_eq!(positions.check("t", 0, 492), Checked::Refilled);
        assert!(positions.stalled(behind).is_empty(), "it moved");
    }

    #[test]
    fn a_partition_starts_where_it_is_expected_to_unless_it_stands_somewhere() {
        let mut positions = Positions::default();
        positions.start_at("t", 0, 40);
        assert_eq!(positions.next("t", 0), Some(40));
        positions.check("t", 1, 5);
        positions.start_at("t", 1, 9);
        assert_eq!(positions.next("t", 1), Some(6));
    }

    #[test]
    fn a_partition_moved_back_checks_from_there() {
        let mut positions = Positions::default();
        positions.check("t", 0, 90);
        positions.move_to("t", 0, 20);
        assert_eq!(positions.next("t", 0), Some(20));
        // A broker that answers from the next record batch: the gap is refetched.
        assert!(matches!(
            positions.check("t", 0, 32),
            Checked::Gap { expected: 20, .. }
        ));
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut positions = Positions::default();
        positions.check("a", 0, 1);
        positions.check("a", 1, 1);
        positions.check("b", 0, 1);
        positions.retain(|topic, partition| topic == "a" && partition == 1);
        assert_eq!(positions.next("a", 0), None);
        assert_eq!(positions.next("a", 1), Some(2));
        assert_eq!(positions.next("b", 0), None);
    }
}
