//! Every Prometheus metric of cache-layer: its name, its HELP text, and one function per
//! thing that happened. Nothing else in the crate names a metric.
//!
//! Conventions: every name starts with `cache_layer_`; counters end in `_total`; units
//! are `_seconds`, `_bytes` or `_messages`. Labels are low-cardinality only: a topic, a
//! partition, a reason, a category, an error kind. A keyword, user id or Redis key is
//! never a label. Hot-path counters are incremented once per batch, not per message.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod lag;

pub use lag::{consumer_lag, lag_revoked};

use crate::cache::{CacheStats, SweepReport, REDIS_ERROR_KINDS};
use crate::models::RejectReason;
use crate::pipeline::KAFKA_ERROR_KINDS;
use crate::schema::Category;

pub const MESSAGES_CONSUMED: &str = "cache_layer_messages_consumed_total";
pub const MESSAGES_REJECTED: &str = "cache_layer_messages_rejected_total";
pub const MESSAGES_EXPIRED: &str = "cache_layer_messages_expired_total";
pub const MESSAGES_DEAD_LETTERED: &str = "cache_layer_messages_dead_lettered_total";
pub const BATCHES_WRITTEN: &str = "cache_layer_batches_written_total";
pub const BATCH_SIZE: &str = "cache_layer_batch_size_messages";
pub const PIPELINE_DURATION: &str = "cache_layer_pipeline_duration_seconds";
pub const REDIS_ERRORS: &str = "cache_layer_redis_errors_total";
pub const DEAD_LETTER_ERRORS: &str = "cache_layer_dead_letter_errors_total";
pub const MESSAGES_REFUSED: &str = "cache_layer_messages_refused_total";
pub const DEAD_LETTERS_TRUNCATED: &str = "cache_layer_dead_letters_truncated_total";
pub const DEAD_LETTERS_DROPPED: &str = "cache_layer_dead_letters_dropped_total";
pub const BATCH_RETRIES: &str = "cache_layer_batch_retries_total";
pub const KAFKA_ERRORS: &str = "cache_layer_kafka_errors_total";
pub const HTTP_SHED: &str = "cache_layer_http_shed_requests_total";
pub const HTTP_CONNECTIONS: &str = "cache_layer_http_connections";
pub const TOPIC_MISSING: &str = "cache_layer_topic_missing";
pub const REBALANCES: &str = "cache_layer_rebalances_total";
pub const PARTITIONS_ASSIGNED: &str = "cache_layer_partitions_assigned";
pub const CONFIG_RELOADS: &str = "cache_layer_config_reloads_total";
pub const OFFSET_COMMITS: &str = "cache_layer_offset_commits_total";
pub const OFFSET_COMMIT_FAILURES: &str = "cache_layer_offset_commit_failures_total";
pub const OFFSET_GAPS: &str = "cache_layer_offset_gaps_total";
pub const OFFSET_GAPS_IN_LOG: &str = "cache_layer_offset_gaps_in_log_total";
pub const REDIS_DATA_LOSS: &str = "cache_layer_redis_data_loss_total";
pub const REBUILD_MESSAGES: &str = "cache_layer_rebuild_messages_total";
pub const REBUILD_PARTITIONS: &str = "cache_layer_rebuild_partitions";
pub const CONSUMER_LAG: &str = "cache_layer_consumer_lag_messages";
pub const END_TO_END_LATENCY: &str = "cache_layer_end_to_end_latency_seconds";
pub const CACHE_KEYS: &str = "cache_layer_cache_keys";
pub const REDIS_USED_MEMORY: &str = "cache_layer_redis_used_memory_bytes";
pub const REDIS_CONNECTED_CLIENTS: &str = "cache_layer_redis_connected_clients";
pub const REDIS_KEYSPACE_HITS: &str = "cache_layer_redis_keyspace_hits_total";
pub const REDIS_KEYSPACE_MISSES: &str = "cache_layer_redis_keyspace_misses_total";
pub const REDIS_EVICTED_KEYS: &str = "cache_layer_redis_evicted_keys_total";
pub const REDIS_MAXMEMORY: &str = "cache_layer_redis_maxmemory_bytes";
pub const REDIS_MAXMEMORY_POLICY: &str = "cache_layer_redis_maxmemory_policy_info";
pub const REDIS_FAILOVERS: &str = "cache_layer_redis_failovers_total";
pub const CACHE_HIT_RATIO: &str = "cache_layer_cache_hit_ratio";
pub const STATS_RUNS: &str = "cache_layer_stats_runs_total";
pub const SWEEP_REMOVED: &str = "cache_layer_sweep_removed_total";
pub const SWEEP_KEYS_WITHOUT_TTL: &str = "cache_layer_sweep_keys_without_ttl_total";
pub const SWEEP_DURATION: &str = "cache_layer_sweep_duration_seconds";
pub const SWEEP_RUNS: &str = "cache_layer_sweep_runs_total";
pub const READY: &str = "cache_layer_ready";
pub const UP: &str = "cache_layer_up";
pub const BUILD_INFO: &str = "cache_layer_build_info";

/// Every metric name, for documentation checks and dashboards.
pub const ALL: [&str; 47] = [
    MESSAGES_CONSUMED,
    MESSAGES_REJECTED,
    MESSAGES_EXPIRED,
    MESSAGES_DEAD_LETTERED,
    BATCHES_WRITTEN,
    BATCH_SIZE,
    PIPELINE_DURATION,
    REDIS_ERRORS,
    DEAD_LETTER_ERRORS,
    MESSAGES_REFUSED,
    DEAD_LETTERS_TRUNCATED,
    DEAD_LETTERS_DROPPED,
    BATCH_RETRIES,
    KAFKA_ERRORS,
    TOPIC_MISSING,
    HTTP_SHED,
    HTTP_CONNECTIONS,
    REBALANCES,
    PARTITIONS_ASSIGNED,
    CONFIG_RELOADS,
    OFFSET_COMMITS,
    OFFSET_COMMIT_FAILURES,
    OFFSET_GAPS,
    OFFSET_GAPS_IN_LOG,
    REDIS_DATA_LOSS,
    REBUILD_MESSAGES,
    REBUILD_PARTITIONS,
    CONSUMER_LAG,
    END_TO_END_LATENCY,
    CACHE_KEYS,
    REDIS_USED_MEMORY,
    REDIS_CONNECTED_CLIENTS,
    REDIS_KEYSPACE_HITS,
    REDIS_KEYSPACE_MISSES,
    REDIS_EVICTED_KEYS,
    REDIS_MAXMEMORY,
    REDIS_MAXMEMORY_POLICY,
    REDIS_FAILOVERS,
    CACHE_HIT_RATIO,
    STATS_RUNS,
    SWEEP_REMOVED,
    SWEEP_KEYS_WITHOUT_TTL,
    SWEEP_DURATION,
    SWEEP_RUNS,
    READY,
    UP,
    BUILD_INFO,
];

const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and describes every metric, which gives each its HELP line.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(PIPELINE_DURATION.into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(SWEEP_DURATION.into()), &SECONDS_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(END_TO_END_LATENCY.into()),
                        &LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS)
                })
                .expect("static buckets are valid")
                .install_recorder()
                .expect("the metrics recorder is installed once, here");
            describe();
            handle
        })
        .clone()
}

/// The rendered text exposition, for `GET /metrics`.
pub fn render() -> String {
    let mut text = install().render();
    lag::render(&mut text);
    text
}

fn describe() {
    describe_counter!(
        REBALANCES,
        Unit::Count,
        "Consumer group rebalances this instance took part in, by kind (assign, revoke); with cooperative-sticky, each moves only some partitions."
    );
    describe_gauge!(
        PARTITIONS_ASSIGNED,
        Unit::Count,
        "Partitions assigned to this instance."
    );
    describe_counter!(
        CONFIG_RELOADS,
        Unit::Count,
        "Configuration reloads on SIGHUP, by outcome (applied, failed: the file or the environment is invalid, and nothing changed)."
    );
    describe_counter!(
        MESSAGES_CONSUMED,
        Unit::Count,
        "Kafka messages consumed, by topic."
    );
    describe_counter!(
        MESSAGES_REJECTED,
        Unit::Count,
        "Messages rejected by decoding or validation, by topic and reason."
    );
    describe_counter!(
        MESSAGES_EXPIRED,
        Unit::Count,
        "Messages already past their expiry (cache.ttl_from = \"event\"), not written, by topic."
    );
    describe_counter!(
        MESSAGES_DEAD_LETTERED,
        Unit::Count,
        "Rejected and refused messages delivered to the dead-letter topic, by source topic."
    );
    describe_counter!(
        MESSAGES_REFUSED,
        Unit::Count,
        "Valid messages whose write Redis refused for its data (a key of another type), by topic; they are dead-lettered."
    );
    describe_counter!(
        DEAD_LETTERS_TRUNCATED,
        Unit::Count,
        "Dead letters the broker refused whole and took truncated, by source topic."
    );
    describe_counter!(
        DEAD_LETTERS_DROPPED,
        Unit::Count,
        "Dead letters the broker refused even truncated, skipped, by source topic."
    );
    describe_counter!(
        BATCHES_WRITTEN,
        Unit::Count,
        "Batches written to Redis, one pipeline each."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Messages per written batch, before coalescing."
    );
    describe_histogram!(
        PIPELINE_DURATION,
        Unit::Seconds,
        "Duration of one successful Redis pipeline write."
    );
    describe_counter!(
        REDIS_ERRORS,
        Unit::Count,
        "Failed Redis operations, by error kind."
    );
    describe_counter!(
        DEAD_LETTER_ERRORS,
        Unit::Count,
        "Failed deliveries to the dead-letter topic."
    );
    describe_counter!(
        KAFKA_ERRORS,
        Unit::Count,
        "Kafka client errors, by kind (all_brokers_down, transport, authentication, authorization, ssl, unknown_topic, timeout, other)."
    );
    describe_counter!(
        HTTP_SHED,
        Unit::Count,
        "Read API requests answered 503 because http.max_concurrent_requests were being served."
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Open HTTP connections, by listener (operator, api)."
    );
    describe_gauge!(
        TOPIC_MISSING,
        "1 while a subscribed topic does not exist on the brokers, else 0, by topic."
    );
    describe_counter!(
        BATCH_RETRIES,
        Unit::Count,
        "Batch writes retried after a failure."
    );
    describe_counter!(
        OFFSET_COMMITS,
        Unit::Count,
        "Successful Kafka offset commits."
    );
    describe_counter!(
        OFFSET_COMMIT_FAILURES,
        Unit::Count,
        "Failed Kafka offset commits."
    );
    describe_counter!(
        OFFSET_GAPS,
        Unit::Count,
        "Deliveries past the offset a partition expected, by topic; each is refetched from the expected offset."
    );
    describe_counter!(
        OFFSET_GAPS_IN_LOG,
        Unit::Count,
        "Offset gaps that the refetch confirmed are in the log itself (compaction, transaction markers, retention), by topic."
    );
    describe_counter!(
        REDIS_DATA_LOSS,
        Unit::Count,
        "Times Redis was found to have lost what this instance wrote (a restart without persistence, a failover to an empty replica, a flush)."
    );
    describe_counter!(
        REBUILD_MESSAGES,
        Unit::Count,
        "Messages replayed to rebuild the cache after a loss or on request, by topic; also counted as consumed."
    );
    describe_gauge!(
        REBUILD_PARTITIONS,
        Unit::Count,
        "Partitions of this instance being replayed to rebuild the cache; 0 when none is."
    );
    describe_histogram!(
        END_TO_END_LATENCY,
        Unit::Seconds,
        "From a message's Kafka timestamp to the moment its batch was written to Redis."
    );
    describe_gauge!(
        CACHE_KEYS,
        Unit::Count,
        "Keys in Redis per category (trends, users, windows)."
    );
    describe_gauge!(
        REDIS_USED_MEMORY,
        Unit::Bytes,
        "Redis used_memory from INFO."
    );
    describe_gauge!(
        REDIS_CONNECTED_CLIENTS,
        Unit::Count,
        "Redis connected_clients from INFO."
    );
    describe_counter!(
        REDIS_KEYSPACE_HITS,
        Unit::Count,
        "Redis keyspace_hits from INFO."
    );
    describe_counter!(
        REDIS_KEYSPACE_MISSES,
        Unit::Count,
        "Redis keyspace_misses from INFO."
    );
    describe_counter!(
        REDIS_EVICTED_KEYS,
        Unit::Count,
        "Redis evicted_keys from INFO: cache keys Redis dropped to stay under maxmemory."
    );
    describe_gauge!(
        REDIS_MAXMEMORY,
        Unit::Bytes,
        "Redis maxmemory from INFO; 0 is no limit."
    );
    describe_counter!(
        REDIS_FAILOVERS,
        Unit::Count,
        "Times the sentinels named another Redis master (redis.sentinel_master), which the daemon then wrote to."
    );
    describe_gauge!(
        REDIS_MAXMEMORY_POLICY,
        "Always 1 for the policy label Redis reports (maxmemory_policy from INFO), 0 for a policy it reported before."
    );
    describe_gauge!(
        CACHE_HIT_RATIO,
        "Redis keyspace hits / (hits + misses), 0 before any lookup."
    );
    describe_counter!(
        STATS_RUNS,
        Unit::Count,
        "Cache statistics runs, by outcome (ok, failed)."
    );
    describe_counter!(
        SWEEP_REMOVED,
        Unit::Count,
        "Stale index members removed by sweeps, by category."
    );
    describe_counter!(
        SWEEP_KEYS_WITHOUT_TTL,
        Unit::Count,
        "Keys found without a TTL and deleted by sweeps, by category; should stay 0 (an anomaly)."
    );
    describe_histogram!(SWEEP_DURATION, Unit::Seconds, "Duration of one sweep.");
    describe_counter!(
        SWEEP_RUNS,
        Unit::Count,
        "Sweep rounds, by outcome (swept, skipped: another instance held the lock, failed)."
    );
    describe_gauge!(
        READY,
        "1 when ready as /readyz judges (Redis answers, Kafka reachable with every topic, no batch failing), else 0."
    );
    describe_gauge!(UP, "1 while the daemon runs.");
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which build runs."
    );
}

/// Every counter at 0, and every per-topic gauge set, for each label value known at
/// start-up: the source topics, the reject reasons, the error kinds, the categories. So
/// a first scrape already has every family, and `rate()` or `absent()` in an alert work
/// for a fresh or idle instance.
pub fn zeroed(topics: &[&str]) {
    for topic in topics {
        let topic = (*topic).to_owned();
        counter!(MESSAGES_CONSUMED, "topic" => topic.clone()).increment(0);
        counter!(MESSAGES_EXPIRED, "topic" => topic.clone()).increment(0);
        counter!(MESSAGES_DEAD_LETTERED, "topic" => topic.clone()).increment(0);
        counter!(MESSAGES_REFUSED, "topic" => topic.clone()).increment(0);
        counter!(DEAD_LETTERS_TRUNCATED, "topic" => topic.clone()).increment(0);
        counter!(DEAD_LETTERS_DROPPED, "topic" => topic.clone()).increment(0);
        counter!(OFFSET_GAPS, "topic" => topic.clone()).increment(0);
        counter!(OFFSET_GAPS_IN_LOG, "topic" => topic.clone()).increment(0);
        counter!(REBUILD_MESSAGES, "topic" => topic.clone()).increment(0);
        for reason in RejectReason::ALL {
            counter!(MESSAGES_REJECTED, "topic" => topic.clone(), "reason" => reason.as_str())
                .increment(0);
        }
    }
    for kind in REDIS_ERROR_KINDS {
        counter!(REDIS_ERRORS, "kind" => kind).increment(0);
    }
    for kind in KAFKA_ERROR_KINDS {
        counter!(KAFKA_ERRORS, "kind" => kind).increment(0);
    }
    for category in Category::ALL {
        counter!(SWEEP_REMOVED, "category" => category.as_str()).increment(0);
        counter!(SWEEP_KEYS_WITHOUT_TTL, "category" => category.as_str()).increment(0);
    }
    for outcome in ["swept", "skipped", "failed"] {
        counter!(SWEEP_RUNS, "outcome" => outcome).increment(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(STATS_RUNS, "outcome" => outcome).increment(0);
    }
    for outcome in ["applied", "failed"] {
        counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    for kind in ["assign", "revoke"] {
        counter!(REBALANCES, "kind" => kind).increment(0);
    }
    for counter in [
        HTTP_SHED,
        BATCHES_WRITTEN,
        DEAD_LETTER_ERRORS,
        BATCH_RETRIES,
        OFFSET_COMMITS,
        OFFSET_COMMIT_FAILURES,
        REDIS_DATA_LOSS,
        REDIS_EVICTED_KEYS,
        REDIS_FAILOVERS,
    ] {
        counter!(counter).increment(0);
    }
    gauge!(REBUILD_PARTITIONS).set(0.0);
    gauge!(PARTITIONS_ASSIGNED).set(0.0);
}

/// The daemon started.
pub fn started() {
    gauge!(UP).set(1.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The daemon stopped.
pub fn stopped() {
    gauge!(UP).set(0.0);
    gauge!(READY).set(0.0);
}

/// A rebalance assigned (`revoke` false) or revoked partitions; `assigned` is how many
/// this instance holds after it.
pub fn rebalanced(revoke: bool, assigned: usize) {
    let kind = if revoke { "revoke" } else { "assign" };
    counter!(REBALANCES, "kind" => kind).increment(1);
    gauge!(PARTITIONS_ASSIGNED).set(assigned as f64);
}

/// A SIGHUP reload: applied, or refused for an invalid configuration.
pub fn config_reloaded(applied: bool) {
    let outcome = if applied { "applied" } else { "failed" };
    counter!(CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

pub fn consumed(topic: &str, messages: u64) {
    counter!(MESSAGES_CONSUMED, "topic" => topic.to_owned()).increment(messages);
}

pub fn rejected(topic: &str, reason: &'static str) {
    counter!(MESSAGES_REJECTED, "topic" => topic.to_owned(), "reason" => reason).increment(1);
}

/// A message past its expiry, with TTLs that count from the event: not written.
pub fn expired(topic: &str) {
    counter!(MESSAGES_EXPIRED, "topic" => topic.to_owned()).increment(1);
}

pub fn dead_lettered(topic: &str, messages: u64) {
    counter!(MESSAGES_DEAD_LETTERED, "topic" => topic.to_owned()).increment(messages);
}

pub fn refused(topic: &str, messages: u64) {
    counter!(MESSAGES_REFUSED, "topic" => topic.to_owned()).increment(messages);
}

pub fn dead_letter_truncated(topic: &str) {
    counter!(DEAD_LETTERS_TRUNCATED, "topic" => topic.to_owned()).increment(1);
}

pub fn dead_letter_dropped(topic: &str) {
    counter!(DEAD_LETTERS_DROPPED, "topic" => topic.to_owned()).increment(1);
}

/// A batch went through: its size, its pipeline's duration, and how late each message was.
pub fn batch_written(messages: usize, pipeline: Duration, latencies: impl Iterator<Item = f64>) {
    counter!(BATCHES_WRITTEN).increment(1);
    histogram!(BATCH_SIZE).record(messages as f64);
    histogram!(PIPELINE_DURATION).record(pipeline.as_secs_f64());
    let latency = histogram!(END_TO_END_LATENCY);
    for seconds in latencies {
        latency.record(seconds.max(0.0));
    }
}

pub fn redis_error(kind: &'static str) {
    counter!(REDIS_ERRORS, "kind" => kind).increment(1);
}

pub fn dead_letter_error() {
    counter!(DEAD_LETTER_ERRORS).increment(1);
}

pub fn kafka_error(kind: &'static str) {
    counter!(KAFKA_ERRORS, "kind" => kind).increment(1);
}

pub fn http_shed() {
    counter!(HTTP_SHED).increment(1);
}

/// A connection on `listener` opened (`+1`) or closed (`-1`).
pub fn http_connections(listener: &'static str, delta: f64) {
    gauge!(HTTP_CONNECTIONS, "listener" => listener).increment(delta);
}

pub fn topic_missing(topic: &str, missing: bool) {
    gauge!(TOPIC_MISSING, "topic" => topic.to_owned()).set(if missing { 1.0 } else { 0.0 });
}

pub fn batch_retried() {
    counter!(BATCH_RETRIES).increment(1);
}

pub fn offsets_committed(ok: bool) {
    if ok {
        counter!(OFFSET_COMMITS).increment(1);
    } else {
        counter!(OFFSET_COMMIT_FAILURES).increment(1);
    }
}

/// A partition delivered past the offset it was expected to deliver next.
pub fn offset_gap(topic: &str) {
    counter!(OFFSET_GAPS, "topic" => topic.to_owned()).increment(1);
}

/// A gap delivered again after seeking back: no message is missing.
pub fn offset_gap_in_log(topic: &str) {
    counter!(OFFSET_GAPS_IN_LOG, "topic" => topic.to_owned()).increment(1);
}

/// Redis was found to have lost what this instance wrote.
pub fn redis_data_loss() {
    counter!(REDIS_DATA_LOSS).increment(1);
}

/// Messages replayed by a rebuild, in one batch.
pub fn rebuild_messages(topic: &str, messages: u64) {
    counter!(REBUILD_MESSAGES, "topic" => topic.to_owned()).increment(messages);
}

/// How many partitions this instance is rebuilding.
pub fn rebuild_partitions(partitions: usize) {
    gauge!(REBUILD_PARTITIONS).set(partitions as f64);
}

/// A statistics run finished.
pub fn cache_stats(stats: &CacheStats) {
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
}

/// The sentinels named another master `failovers` times since the start.
pub fn redis_failovers(failovers: u64) {
    counter!(REDIS_FAILOVERS).absolute(failovers);
}

/// Redis's memory policy is `policy` now, and was `before`.
pub fn memory_policy(before: Option<&str>, policy: &str) {
    if let Some(before) = before {
        gauge!(REDIS_MAXMEMORY_POLICY, "policy" => before.to_owned()).set(0.0);
    }
    gauge!(REDIS_MAXMEMORY_POLICY, "policy" => policy.to_owned()).set(1.0);
}

pub fn stats_failed() {
    counter!(STATS_RUNS, "outcome" => "failed").increment(1);
}

/// A sweep ran: what it removed and how long it took.
pub fn swept(report: &SweepReport, elapsed: Duration) {
    for (category, removed) in report.removed() {
        counter!(SWEEP_REMOVED, "category" => category.as_str()).increment(removed);
    }
    for (category, deleted) in report.without_ttl() {
        counter!(SWEEP_KEYS_WITHOUT_TTL, "category" => category.as_str()).increment(deleted);
    }
    histogram!(SWEEP_DURATION).record(elapsed.as_secs_f64());
    counter!(SWEEP_RUNS, "outcome" => "swept").increment(1);
}

pub fn sweep_skipped() {
    counter!(SWEEP_RUNS, "outcome" => "skipped").increment(1);
}

pub fn sweep_failed() {
    counter!(SWEEP_RUNS, "outcome" => "failed").increment(1);
}

pub fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}
