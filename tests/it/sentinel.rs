//! Redis behind Sentinel, for real: a master, a replica and three sentinels as
//! `redis-server` processes. The master is SIGKILLed in the middle of a stream; the
//! daemon follows the sentinels to the promoted replica, and with `redis.wait_replicas =
//! 1` no acknowledged batch is lost.

use std::time::Duration;

use cache_layer::config::RedisConfig;
use cache_layer::CacheLayer;
use cache_layer_testkit::fixtures;
use cache_layer_testkit::http::parse_metrics;
use cache_layer_testkit::kafka::{daemon_config, MockKafka, RunningDaemon, GROUP};
use cache_layer_testkit::sentinel::{RedisSentinel, MASTER_NAME};
use cache_layer_testkit::state::{
    assert_every_key_expires, assert_same_state, data_snapshot, expected_state,
};
use cache_layer_testkit::{connect, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn sentinel_config(sentinel: &RedisSentinel) -> RedisConfig {
    RedisConfig {
        sentinel_master: MASTER_NAME.to_owned(),
        sentinel_nodes: sentinel.urls(),
        ..RedisConfig::default()
    }
}

async fn failovers(daemon: &RunningDaemon) -> f64 {
    let Some(addr) = daemon.status.http_addr() else {
        return -1.0;
    };
    let Some((_, text)) = cache_layer_testkit::http::get(addr, "/metrics").await else {
        return -1.0;
    };
    let (samples, _) = parse_metrics(&text);
    samples
        .iter()
        .find(|s| s.name == "cache_layer_redis_failovers_total")
        .map_or(-1.0, |s| s.value)
}

async fn ready_code(daemon: &RunningDaemon) -> Option<u16> {
    daemon.readyz().await.map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_fails_over_and_the_state_is_exact() {
    let mut sentinel = RedisSentinel::start().await;
    let (master, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let kafka = MockKafka::start(3);
    let stream = fixtures::stream(12_000, 600, 31);
    let expected = expected_state(&stream).await;
    let mut config = daemon_config(&kafka, "redis://127.0.0.1:1/0");
    config.redis = sentinel_config(&sentinel);
    // A batch counts as written once the replica has it too: the failover cannot lose it.
    config.redis.wait_replicas = 1;
    config.batch.unready_after = Duration::from_millis(500);
    config.stats.interval = Duration::from_secs(1);
    let daemon = RunningDaemon::spawn(config.clone());
    let (first, second) = stream.split_at(6_000);
    kafka.produce_generated(first).await;
    wait_until(DEADLINE, "a first commit", || async {
        kafka.committed_total(GROUP).await > 0
    })
    .await;
    wait_until(DEADLINE, "ready", || async {
        ready_code(&daemon).await == Some(200)
    })
    .await;

    sentinel.node(master).stop();
    kafka.produce_generated(second).await;
    wait_until(DEADLINE, "unready during the failover", || async {
        ready_code(&daemon).await == Some(503)
    })
    .await;
    wait_until(DEADLINE, "the sentinels to promote the replica", || async {
        sentinel.master_port() == Some(replica)
    })
    .await;
    wait_until(DEADLINE, "the daemon on the new master", || async {
        failovers(&daemon).await == 1.0
    })
    .await;
    // The old master comes back empty; the sentinels make it the new master's replica,
    // and WAIT can be answered again.
    sentinel.node(master).restart().await.unwrap();

    kafka.wait_committed(GROUP, 12_000, DEADLINE).await;
    wait_until(DEADLINE, "ready after the failover", || async {
        ready_code(&daemon).await == Some(200)
    })
    .await;
    let mut conn = connect(&sentinel.nodes[1]);
    assert_same_state(&data_snapshot(&mut conn), &expected);
    assert_every_key_expires(&mut conn, Duration::from_secs(300));
    assert_eq!(failovers(&daemon).await, 1.0);

    // The library, through the same configuration, reads from the master Sentinel names.
    let cache = CacheLayer::connect(&config.redis).await.unwrap();
    assert!(!cache.get_trending_keywords(5).await.unwrap().is_empty());
    daemon.stop().await;
}
