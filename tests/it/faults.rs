//! Redis states that must neither stall the stage nor lose a message: full, read-only,
//! hanging. Each test ends with Redis exactly as the library writes the same stream in
//! one go, and every offset committed.

use std::time::{Duration, Instant};

use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::redis_server::{config_set, hang, info_field};
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::{connect, fixtures, wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until `/readyz` answers `code` and its `writes` check says `writes_ok`.
async fn wait_ready(daemon: &RunningDaemon, code: u16, writes_ok: bool) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = daemon.readyz().await;
        if let Some((c, body)) = &answer {
            if *c == code && body["checks"]["writes"]["ok"] == writes_ok {
                return body.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {code}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_loses_nothing_and_readiness_says_why() {
    let scenario = Scenario::start(3, 12_000, 7).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    // noeviction and room for a fraction of the stream.
    config_set(redis, "maxmemory-policy", "noeviction");
    let used = info_field(redis, "memory", "used_memory:");
    config_set(redis, "maxmemory", used + 600_000);

    let mut config = daemon_config(kafka, &redis.url());
    config.batch.unready_after = Duration::from_millis(500);
    let daemon = RunningDaemon::spawn(config);
    let producing = async {
        for chunk in scenario.stream.chunks(1_000) {
            kafka.produce_generated(chunk).await;
        }
    };
    let refused = async {
        let body = wait_ready(&daemon, 503, false).await;
        let reason = body["checks"]["writes"]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("OOM"), "{body}");
    };
    tokio::join!(producing, refused);
    config_set(redis, "maxmemory", 0);

    scenario.assert_landed(DEADLINE).await;
    wait_ready(&daemon, 200, true).await;
    assert!(info_field(redis, "errorstats", "errorstat_OOM:count=") > 0);
    assert_eq!(
        kafka.high_watermark(&kafka.dead_letter, 0).await,
        0,
        "nothing dead-lettered"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_redis_loses_nothing() {
    let scenario = Scenario::start(3, 6_000, 8).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    let (first, rest) = scenario.stream.split_at(2_000);
    kafka.produce_generated(first).await;
    let daemon = RunningDaemon::spawn(daemon_config(kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 2_000, DEADLINE).await;

    // Demoted under the daemon: a replica of a primary that is not there keeps its data
    // and refuses writes with READONLY.
    let mut admin = connect(redis);
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .exec(&mut admin)
        .unwrap();
    kafka.produce_generated(rest).await;
    wait_until(DEADLINE, "READONLY refusals", || async {
        info_field(redis, "errorstats", "errorstat_READONLY:count=") > 0
    })
    .await;
    let committed = kafka.committed_total(&kafka.group).await;
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut admin)
        .unwrap();

    assert!(committed < 6_000, "nothing acknowledged while read-only");
    scenario.assert_landed(DEADLINE).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_is_retried_and_never_half_acknowledged() {
    let scenario = Scenario::start(3, 4_000, 9).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    let mut config = daemon_config(kafka, &redis.url());
    config.redis.response_timeout = Duration::from_millis(500);
    let daemon = RunningDaemon::spawn(config);
    let (first, rest) = scenario.stream.split_at(1_000);
    kafka.produce_generated(first).await;
    kafka.wait_committed(&kafka.group, 1_000, DEADLINE).await;

    // Longer than redis.response_timeout_ms: the write in flight times out.
    let hang = hang(redis, 3);
    kafka.produce_generated(rest).await;
    let during = kafka.committed_total(&kafka.group).await;
    hang.await.unwrap();

    assert!(during < 4_000);
    scenario.assert_landed(DEADLINE).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_redis_hangs_fits_in_the_shutdown_timeout() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let mut config = daemon_config(&kafka, &redis.url());
    config.kafka.shutdown_timeout = Duration::from_secs(2);
    config.stats.interval = Duration::from_millis(200);
    let daemon = RunningDaemon::spawn(config);
    kafka
        .produce_generated(&fixtures::stream(100, 600, 10))
        .await;
    kafka.wait_committed(&kafka.group, 100, DEADLINE).await;

    let hang = hang(&redis, 6);
    // A batch is waiting for Redis when the signal comes.
    kafka
        .produce_generated(&fixtures::stream(50, 600, 11))
        .await;
    wait_until(DEADLINE, "the next batch to be consumed", || async {
        daemon.status.snapshot().consumed == 150
    })
    .await;
    let started = Instant::now();
    daemon.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "the shutdown took {took:?}, over kafka.shutdown_timeout_ms"
    );
    assert_eq!(
        kafka.committed_total(&kafka.group).await,
        100,
        "the hung batch is not acknowledged"
    );
    hang.await.unwrap();
}
