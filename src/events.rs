//! Everything that happens and an operator can see, one function per event, as Vector's
//! `InternalEvent`s: each updates its metrics, the instance's [`Status`] and its log
//! line together, so that the three never disagree and each event is counted in one
//! place. The metric names and their HELP texts are in the `metrics` catalog.
//!
//! Hot-path events are emitted once per batch, not per message; the per-message ones
//! (a message received, rejected or expired) touch an atomic and, for the rare two, a
//! counter and a log line. A flood of rejected messages is logged one by one only up to
//! [`LINES_PER_WINDOW`] in each [`LOG_WINDOW`]; the rest are counted, and a summary
//! line tells how many ([`summarize_suppressed`], called each second by the loop).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use tracing::{debug, error, info, warn};

use crate::cache::{CacheError, CacheStats, ServerInfo, SweepReport};
use crate::kafka::KafkaErrorKind;
use crate::metrics::*;
use crate::models::ValidationError;
use crate::schema::Category;
use crate::status::{RebuildProgress, Status};

/// Where a message came from, for its log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// How many per-message lines of one kind are logged in full in each [`LOG_WINDOW`].
const LINES_PER_WINDOW: u64 = 10;

/// The window of [`LINES_PER_WINDOW`].
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The lines of one per-message event logged in the current window, and those held back.
#[derive(Debug)]
struct Throttle(Mutex<Option<ThrottleWindow>>);

#[derive(Debug, Clone, Copy)]
struct ThrottleWindow {
    started: Instant,
    logged: u64,
    held_back: u64,
}

impl Throttle {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Whether a line may be logged at `now`; one that may not is counted.
    fn admit(&self, now: Instant) -> bool {
        let Ok(mut window) = self.0.lock() else {
            return true;
        };
        let current = window.get_or_insert(ThrottleWindow {
            started: now,
            logged: 0,
            held_back: 0,
        });
        if now.duration_since(current.started) >= LOG_WINDOW && current.held_back == 0 {
            *current = ThrottleWindow {
                started: now,
                logged: 0,
                held_back: 0,
            };
        }
        if current.logged < LINES_PER_WINDOW {
            current.logged += 1;
            true
        } else {
            current.held_back += 1;
            false
        }
    }

    /// Once the window is over, how many lines it held back (then a new window starts).
    fn held_back(&self, now: Instant) -> Option<u64> {
        let mut window = self.0.lock().ok()?;
        let current = window.as_mut()?;
        if now.duration_since(current.started) < LOG_WINDOW || current.held_back == 0 {
            return None;
        }
        let held_back = current.held_back;
        *window = None;
        Some(held_back)
    }
}

/// The rejected messages' lines.
static REJECTED_LINES: Throttle = Throttle::new();

/// Logs how many rejected messages a finished window did not log one by one.
pub(crate) fn summarize_suppressed() {
    if let Some(held_back) = REJECTED_LINES.held_back(Instant::now()) {
        warn!(
            held_back,
            window_secs = LOG_WINDOW.as_secs(),
            "more messages rejected than logged one by one ({LINES_PER_WINDOW} a window); cache_layer_messages_rejected_total counts them all, the dead-letter topic keeps them"
        );
    }
}

/// A message was received and added to the batch.
pub(crate) fn message_received(status: &Status) {
    status.consumed(false);
}

/// A message failed decoding or validation: it goes to the dead-letter topic with its
/// batch, and its offset is stored with the rest.
pub(crate) fn message_rejected(status: &Status, at: At<'_>, error: &ValidationError) {
    status.consumed(true);
    let reason = error.reason.as_str();
    counter!(MESSAGES_REJECTED, "topic" => at.topic.to_owned(), "reason" => reason).increment(1);
    if REJECTED_LINES.admit(Instant::now()) {
        warn!(
            topic = at.topic,
            partition = at.partition,
            offset = at.offset,
            reason,
            "message rejected: {error}"
        );
    }
}

/// A message already past its expiry, with TTLs that count from the event: not written.
pub(crate) fn message_expired(status: &Status, at: At<'_>) {
    status.consumed(false);
    counter!(MESSAGES_EXPIRED, "topic" => at.topic.to_owned()).increment(1);
    debug!(
        topic = at.topic,
        partition = at.partition,
        offset = at.offset,
        "message past its expiry (cache.ttl_from = \"event\"): not written"
    );
}

/// A batch was handed to its write: the messages it holds, per topic.
pub(crate) fn batch_taken<'a>(per_topic: impl Iterator<Item = (&'a str, u64)>) {
    for (topic, messages) in per_topic {
        counter!(MESSAGES_CONSUMED, "topic" => topic.to_owned()).increment(messages);
    }
}

/// What a written batch did, for [`batch_written`].
pub(crate) struct BatchWritten<L, R, F> {
    /// Messages in the batch, every one of them acknowledged.
    pub(crate) messages: usize,
    /// How long the successful Redis pipeline took.
    pub(crate) pipeline: Duration,
    /// How late each message was, in seconds from its Kafka timestamp.
    pub(crate) latencies: L,
    /// The rejected messages, per topic.
    pub(crate) rejected: R,
    /// The topic of each message Redis refused for its data.
    pub(crate) refused: F,
    /// Whether the rejected and refused messages went to a dead-letter topic.
    pub(crate) dead_letters: bool,
}

/// A batch was written and its offsets stored: writes are not failing (any more), and
/// Redis answers.
pub(crate) fn batch_written<'a, L, R, F>(status: &Status, batch: BatchWritten<L, R, F>)
where
    L: Iterator<Item = f64>,
    R: Iterator<Item = (&'a str, u64)>,
    F: Iterator<Item = &'a str>,
{
    let mut dead_lettered = 0;
    for topic in batch.refused {
        counter!(MESSAGES_REFUSED, "topic" => topic.to_owned()).increment(1);
        if batch.dead_letters {
            counter!(MESSAGES_DEAD_LETTERED, "topic" => topic.to_owned()).increment(1);
            dead_lettered += 1;
        }
    }
    if batch.dead_letters {
        for (topic, rejected) in batch.rejected {
            counter!(MESSAGES_DEAD_LETTERED, "topic" => topic.to_owned()).increment(rejected);
            dead_lettered += rejected as usize;
        }
    }
    counter!(BATCHES_WRITTEN).increment(1);
    histogram!(BATCH_SIZE).record(batch.messages as f64);
    histogram!(PIPELINE_DURATION).record(batch.pipeline.as_secs_f64());
    let latency = histogram!(END_TO_END_LATENCY);
    for seconds in batch.latencies {
        latency.record(seconds.max(0.0));
    }
    status.batch_written(batch.messages, dead_lettered);
    status.write_succeeded();
    redis_state(status, true);
}

/// Why an attempt at a batch failed, for [`batch_failed`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum BatchFailure {
    /// Redis failed, with the error's `kind` label.
    Redis { kind: &'static str, retriable: bool },
    /// The dead-letter topic could not take the batch's dead letters.
    DeadLetter,
}

/// An attempt at writing a batch of `messages` failed with `error`; the same batch is
/// tried again. Readiness counts from the first failure.
pub(crate) fn batch_failed(
    status: &Status,
    attempt: u32,
    messages: usize,
    error: &dyn std::error::Error,
    failure: BatchFailure,
) {
    counter!(BATCH_RETRIES).increment(1);
    status.write_failed(error.to_string());
    let retriable = match failure {
        BatchFailure::Redis { kind, retriable } => {
            redis_error(kind);
            redis_state(status, false);
            retriable
        }
        BatchFailure::DeadLetter => {
            counter!(DEAD_LETTER_ERRORS).increment(1);
            true
        }
    };
    if retriable {
        warn!(attempt, %error, messages, "batch write failed; retrying the same batch");
    } else {
        error!(attempt, %error, messages, "Redis refuses the batch; retrying until an operator fixes it");
    }
}

/// Whether Redis answered the last write or check: the one place that tells the
/// instance's status.
pub(crate) fn redis_state(status: &Status, ok: bool) {
    status.set_redis_ok(ok);
}

/// A Kafka client error of `kind`; the caller logs it, rate-limited.
pub(crate) fn kafka_error(kind: KafkaErrorKind) {
    counter!(KAFKA_ERRORS, "kind" => kind.as_str()).increment(1);
}

/// Where the rebuilds stand, for readiness and the metrics.
pub(crate) fn rebuilds(status: &Status, progress: Vec<RebuildProgress>) {
    gauge!(REBUILD_PARTITIONS).set(progress.len() as f64);
    status.set_rebuilding(progress);
}

/// The daemon started.
pub(crate) fn started() {
    gauge!(UP).set(1.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The daemon stopped.
pub(crate) fn stopped() {
    gauge!(UP).set(0.0);
    gauge!(READY).set(0.0);
}

/// A rebalance assigned (`revoke` false) or revoked partitions; `assigned` is how many
/// this instance holds after it.
pub(crate) fn rebalanced(revoke: bool, assigned: usize) {
    let kind = if revoke { "revoke" } else { "assign" };
    counter!(REBALANCES, "kind" => kind).increment(1);
    gauge!(PARTITIONS_ASSIGNED).set(assigned as f64);
}

/// A batch holding a partition revoked was given up: the one being collected, or the
/// one in flight with no attempt under way, or with one still under way at the bound
/// (`unfinished`).
pub(crate) fn batch_given_up(unfinished: bool) {
    let outcome = if unfinished {
        "unfinished"
    } else {
        "abandoned"
    };
    counter!(REVOKED_BATCHES, "outcome" => outcome).increment(1);
}

/// A SIGHUP reload: applied, or refused for an invalid configuration.
pub(crate) fn config_reloaded(applied: bool) {
    let outcome = if applied { "applied" } else { "failed" };
    counter!(CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

pub(crate) fn dead_letter_truncated(topic: &str) {
    counter!(DEAD_LETTERS_TRUNCATED, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn dead_letter_dropped(topic: &str) {
    counter!(DEAD_LETTERS_DROPPED, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn redis_error(kind: &'static str) {
    counter!(REDIS_ERRORS, "kind" => kind).increment(1);
}

pub(crate) fn http_shed() {
    counter!(HTTP_SHED).increment(1);
}

/// A connection on `listener` opened (`+1`) or closed (`-1`).
pub(crate) fn http_connections(listener: &'static str, delta: f64) {
    gauge!(HTTP_CONNECTIONS, "listener" => listener).increment(delta);
}

pub(crate) fn topic_missing(topic: &str, missing: bool) {
    gauge!(TOPIC_MISSING, "topic" => topic.to_owned()).set(if missing { 1.0 } else { 0.0 });
}

pub(crate) fn offsets_committed(ok: bool) {
    if ok {
        counter!(OFFSET_COMMITS).increment(1);
    } else {
        counter!(OFFSET_COMMIT_FAILURES).increment(1);
    }
}

/// Redis was found to have lost what this instance wrote.
pub(crate) fn redis_data_loss() {
    counter!(REDIS_DATA_LOSS).increment(1);
}

/// Messages replayed by a rebuild, in one batch.
pub(crate) fn rebuild_messages(topic: &str, messages: u64) {
    counter!(REBUILD_MESSAGES, "topic" => topic.to_owned()).increment(messages);
}

/// A statistics run finished.
pub(crate) fn cache_stats(stats: &CacheStats) {
    for (category, keys) in [
        (Category::Trends, stats.trends_keys),
        (Category::Users, stats.users_keys),
        (Category::Windows, stats.windows_keys),
    ] {
        gauge!(CACHE_KEYS, "category" => category.as_str()).set(keys as f64);
    }
    gauge!(REDIS_USED_MEMORY).set(stats.server.used_memory as f64);
    gauge!(REDIS_CONNECTED_CLIENTS).set(stats.server.connected_clients as f64);
    counter!(REDIS_KEYSPACE_HITS).absolute(stats.server.keyspace_hits);
    counter!(REDIS_KEYSPACE_MISSES).absolute(stats.server.keyspace_misses);
    counter!(REDIS_EVICTED_KEYS).absolute(stats.server.evicted_keys);
    gauge!(REDIS_MAXMEMORY).set(stats.server.maxmemory as f64);
    gauge!(CACHE_HIT_RATIO).set(stats.server.hit_ratio);
    counter!(STATS_RUNS, "outcome" => "ok").increment(1);
    info!(
        trends_keys = stats.trends_keys,
        users_keys = stats.users_keys,
        windows_keys = stats.windows_keys,
        used_memory = %stats.server.used_memory_human,
        hit_ratio = format!("{:.3}", stats.server.hit_ratio),
        "cache stats"
    );
}

/// The sentinels named another master `failovers` times since the start.
pub(crate) fn redis_failovers(failovers: u64) {
    counter!(REDIS_FAILOVERS).absolute(failovers);
}

/// Redis's memory policy is the server's now, and was `before`: a warning at the first
/// statistics and at every change if it evicts keys regardless of their TTL.
pub(crate) fn memory_policy(before: Option<&str>, server: &ServerInfo) {
    let policy = server.maxmemory_policy.as_str();
    if let Some(before) = before {
        gauge!(REDIS_MAXMEMORY_POLICY, "policy" => before.to_owned()).set(0.0);
    }
    gauge!(REDIS_MAXMEMORY_POLICY, "policy" => policy.to_owned()).set(1.0);
    if server.evicts_any_key() {
        warn!(
            policy,
            maxmemory = server.maxmemory,
            "Redis's maxmemory-policy evicts keys regardless of their TTL: at its memory limit \
             it drops cache keys that are still current, which the cache only gets back from \
             their next message; volatile-ttl drops those closest to expiry first"
        );
    } else if before.is_some() {
        info!(policy, "Redis's maxmemory-policy changed");
    }
}

/// A statistics round failed; the next one tries again.
pub(crate) fn stats_failed(error: &CacheError) {
    counter!(STATS_RUNS, "outcome" => "failed").increment(1);
    redis_error(error.kind_label());
    warn!(%error, "cache stats skipped this round");
}

/// A sweep ran: what it removed and how long it took.
pub(crate) fn swept(report: &SweepReport, elapsed: Duration) {
    for (category, removed) in report.removed() {
        counter!(SWEEP_REMOVED, "category" => category.as_str()).increment(removed);
    }
    for (category, deleted) in report.without_ttl() {
        counter!(SWEEP_KEYS_WITHOUT_TTL, "category" => category.as_str()).increment(deleted);
    }
    histogram!(SWEEP_DURATION).record(elapsed.as_secs_f64());
    counter!(SWEEP_RUNS, "outcome" => "swept").increment(1);
    let anomalies =
        report.trends_without_ttl + report.users_without_ttl + report.windows_without_ttl;
    if anomalies > 0 {
        warn!(?report, "sweep deleted keys that had no TTL; every write sets one, so something else wrote them");
    }
    info!(
        trends_removed = report.trends_removed,
        users_removed = report.users_removed,
        windows_removed = report.windows_removed,
        keys_without_ttl = anomalies,
        "sweep done"
    );
}

/// Another instance holds the sweep lock for this interval.
pub(crate) fn sweep_skipped() {
    counter!(SWEEP_RUNS, "outcome" => "skipped").increment(1);
    info!("sweep skipped: another instance holds the lock for this interval");
}

/// A sweep failed; the next round tries again.
pub(crate) fn sweep_failed(error: &CacheError) {
    counter!(SWEEP_RUNS, "outcome" => "failed").increment(1);
    redis_error(error.kind_label());
    warn!(%error, "sweep skipped this round");
}

pub(crate) fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

pub(crate) use crate::metrics::{consumer_lag, lag_revoked};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_in_full_up_to_the_limit_then_summarized_once_a_window() {
        let throttle = Throttle::new();
        let start = Instant::now();
        let admitted = (0..25).filter(|_| throttle.admit(start)).count() as u64;
        assert_eq!(admitted, LINES_PER_WINDOW);
        assert_eq!(throttle.held_back(start + LOG_WINDOW / 2), None);
        let over = start + LOG_WINDOW;
        assert_eq!(throttle.held_back(over), Some(25 - LINES_PER_WINDOW));
        assert_eq!(throttle.held_back(over), None);
        // A new window logs in full again.
        assert!(throttle.admit(over));
    }

    #[test]
    fn a_quiet_window_starts_afresh_without_a_summary() {
        let throttle = Throttle::new();
        let start = Instant::now();
        assert!(throttle.admit(start));
        assert_eq!(throttle.held_back(start + LOG_WINDOW), None);
        let later = start + 2 * LOG_WINDOW;
        assert!((0..LINES_PER_WINDOW).all(|_| throttle.admit(later)));
        assert!(!throttle.admit(later));
    }
}
