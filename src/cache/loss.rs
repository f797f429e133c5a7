//! Telling that Redis lost what this daemon wrote, and the rebuild requests that the
//! instances of a group share through Redis.
//!
//! A Redis that restarts without persistence, fails over to an empty replica or is
//! flushed answers as before, empty: nothing in a write's reply says the cache is gone.
//! So the instances of a consumer group keep a marker key, `{p}markers:{group}`, set with
//! every batch (`SET .. EX .. GET`, which also returns what was there) and looked at
//! while the stream is quiet. Its TTL is the longest category TTL, the most any data key
//! written can still live. The marker missing while this instance set it less than a TTL
//! ago is a loss; a fresh, never-written Redis is not one, since no instance has set the
//! marker there yet. The first instance to find the loss requests the rebuild of every
//! partition, and each instance then replays the partitions it owns.
//!
//! A rebuild to do is a field `{topic}/{partition}` of the hash `{p}rebuild:requests`, the
//! Kafka timestamp (unix milliseconds) to replay from: written for its partitions by an
//! instance that found a loss, or for every partition by `cache-layer rebuild`. Whoever
//! owns the partition replays it and then deletes the field, only if it still holds the
//! request it replayed. A rebalance or a crash in the middle leaves the field for the
//! next owner: no partition is left half-replayed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::{AsyncCommands as _, Script};

use super::{CacheLayer, Result};

/// How much earlier than its TTL says a marker may expire, for the clocks of Redis and
/// the daemon, and the round trip, not to read as a loss.
const EXPIRY_SLACK: Duration = Duration::from_secs(2);

/// A daemon instance's marker: the key, and when the instance last set it.
#[derive(Debug)]
pub(crate) struct Marker {
    key: String,
    /// In seconds; a reload of the TTLs changes it.
    ttl_secs: AtomicU64,
    /// When the last `SET` of the marker was answered; `None` before the first, and once
    /// a loss was found, until the marker is set again.
    set_at: Mutex<Option<Instant>>,
}

impl Marker {
    /// The marker of consumer group `group`, living `ttl` (the longest category TTL) from each write.
    pub(crate) fn new(cache: &CacheLayer, group: &str, ttl: Duration) -> Self {
        Self {
            key: cache.keys().marker(group),
            ttl_secs: AtomicU64::new(ttl.as_secs().max(1)),
            set_at: Mutex::new(None),
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.load(Ordering::Relaxed))
    }

    /// Sets the TTL of the next writes (a reload of the TTLs). A marker set under the
    /// old one is not judged: it may expire before the new TTL is over.
    pub(crate) fn set_ttl(&self, ttl: Duration) {
        let secs = ttl.as_secs().max(1);
        if self.ttl_secs.swap(secs, Ordering::Relaxed) != secs {
            *self.set_at.lock().expect("not poisoned") = None;
        }
    }

    /// Judges a reply: `present` is whether Redis held the marker when it answered a
    /// command sent at `sent`. A loss is a missing marker that this instance set, before
    /// `sent`, less than its TTL ago. Found once: the loss forgets the last write.
    fn judge(&self, present: bool, sent: Instant, set_now: bool) -> bool {
        let mut set_at = self.set_at.lock().expect("not poisoned");
        let lost = !present
            && set_at.is_some_and(|at| {
                at <= sent && sent.duration_since(at) + EXPIRY_SLACK < self.ttl()
            });
        if set_now {
            *set_at = Some(Instant::now());
        } else if lost {
            *set_at = None;
        }
        lost
    }
}

/// Deletes a rebuild request's field only if it still holds the request that was
/// replayed: a newer one written meanwhile stays for the next round.
///
/// KEYS[1]: the requests hash. ARGV[1]: the field; ARGV[2]: the value replayed.
static DELETE_IF_SAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0",
    )
});

/// The field of a partition in the requests hash.
fn field(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl CacheLayer {
    /// Sets the marker, with a batch; returns whether it found that Redis lost what this
    /// instance wrote (see [`Marker`]).
    pub(crate) async fn touch_marker(&self, marker: &Marker) -> Result<bool> {
        let sent = Instant::now();
        let old: Option<String> = redis::cmd("SET")
            .arg(&marker.key)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg("EX")
            .arg(marker.ttl().as_secs())
            .arg("GET")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(marker.judge(old.is_some(), sent, true))
    }

    /// Looks at the marker without setting it, while no batch does; returns whether Redis
    /// lost what this instance wrote.
    pub(crate) async fn check_marker(&self, marker: &Marker) -> Result<bool> {
        let sent = Instant::now();
        let present: bool = self.conn.clone().exists(&marker.key).await?;
        Ok(marker.judge(present, sent, false))
    }

    /// Whether Redis holds the marker at all, whoever set it.
    pub(crate) async fn has_marker(&self, marker: &Marker) -> Result<bool> {
        Ok(self.conn.clone().exists(&marker.key).await?)
    }

    /// Asks for a rebuild of `partitions` from `since_ms` (a Kafka timestamp), for their
    /// owners to pick up; the request lives `ttl`, as long as what it rebuilds.
    pub async fn request_rebuild(
        &self,
        partitions: &[(String, i32)],
        since_ms: i64,
        ttl: Duration,
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let key = self.keys.rebuild_requests();
        let fields: Vec<(String, i64)> = partitions
            .iter()
            .map(|(topic, partition)| (field(topic, *partition), since_ms))
            .collect();
        redis::pipe()
            .hset_multiple(&key, &fields)
            .ignore()
            .expire(&key, ttl.as_secs().max(1) as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The rebuilds asked for: partition to the Kafka timestamp to replay from. A field
    /// that does not parse (written by something else) is left out.
    pub(crate) async fn rebuild_requests(&self) -> Result<HashMap<(String, i32), i64>> {
        let fields: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.keys.rebuild_requests())
            .await?;
        Ok(fields
            .into_iter()
            .filter_map(|(field, since)| {
                let (topic, partition) = field.rsplit_once('/')?;
                Some((
                    (topic.to_owned(), partition.parse().ok()?),
                    since.parse().ok()?,
                ))
            })
            .collect())
    }

    /// A partition was replayed from `since_ms`: its request is done, unless a newer one
    /// replaced it.
    pub(crate) async fn rebuild_done(
        &self,
        topic: &str,
        partition: i32,
        since_ms: i64,
    ) -> Result<()> {
        DELETE_IF_SAME
            .key(self.keys.rebuild_requests())
            .arg(field(topic, partition))
            .arg(since_ms)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(ttl: Duration) -> Marker {
        Marker {
            key: "markers:test".into(),
            ttl_secs: AtomicU64::new(ttl.as_secs()),
            set_at: Mutex::new(None),
        }
    }

    #[test]
    fn a_marker_never_set_is_no_loss() {
        let marker = marker(Duration::from_secs(60));
        assert!(!marker.judge(false, Instant::now(), false));
        assert!(!marker.judge(false, Instant::now(), true), "first write");
    }

    #[test]
    fn a_marker_set_within_its_ttl_and_gone_is_a_loss_found_once() {
        let marker = marker(Duration::from_secs(60));
        marker.judge(false, Instant::now(), true);
        assert!(!marker.judge(true, Instant::now(), true));
        assert!(
            marker.judge(false, Instant::now(), false),
            "found by a check"
        );
        assert!(
            !marker.judge(false, Instant::now(), true),
            "not again by a write"
        );
        assert!(marker.judge(false, Instant::now(), true), "a second loss");
    }

    #[test]
    fn a_marker_set_after_the_command_was_sent_is_not_judged_by_it() {
        let marker = marker(Duration::from_secs(60));
        let sent = Instant::now();
        marker.judge(false, Instant::now(), true);
        assert!(!marker.judge(false, sent, false));
    }

    #[test]
    fn a_marker_that_may_have_expired_is_no_loss() {
        let marker = marker(Duration::from_secs(1));
        marker.judge(false, Instant::now(), true);
        assert!(!marker.judge(false, Instant::now(), false));
    }
}
