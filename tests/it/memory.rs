//! Memory as operators run it: an evicting Redis and its policy show in the metrics,
//! `redis.pause_above_memory_ratio` pauses a backlog before Redis refuses it (real
//! redis-server processes, their limits set with `CONFIG SET`), and messages near
//! `batch.max_message_bytes` fill the daemon's batches by `batch.max_bytes`.

use std::time::Duration;

use cache_layer::metrics::BATCH_SIZE;
use cache_layer::models::MessageKind;
use cache_layer_testkit::fixtures::padded_trend_json;
use cache_layer_testkit::http::parse_metrics;
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::redis_server::{config_set, info_field, RedisServer};
use redis::Commands;

use crate::support::spawn;
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::wait_until;

const DEADLINE: Duration = Duration::from_secs(60);

/// The value of the sample `name{labels}` in the daemon's `/metrics`, if it is there.
async fn sample(daemon: &RunningDaemon, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let addr = daemon.status.http_addr()?;
    let (_, text) = cache_layer_testkit::http::get(addr, "/metrics").await?;
    let (samples, _) = parse_metrics(&text);
    samples
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_and_its_memory_policy_show_in_the_metrics() {
    let scenario = Scenario::start(3, 12_000, 21).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    config_set(redis, "maxmemory-policy", "allkeys-lru");
    let maxmemory = info_field(redis, "memory", "used_memory:") + 600_000;
    config_set(redis, "maxmemory", maxmemory);
    let mut config = daemon_config(kafka, &redis.url());
    config.stats.interval = Duration::from_secs(1);
    let daemon = RunningDaemon::spawn(config);
    for chunk in scenario.stream.chunks(1_000) {
        kafka.produce_generated(chunk).await;
    }
    kafka.wait_committed(&kafka.group, 12_000, DEADLINE).await;

    let evicted = info_field(redis, "stats", "evicted_keys:");
    assert!(evicted > 0, "the stream does not fit: Redis evicted");
    wait_until(DEADLINE, "the evictions exported", || async {
        sample(&daemon, "cache_layer_redis_evicted_keys_total", &[]).await == Some(evicted as f64)
    })
    .await;
    assert_eq!(
        sample(&daemon, "cache_layer_redis_maxmemory_bytes", &[]).await,
        Some(maxmemory as f64)
    );
    let policy = |name: &'static str| {
        let daemon = &daemon;
        async move {
            sample(
                daemon,
                "cache_layer_redis_maxmemory_policy_info",
                &[("policy", name)],
            )
            .await
        }
    };
    assert_eq!(policy("allkeys-lru").await, Some(1.0));

    config_set(redis, "maxmemory-policy", "volatile-ttl");
    wait_until(DEADLINE, "the new policy exported", || async {
        policy("volatile-ttl").await == Some(1.0)
    })
    .await;
    assert_eq!(
        policy("allkeys-lru").await,
        Some(0.0),
        "the policy before is no longer the one"
    );
    daemon.stop().await;
}

/// A backlog larger than Redis's limit (the stream takes about 6 MB in Redis, the limit
/// leaves 5 MB): the daemon pauses at the ratio, set 100 kB above what Redis used before,
/// and the headroom above it holds the writes of the second before the daemon looks
/// again (about 2.5 MB in a debug build), so Redis never refuses a write. Once memory is
/// raised, the whole stream lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_pauses_at_the_memory_ratio_and_never_meets_oom() {
    let scenario = Scenario::start(3, 48_000, 22).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    config_set(redis, "maxmemory-policy", "noeviction");
    let used = info_field(redis, "memory", "used_memory:");
    let maxmemory = used + 5_000_000;
    config_set(redis, "maxmemory", maxmemory);
    for chunk in scenario.stream.chunks(2_000) {
        kafka.produce_generated(chunk).await;
    }
    let mut config = daemon_config(kafka, &redis.url());
    let pause_above = (used + 100_000) as f64 / maxmemory as f64;
    config.redis.pause_above_memory_ratio = Some(pause_above);
    let daemon = RunningDaemon::spawn(config);

    wait_until(DEADLINE, "/readyz 503 for memory", || async {
        daemon
            .readyz()
            .await
            .is_some_and(|(code, body)| code == 503 && body["checks"]["memory"]["ok"] == false)
    })
    .await;
    let (_, body) = daemon.readyz().await.unwrap();
    let error = body["checks"]["memory"]["error"].as_str().unwrap();
    assert!(error.contains("redis.pause_above_memory_ratio"), "{body}");
    let written = daemon.status.snapshot().acknowledged;
    assert!(written < 48_000, "paused before the end: {written}");
    assert_eq!(info_field(redis, "errorstats", "errorstat_OOM:count="), 0);

    config_set(redis, "maxmemory", 0);
    scenario.assert_landed(DEADLINE).await;
    wait_until(DEADLINE, "ready again", || async {
        daemon.readyz().await.is_some_and(|(code, _)| code == 200)
    })
    .await;
    assert_eq!(
        info_field(redis, "errorstats", "errorstat_OOM:count="),
        0,
        "Redis never refused a write"
    );
    assert_eq!(
        kafka.high_watermark(&kafka.dead_letter, 0).await,
        0,
        "nothing dead-lettered"
    );
    daemon.stop().await;
}

/// With `batch.max_bytes` at 4 MiB, a backlog of such messages is written in batches of
/// at most five (the fifth takes a batch past the bound), not of `batch.max_messages`,
/// and every one of them lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_near_the_size_limit_fill_batches_by_bytes() {
    const ALERTS: usize = 24;
    let kafka = TestKafka::start_with(3, &[MessageKind::Trends]).await;
    let redis = RedisServer::start().await.unwrap();
    let records: Vec<(String, String)> = (0..ALERTS)
        // About 990,000 bytes each: under batch.max_message_bytes, and under the
        // producer's default message.max.bytes.
        .map(|i| {
            (
                format!("big{i}"),
                padded_trend_json(&format!("big{i}"), 985),
            )
        })
        .collect();
    assert!(records
        .iter()
        .all(|(_, alert)| alert.len() > 980_000 && alert.len() < 1_000_000));
    kafka.produce(&kafka.trends, &records).await;
    let daemon = spawn(
        &kafka,
        &redis.url(),
        &[("CACHE_LAYER__BATCH__MAX_BYTES", "4194304")],
    );
    // The histogram moves once a batch is acknowledged, after its write.
    let sum = format!("{BATCH_SIZE}_sum");
    wait_until(DEADLINE, "every alert written", || async {
        daemon.metric(&sum).await == ALERTS as f64
    })
    .await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let landed: usize = conn.zcard("trends:current").unwrap();
    assert_eq!(landed, ALERTS);
    let batches = daemon.metric(&format!("{BATCH_SIZE}_count")).await;
    let at_most_five = daemon
        .metric(&format!("{BATCH_SIZE}_bucket{{le=\"5\"}}"))
        .await;
    assert!(batches >= 5.0, "{batches} batches for {ALERTS} alerts");
    assert_eq!(at_most_five, batches, "a batch held more than five");
    assert!(daemon.stop().await.unwrap().success());
}
