//! The catalog of every Prometheus metric of cache-layer, as data: one row each, with
//! its name, kind, unit, HELP text and the series it starts with. The exporter's
//! buckets, its HELP lines and the zeroed series all come from here, so that a metric
//! is named once.
//!
//! Conventions: every name starts with `cache_layer_`; counters end in `_total`; units
//! are `_seconds`, `_bytes` or `_messages`. Labels are low-cardinality only: a topic, a
//! partition, a reason, a category, an error kind. A keyword, user id or Redis key is
//! never a label.

use metrics::Unit;

use crate::cache::REDIS_ERROR_KINDS;
use crate::kafka::KafkaErrorKind;
use crate::schema::Category;

/// One metric of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    /// The series a first scrape already has, so that `rate()` or `absent()` in an
    /// alert work for a fresh or idle instance.
    pub(crate) zero: Zero,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    /// With its bucket bounds.
    Histogram(&'static [f64]),
    /// A gauge rendered beside the recorder's exposition rather than by it (see `lag`).
    Rendered,
}

/// The series of a metric set at start-up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Zero {
    /// None: the metric appears once it happens.
    No,
    /// The series without labels, at 0.
    Once,
    /// One series per source topic, at 0.
    PerTopic,
    /// One series per source topic and reject reason, at 0.
    PerTopicAndReason,
    /// One series per value of the label, at 0.
    Each(&'static str, fn() -> Vec<&'static str>),
}

const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

fn redis_error_kinds() -> Vec<&'static str> {
    REDIS_ERROR_KINDS.to_vec()
}

fn kafka_error_kinds() -> Vec<&'static str> {
    KafkaErrorKind::ALL.map(KafkaErrorKind::as_str).to_vec()
}

fn categories() -> Vec<&'static str> {
    Category::ALL.map(Category::as_str).to_vec()
}

/// Declares a constant per metric name and [`ALL`], the table of every metric.
macro_rules! catalog {
    ($($constant:ident = $name:literal, $kind:expr, $unit:expr, $zero:expr, $help:literal;)*) => {
        $(pub const $constant: &str = $name;)*

        /// Every metric of cache-layer.
        pub const ALL: &[Metric] = &[$(Metric {
            name: $name,
            kind: { use Kind::*; $kind },
            unit: $unit,
            zero: { use Zero::*; $zero },
            help: $help,
        }),*];
    };
}

catalog! {
    MESSAGES_CONSUMED = "cache_layer_messages_consumed_total", Counter, Some(Unit::Count), PerTopic,
        "Kafka messages consumed, by topic.";
    MESSAGES_REJECTED = "cache_layer_messages_rejected_total", Counter, Some(Unit::Count), PerTopicAndReason,
        "Messages rejected by decoding or validation, by topic and reason.";
    MESSAGES_EXPIRED = "cache_layer_messages_expired_total", Counter, Some(Unit::Count), PerTopic,
        "Messages already past their expiry (cache.ttl_from = \"event\"), not written, by topic.";
    MESSAGES_DEAD_LETTERED = "cache_layer_messages_dead_lettered_total", Counter, Some(Unit::Count), PerTopic,
        "Rejected and refused messages delivered to the dead-letter topic, by source topic.";
    BATCHES_WRITTEN = "cache_layer_batches_written_total", Counter, Some(Unit::Count), Once,
        "Batches written to Redis, one pipeline each.";
    BATCH_SIZE = "cache_layer_batch_size_messages", Histogram(&BATCH_BUCKETS), Some(Unit::Count), No,
        "Messages per written batch, before coalescing.";
    PIPELINE_DURATION = "cache_layer_pipeline_duration_seconds", Histogram(&SECONDS_BUCKETS), Some(Unit::Seconds), No,
        "Duration of one successful Redis pipeline write.";
    REDIS_ERRORS = "cache_layer_redis_errors_total", Counter, Some(Unit::Count), Each("kind", redis_error_kinds),
        "Failed Redis operations, by error kind.";
    DEAD_LETTER_ERRORS = "cache_layer_dead_letter_errors_total", Counter, Some(Unit::Count), Once,
        "Failed deliveries to the dead-letter topic.";
    MESSAGES_REFUSED = "cache_layer_messages_refused_total", Counter, Some(Unit::Count), PerTopic,
        "Valid messages whose write Redis refused for its data (a key of another type), by topic; they are dead-lettered.";
    DEAD_LETTERS_TRUNCATED = "cache_layer_dead_letters_truncated_total", Counter, Some(Unit::Count), PerTopic,
        "Dead letters the broker refused whole and took truncated, by source topic.";
    DEAD_LETTERS_DROPPED = "cache_layer_dead_letters_dropped_total", Counter, Some(Unit::Count), PerTopic,
        "Dead letters the broker refused even truncated, skipped, by source topic.";
    BATCH_RETRIES = "cache_layer_batch_retries_total", Counter, Some(Unit::Count), Once,
        "Batch writes retried after a failure.";
    REVOKED_BATCHES = "cache_layer_revoked_batches_total", Counter, Some(Unit::Count), Each("outcome", || vec!["abandoned", "unfinished"]),
        "Batches given up because a revocation took one of their partitions: being collected or written (abandoned; the partitions kept are read again), or still being written at the bound (unfinished: it may land after the new owner's writes).";
    KAFKA_ERRORS = "cache_layer_kafka_errors_total", Counter, Some(Unit::Count), Each("kind", kafka_error_kinds),
        "Kafka client errors, by kind (all_brokers_down, transport, authentication, authorization, ssl, unknown_topic, timeout, other).";
    TOPIC_MISSING = "cache_layer_topic_missing", Gauge, None, No,
        "1 while a subscribed topic does not exist on the brokers, else 0, by topic.";
    HTTP_SHED = "cache_layer_http_shed_requests_total", Counter, Some(Unit::Count), Once,
        "Read API requests answered 503 because http.max_concurrent_requests were being served.";
    HTTP_CONNECTIONS = "cache_layer_http_connections", Gauge, None, No,
        "Open HTTP connections, by listener (operator, api).";
    REBALANCES = "cache_layer_rebalances_total", Counter, Some(Unit::Count), Each("kind", || vec!["assign", "revoke"]),
        "Consumer group rebalances this instance took part in, by kind (assign, revoke); with cooperative-sticky, each moves only some partitions.";
    PARTITIONS_ASSIGNED = "cache_layer_partitions_assigned", Gauge, Some(Unit::Count), Once,
        "Partitions assigned to this instance.";
    CONFIG_RELOADS = "cache_layer_config_reloads_total", Counter, Some(Unit::Count), Each("outcome", || vec!["applied", "failed"]),
        "Configuration reloads on SIGHUP, by outcome (applied, failed: the file or the environment is invalid, and nothing changed).";
    OFFSET_COMMITS = "cache_layer_offset_commits_total", Counter, Some(Unit::Count), Once,
        "Successful Kafka offset commits.";
    OFFSET_COMMIT_FAILURES = "cache_layer_offset_commit_failures_total", Counter, Some(Unit::Count), Once,
        "Failed Kafka offset commits.";
    REDIS_DATA_LOSS = "cache_layer_redis_data_loss_total", Counter, Some(Unit::Count), Once,
        "Times Redis was found to have lost what this instance wrote (a restart without persistence, a failover to an empty replica, a flush).";
    REBUILD_MESSAGES = "cache_layer_rebuild_messages_total", Counter, Some(Unit::Count), PerTopic,
        "Messages replayed to rebuild the cache after a loss or on request, by topic; also counted as consumed.";
    REBUILD_PARTITIONS = "cache_layer_rebuild_partitions", Gauge, Some(Unit::Count), Once,
        "Partitions of this instance being replayed to rebuild the cache; 0 when none is.";
    CONSUMER_LAG = "cache_layer_consumer_lag_messages", Rendered, Some(Unit::Count), No,
        "Messages behind the partition's high watermark, by topic and partition (librdkafka statistics).";
    END_TO_END_LATENCY = "cache_layer_end_to_end_latency_seconds", Histogram(&LATENCY_BUCKETS), Some(Unit::Seconds), No,
        "From a message's Kafka timestamp to the moment its batch was written to Redis.";
    CACHE_KEYS = "cache_layer_cache_keys", Gauge, Some(Unit::Count), No,
        "Keys in Redis per category (trends, users, windows).";
    REDIS_USED_MEMORY = "cache_layer_redis_used_memory_bytes", Gauge, Some(Unit::Bytes), No,
        "Redis used_memory from INFO.";
    REDIS_CONNECTED_CLIENTS = "cache_layer_redis_connected_clients", Gauge, Some(Unit::Count), No,
        "Redis connected_clients from INFO.";
    REDIS_KEYSPACE_HITS = "cache_layer_redis_keyspace_hits_total", Counter, Some(Unit::Count), No,
        "Redis keyspace_hits from INFO.";
    REDIS_KEYSPACE_MISSES = "cache_layer_redis_keyspace_misses_total", Counter, Some(Unit::Count), No,
        "Redis keyspace_misses from INFO.";
    REDIS_EVICTED_KEYS = "cache_layer_redis_evicted_keys_total", Counter, Some(Unit::Count), Once,
        "Redis evicted_keys from INFO: cache keys Redis dropped to stay under maxmemory.";
    REDIS_MAXMEMORY = "cache_layer_redis_maxmemory_bytes", Gauge, Some(Unit::Bytes), No,
        "Redis maxmemory from INFO; 0 is no limit.";
    REDIS_MAXMEMORY_POLICY = "cache_layer_redis_maxmemory_policy_info", Gauge, None, No,
        "Always 1 for the policy label Redis reports (maxmemory_policy from INFO), 0 for a policy it reported before.";
    REDIS_FAILOVERS = "cache_layer_redis_failovers_total", Counter, Some(Unit::Count), Once,
        "Times the sentinels named another Redis master (redis.sentinel_master), which the daemon then wrote to.";
    CACHE_HIT_RATIO = "cache_layer_cache_hit_ratio", Gauge, None, No,
        "Redis keyspace hits / (hits + misses), 0 before any lookup.";
    STATS_RUNS = "cache_layer_stats_runs_total", Counter, Some(Unit::Count), Each("outcome", || vec!["ok", "failed"]),
        "Cache statistics runs, by outcome (ok, failed).";
    SWEEP_REMOVED = "cache_layer_sweep_removed_total", Counter, Some(Unit::Count), Each("category", categories),
        "Stale index members removed by sweeps, by category.";
    SWEEP_KEYS_WITHOUT_TTL = "cache_layer_sweep_keys_without_ttl_total", Counter, Some(Unit::Count), Each("category", categories),
        "Keys found without a TTL and deleted by sweeps, by category; should stay 0 (an anomaly).";
    SWEEP_DURATION = "cache_layer_sweep_duration_seconds", Histogram(&SECONDS_BUCKETS), Some(Unit::Seconds), No,
        "Duration of one sweep.";
    SWEEP_RUNS = "cache_layer_sweep_runs_total", Counter, Some(Unit::Count), Each("outcome", || vec!["swept", "skipped", "failed"]),
        "Sweep rounds, by outcome (swept, skipped: another instance held the lock, failed).";
    READY = "cache_layer_ready", Gauge, None, No,
        "1 when ready as /readyz judges (Redis answers, Kafka reachable with every topic, no batch failing), else 0.";
    UP = "cache_layer_up", Gauge, None, No,
        "1 while the daemon runs.";
    BUILD_INFO = "cache_layer_build_info", Gauge, None, No,
        "Always 1; the version label says which build runs.";
}
