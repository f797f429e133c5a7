//! `[cache]`, `[batch]`, `[sweep]` and `[stats]`: how long keys live, how messages are
//! batched and retried, and how often the background task works.

use std::time::Duration;

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};

use super::{not_zero, positive, ConfigError};

/// Cache lifetimes. Every key the service writes carries one of these TTLs.
#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    pub default_ttl: Duration,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    pub trends_ttl: Option<Duration>,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    pub users_ttl: Option<Duration>,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    pub windows_ttl: Option<Duration>,
    /// How long a user stays in `users:active` after it was last seen.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub active_user_window: Duration,
    /// Whether a Redis found to have lost this daemon's writes (a restart without
    /// persistence, a failover to an empty replica, a flush) is rebuilt from Kafka.
    pub rebuild_on_loss: bool,
    /// What a key's TTL counts from: its write, or its event time.
    pub ttl_from: TtlFrom,
}

/// What a key's TTL counts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TtlFrom {
    /// The write: every write gives its key the whole TTL again.
    #[default]
    Write,
    /// The event time (`window_end`, or a user metric's `timestamp`): a key expires at
    /// that time plus its TTL, however late it is written, and a message already past
    /// that is not written at all.
    Event,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(300),
            trends_ttl: None,
            users_ttl: None,
            windows_ttl: None,
            active_user_window: Duration::from_secs(900),
            rebuild_on_loss: true,
            ttl_from: TtlFrom::Write,
        }
    }
}

impl CacheConfig {
    pub fn ttls(&self) -> Ttls {
        Ttls {
            trends: self.trends_ttl.unwrap_or(self.default_ttl),
            users: self.users_ttl.unwrap_or(self.default_ttl),
            windows: self.windows_ttl.unwrap_or(self.default_ttl),
            from: self.ttl_from,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("cache.default_ttl", self.default_ttl)?;
        for (key, ttl) in [
            ("cache.trends_ttl", self.trends_ttl),
            ("cache.users_ttl", self.users_ttl),
            ("cache.windows_ttl", self.windows_ttl),
        ] {
            if let Some(ttl) = ttl {
                positive(key, ttl)?;
            }
        }
        positive("cache.active_user_window", self.active_user_window)
    }
}

/// The TTL of each key category, with `default_ttl` filled in where none was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    pub trends: Duration,
    pub users: Duration,
    pub windows: Duration,
    pub from: TtlFrom,
}

impl Ttls {
    /// The TTL in seconds to give now a key of TTL `ttl` whose event happened at
    /// `event`: the whole TTL when it counts from the write (or the event has no time);
    /// what is left of it when it counts from the event, at least a second (a message
    /// past its expiry is not written, see [`Ttls::expired`]).
    pub(crate) fn seconds(
        &self,
        ttl: Duration,
        event: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> u64 {
        match (self.from, event) {
            (TtlFrom::Event, Some(event)) => {
                let left_ms = (event - now).num_milliseconds() + ttl.as_millis() as i64;
                (left_ms.max(1) as u64).div_ceil(1_000)
            }
            _ => ttl.as_secs(),
        }
    }

    /// Whether a key of TTL `ttl` for an event at `event` has expired already: only
    /// when TTLs count from the event.
    pub(crate) fn expired(
        &self,
        ttl: Duration,
        event: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> bool {
        match (self.from, event) {
            (TtlFrom::Event, Some(event)) => {
                chrono::TimeDelta::from_std(ttl).is_ok_and(|ttl| event + ttl <= now)
            }
            _ => false,
        }
    }

    /// The longest of them: the most that any key written now can live.
    pub(crate) fn longest(&self) -> Duration {
        self.trends.max(self.users).max(self.windows)
    }

    /// One TTL for every category.
    pub fn uniform(ttl: Duration) -> Self {
        Self {
            trends: ttl,
            users: ttl,
            windows: ttl,
            from: TtlFrom::Write,
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is written as soon as the consumer has no message ready and no write is
    /// in flight; otherwise when it holds this many messages...
    pub max_messages: usize,
    /// ...or this long after its first message arrived, whichever comes first...
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "max_wait_ms")]
    pub max_wait: Duration,
    /// ...or once its messages add up to this many bytes: with the batch in flight,
    /// what bounds the daemon's memory when messages are large.
    pub max_bytes: usize,
    /// A message larger than this is rejected as `too_large` and dead-lettered.
    pub max_message_bytes: usize,
    /// First delay before a failed batch write is retried; it doubles per attempt.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "retry_initial_ms")]
    pub retry_initial: Duration,
    /// The longest delay between two attempts (before jitter).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "retry_max_ms")]
    pub retry_max: Duration,
    /// How long a batch may keep failing before `/readyz` answers 503 with the reason.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "unready_after_ms")]
    pub unready_after: Duration,
    /// An event time (`window_end`, or `timestamp` of user metrics) further ahead of the
    /// daemon's clock than this is rejected as `future_timestamp`; stored values further
    /// ahead are skipped by reads and replaced by the next write.
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(rename = "max_future_skew_secs")]
    pub max_future_skew: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_messages: 5_000,
            max_wait: Duration::from_millis(50),
            max_bytes: 2_097_152,
            max_message_bytes: 1_048_576,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(10_000),
            unready_after: Duration::from_millis(3_000),
            max_future_skew: Duration::from_secs(300),
        }
    }
}

impl BatchConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("batch.max_wait_ms", self.max_wait)?;
        positive("batch.retry_initial_ms", self.retry_initial)?;
        positive("batch.retry_max_ms", self.retry_max)?;
        positive("batch.unready_after_ms", self.unready_after)?;
        positive("batch.max_future_skew_secs", self.max_future_skew)?;
        not_zero("batch.max_messages", self.max_messages)?;
        not_zero("batch.max_message_bytes", self.max_message_bytes)?;
        if self.max_bytes < self.max_message_bytes {
            return Err(ConfigError::invalid(
                "batch.max_bytes",
                format!(
                    "{} is below batch.max_message_bytes = {}: a batch must hold the largest message accepted",
                    self.max_bytes, self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(rename = "interval_secs")]
    pub interval: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
        }
    }
}

impl SweepConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("sweep.interval_secs", self.interval)
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(rename = "interval_secs")]
    pub interval: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
        }
    }
}

impl StatsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("stats.interval_secs", self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_from_the_event_is_what_is_left_of_it_and_ends_at_the_event_plus_the_ttl() {
        let now = Utc::now();
        let ttl = Duration::from_secs(600);
        let event = Ttls {
            from: TtlFrom::Event,
            ..Ttls::uniform(ttl)
        };
        let ago = |secs| Some(now - chrono::TimeDelta::seconds(secs));
        assert_eq!(event.seconds(ttl, ago(100), now), 500);
        assert_eq!(
            event.seconds(ttl, None, now),
            600,
            "no event time: the write"
        );
        assert!(!event.expired(ttl, ago(599), now));
        assert!(event.expired(ttl, ago(600), now));
        assert_eq!(
            event.seconds(ttl, ago(700), now),
            1,
            "never 0, which Redis refuses"
        );
        let write = Ttls::uniform(ttl);
        assert_eq!(write.seconds(ttl, ago(100), now), 600);
        assert!(!write.expired(ttl, ago(700), now));
    }
}
