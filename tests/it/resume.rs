//! A paused consumer never skips a message. On Apache Kafka, with the daemon as a
//! separate process: a backlog is preloaded, Redis stops taking writes (full, or hanging)
//! so that the daemon pauses fetching, then takes them again. Each test ends with every
//! message consumed, every offset committed, and Redis exactly as the library writes the
//! same stream in one go.
//!
//! A rebalance during the pause once left the group's commits short of the log end on
//! a quiet stream: the partitions assigned back kept the position of a batch whose
//! offsets the revocation had voided. A partition revoked now starts clean.

use std::time::Duration;

use cache_layer::metrics::{BATCH_RETRIES, CONSUMER_LAG, MESSAGES_CONSUMED};
use cache_layer_testkit::kafka::TestKafka;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::redis_server::{config_set, hang, info_field};
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::{fixtures, wait_until, RedisServer};

use crate::support::spawn;

const DEADLINE: Duration = Duration::from_secs(120);

/// 12 partitions per topic, as in the issue that found the skip (whose batches of at
/// most 500 messages or 20 ms `spawn` sets).
const PARTITIONS: i32 = 12;

/// Waits for the whole stream to be committed, then asserts that Redis holds the exact
/// state and that every message was consumed.
async fn assert_nothing_skipped(scenario: &Scenario, daemon: DaemonProcess) {
    scenario.assert_landed(DEADLINE).await;
    // Exactly once unless the group rebalanced under the load of a full test run, which
    // replays from the last commit; a skip shows in the state above either way.
    let consumed = daemon.metric(MESSAGES_CONSUMED).await;
    assert!(
        consumed >= scenario.stream.len() as f64,
        "{consumed} of {} messages consumed",
        scenario.stream.len()
    );
    assert!(daemon.stop().await.unwrap().success());
}

/// The recipe of the report: 20 windows of 500 counts keyed by window id, 1,000 alerts
/// and 20 user-metrics snapshots, preloaded.
async fn preloaded() -> Scenario {
    let backlog = fixtures::window_backlog(20, 500, 1_000, 20);
    let scenario = Scenario::with_stream(TestKafka::start(PARTITIONS).await, backlog).await;
    scenario.kafka.produce_generated(&scenario.stream).await;
    scenario
}

/// A Redis of 3 MB that refuses writes when full, as in the report.
fn fill_at_3mb(redis: &RedisServer) {
    config_set(redis, "maxmemory-policy", "noeviction");
    config_set(redis, "maxmemory", "3mb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_for_a_full_redis_skips_nothing_on_a_separate_broker() {
    let scenario = preloaded().await;
    let redis = &scenario.redis;
    fill_at_3mb(redis);

    let daemon = spawn(&scenario.kafka, &redis.url(), &[]);
    // Paused, and retried again and again while fetching stays paused.
    wait_until(
        DEADLINE,
        "the batch retried while Redis is full",
        || async { daemon.metric(BATCH_RETRIES).await >= 8.0 },
    )
    .await;
    assert!(info_field(redis, "errorstats", "errorstat_OOM:count=") > 0);
    config_set(redis, "maxmemory", 0);

    assert_nothing_skipped(&scenario, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_for_a_hanging_redis_skips_nothing_on_a_separate_broker() {
    let scenario = preloaded().await;
    let redis = &scenario.redis;
    let daemon = spawn(
        &scenario.kafka,
        &redis.url(),
        &[("CACHE_LAYER__REDIS__RESPONSE_TIMEOUT_MS", "300")],
    );
    wait_until(DEADLINE, "progress before the hang", || async {
        scenario.kafka.committed_total(&scenario.kafka.group).await > 0
    })
    .await;
    // Longer than redis.response_timeout_ms: writes time out, and fetching pauses.
    hang(redis, 4).await.unwrap();
    assert!(daemon.metric(BATCH_RETRIES).await > 0.0);

    assert_nothing_skipped(&scenario, daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_pause_skips_nothing_on_a_separate_broker() {
    rebalance_during_a_pause(&[]).await;
}

/// The first member retries every few milliseconds: the batch that the revocation gave
/// up ends before the eager rebalance assigns again, so the member resumes while it
/// holds nothing, and then gets partitions that librdkafka kept paused from before the
/// revocation. Before the assignment followed the daemon's pause, they stayed paused
/// for good and the group's commits short (3 runs of 3; a loaded CI machine made the
/// same order with the default retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_given_up_before_the_assignment_leaves_nothing_paused() {
    rebalance_during_a_pause(&[
        ("CACHE_LAYER__BATCH__RETRY_INITIAL_MS", "1"),
        ("CACHE_LAYER__BATCH__RETRY_MAX_MS", "2"),
    ])
    .await;
}

/// A second member joins while the first is paused by a full Redis; Redis takes writes
/// again once the second is assigned, and everything lands. `first` configures the
/// first member.
async fn rebalance_during_a_pause(first: &[(&str, &str)]) {
    let scenario = preloaded().await;
    let redis = &scenario.redis;
    fill_at_3mb(redis);

    let first = spawn(&scenario.kafka, &redis.url(), first);
    wait_until(DEADLINE, "the first daemon paused", || async {
        first.metric(BATCH_RETRIES).await >= 2.0
    })
    .await;
    // A second member joins while the first is paused: the partitions move, and what
    // each is assigned stays paused until its own write goes through.
    let second = spawn(&scenario.kafka, &redis.url(), &[]);
    // Assigned: its statistics report the lag of partitions of its own. (It may have
    // nothing left to write: the first daemon may have written its partitions' share
    // before Redis filled.)
    wait_until(DEADLINE, "the second daemon assigned", || async {
        second
            .get("/metrics")
            .await
            .is_some_and(|(_, text)| text.contains(&format!("{CONSUMER_LAG}{{")))
    })
    .await;
    config_set(redis, "maxmemory", 0);

    scenario.assert_landed(DEADLINE).await;
    let consumed = first.metric(MESSAGES_CONSUMED).await + second.metric(MESSAGES_CONSUMED).await;
    assert!(
        consumed >= scenario.stream.len() as f64,
        "{consumed} consumed"
    );
    for daemon in [first, second] {
        assert!(daemon.stop().await.unwrap().success());
    }
}
