//! The daemon as a separate process, killed with SIGKILL mid-stream again and again, or
//! stopped while its broker hangs, and a broker that comes back while nothing is produced.

use std::time::Duration;

use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::{connect, wait_until, window_records, RedisServer};
use redis::Commands;

use crate::support;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_stream_again_and_again_leaves_the_exact_state() {
    let scenario = Scenario::start(3, 12_000, 12).await;
    let (kafka, redis) = (&scenario.kafka, &scenario.redis);
    let mut chunks = scenario.stream.chunks(3_000);

    // Each daemon gets a fresh part of the stream and is killed once it has made progress,
    // in the middle of it or of what comes next.
    let mut before = 0;
    for chunk in chunks.by_ref().take(3) {
        kafka.produce_generated(chunk).await;
        let daemon = support::spawn(kafka, &redis.url(), support::QUICK_SESSION);
        wait_until(DEADLINE, "progress before the kill", || async {
            kafka.committed_total(&kafka.group).await > before
        })
        .await;
        let status = daemon.kill().await.unwrap();
        assert!(!status.success(), "killed: {status}");
        before = kafka.committed_total(&kafka.group).await;
    }
    assert!(before < 12_000, "killed mid-stream, at {before}");
    for chunk in chunks {
        kafka.produce_generated(chunk).await;
    }
    let daemon = support::spawn(kafka, &redis.url(), support::QUICK_SESSION);
    scenario.assert_landed(DEADLINE).await;
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_back_without_traffic() {
    let mut kafka = TestKafka::own(1).await;
    kafka
        .produce(&kafka.windows, &window_records("w", 10))
        .await;
    let redis = RedisServer::start().await.unwrap();
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 10, DEADLINE).await;
    let ready = |code: u16| {
        let daemon = &daemon;
        move || async move { daemon.readyz().await.is_some_and(|(c, _)| c == code) }
    };
    wait_until(DEADLINE, "ready", ready(200)).await;

    kafka.apache_mut().kill().await;
    wait_until(DEADLINE, "unready while the broker is down", ready(503)).await;
    kafka.apache_mut().restart().await.unwrap();
    // Nothing is produced: only the broker's return can make it ready again.
    wait_until(Duration::from_secs(15), "ready again", ready(200)).await;
    daemon.stop().await;
}

/// A broker that stops answering while the daemon drains: the final commit and the
/// group's leave cannot finish, and the daemon still exits once
/// `kafka.shutdown_timeout_ms` is over, as an orchestrator's grace period expects. Before
/// the consumer was closed on a thread of its own, the close ran in the last Kafka call's
/// blocking thread, which the runtime waits for at exit: the process never ended (and an
/// in-process daemon's test never ended either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_the_broker_hangs_exits_once_the_shutdown_timeout_is_over() {
    let kafka = TestKafka::own(3).await;
    let redis = RedisServer::start().await.unwrap();
    kafka
        .produce(&kafka.windows, &window_records("w", 100))
        .await;
    let daemon = support::spawn(
        &kafka,
        &redis.url(),
        &[("CACHE_LAYER__KAFKA__SHUTDOWN_TIMEOUT_MS", "2000")],
    );
    kafka.wait_committed(&kafka.group, 100, DEADLINE).await;

    kafka.apache().freeze();
    let exited = tokio::time::timeout(DEADLINE, daemon.stop()).await;
    kafka.apache().thaw();
    let status = exited
        .expect("the daemon exits although the broker hangs")
        .unwrap();
    assert!(status.success(), "a drained daemon exits cleanly: {status}");
    let fields: usize = connect(&redis)
        .hlen("windows:window_2024_01_01_12_00")
        .unwrap();
    assert_eq!(fields, 100);
}
