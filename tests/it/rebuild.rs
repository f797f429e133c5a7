//! A Redis that lost its data is rebuilt from Kafka. On Apache Kafka (the rebuild looks
//! its start up with `offsets_for_times`), with the daemon as a separate process and a real redis-server that restarts empty or
//! is flushed under it. Each test ends with Redis exactly as the library writes the whole
//! stream in one go, every key with a TTL.
//!
//! Before the daemon set the group's marker with its batches, a Redis restarted empty
//! stayed empty of everything written before the restart, and nothing said so.

use std::process::Command;
use std::time::Duration;

use cache_layer::metrics::{CONSUMER_LAG, MESSAGES_CONSUMED, REBUILD_MESSAGES, REDIS_DATA_LOSS};
use cache_layer_testkit::kafka::TestKafka;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::{connect, wait_until};
use redis::Commands;

use crate::support::{spawn, QUICK_SESSION};

const DEADLINE: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 4;

/// A stream of 10 one-minute windows and the alerts and user metrics beside them, its
/// first half produced and landed.
async fn half_landed(seed: u64) -> (Scenario, usize) {
    let scenario = Scenario::start(PARTITIONS, 6_000, seed).await;
    let half = scenario.stream.len() / 2;
    scenario
        .kafka
        .produce_generated(&scenario.stream[..half])
        .await;
    (scenario, half)
}

/// Produces the rest of the stream once the first `half` is committed.
async fn produce_rest(scenario: &Scenario, half: usize) {
    scenario
        .kafka
        .produce_generated(&scenario.stream[half..])
        .await;
}

async fn wait_committed(scenario: &Scenario, messages: usize) {
    scenario
        .kafka
        .wait_committed(&scenario.kafka.group, messages as i64, DEADLINE)
        .await;
}

/// `/readyz` as JSON, once the daemon answers it.
async fn readyz(daemon: &DaemonProcess) -> (u16, serde_json::Value) {
    let (code, body) = daemon.get("/readyz").await.expect("the daemon answers");
    (code, serde_json::from_str(&body).unwrap())
}

/// Waits until the daemon is ready with no rebuild in progress.
async fn wait_rebuilt_and_ready(daemon: &DaemonProcess) {
    wait_until(DEADLINE, "ready, with no rebuild in progress", || async {
        daemon
            .get("/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    })
    .await;
    let (_, body) = readyz(daemon).await;
    assert_eq!(body["checks"]["rebuild"]["ok"], true, "{body}");
    assert_eq!(
        body["checks"]["rebuild"]["partitions"],
        serde_json::json!([]),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_mid_stream_is_rebuilt_from_kafka() {
    let (mut scenario, half) = half_landed(25).await;
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    wait_committed(&scenario, half).await;
    // Written into a Redis that never held the marker: no loss.
    assert_eq!(daemon.metric(REDIS_DATA_LOSS).await, 0.0);

    scenario.redis.restart().await.unwrap();
    let keys: i64 = redis::cmd("DBSIZE")
        .query(&mut connect(&scenario.redis))
        .unwrap();
    assert_eq!(keys, 0);
    produce_rest(&scenario, half).await;

    scenario.assert_converged(DEADLINE).await;
    assert_eq!(daemon.metric(REDIS_DATA_LOSS).await, 1.0);
    // What the first half wrote, replayed; the second half is consumed as usual.
    let replayed = daemon.metric(REBUILD_MESSAGES).await;
    assert!(replayed >= half as f64, "{replayed} of {half} replayed");
    wait_rebuilt_and_ready(&daemon).await;
    // The requests are deleted once replayed; the marker is back, with a TTL.
    let mut conn = connect(&scenario.redis);
    wait_until(DEADLINE, "the rebuild requests deleted", || async {
        !connect(&scenario.redis)
            .exists::<_, bool>("rebuild:requests")
            .unwrap()
    })
    .await;
    let ttl: i64 = conn
        .ttl(format!("markers:{}", scenario.kafka.group))
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "marker TTL {ttl}");
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_under_a_quiet_daemon_is_found_and_rebuilt() {
    let (scenario, half) = half_landed(26).await;
    produce_rest(&scenario, half).await;
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    scenario.assert_landed(DEADLINE).await;

    // No message arrives after it: the loop's housekeeping finds the marker gone.
    redis::cmd("FLUSHALL")
        .exec(&mut connect(&scenario.redis))
        .unwrap();
    scenario.assert_converged(DEADLINE).await;
    assert_eq!(daemon.metric(REDIS_DATA_LOSS).await, 1.0);
    let replayed = daemon.metric(REBUILD_MESSAGES).await;
    assert_eq!(replayed, scenario.stream.len() as f64);
    wait_rebuilt_and_ready(&daemon).await;
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rebuild_on_loss_off_a_loss_is_counted_and_the_rebuild_command_restores_it() {
    let (scenario, half) = half_landed(27).await;
    produce_rest(&scenario, half).await;
    let daemon = spawn(
        &scenario.kafka,
        &scenario.redis.url(),
        &[("CACHE_LAYER__CACHE__REBUILD_ON_LOSS", "false")],
    );
    scenario.assert_landed(DEADLINE).await;

    let mut conn = connect(&scenario.redis);
    redis::cmd("FLUSHDB").exec(&mut conn).unwrap();
    wait_until(DEADLINE, "the loss counted", || async {
        daemon.metric(REDIS_DATA_LOSS).await == 1.0
    })
    .await;
    // Counted, not requested: nothing is replayed, and the instance stays ready.
    assert!(!conn.exists::<_, bool>("rebuild:requests").unwrap());
    assert_eq!(daemon.metric(REBUILD_MESSAGES).await, 0.0);
    wait_rebuilt_and_ready(&daemon).await;

    // The operator asks for it, as docs/operations.md shows.
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .args(["rebuild", "--since", "15m"])
        .env_remove("CACHE_LAYER_CONFIG")
        .envs(scenario.kafka.daemon_env())
        .env("CACHE_LAYER__REDIS__URL", scenario.redis.url())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // Every partition of the three source topics.
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        format!(
            "requested the rebuild of {} partitions from 15m ago; /readyz shows its progress",
            3 * PARTITIONS
        )
    );

    scenario.assert_converged(DEADLINE).await;
    assert_eq!(
        daemon.metric(REBUILD_MESSAGES).await,
        scenario.stream.len() as f64
    );
    wait_rebuilt_and_ready(&daemon).await;
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_interrupted_by_sigkill_is_finished_by_the_restarted_daemon() {
    let (mut scenario, half) = half_landed(28).await;
    produce_rest(&scenario, half).await;
    let first = spawn(&scenario.kafka, &scenario.redis.url(), QUICK_SESSION);
    scenario.assert_landed(DEADLINE).await;

    scenario.redis.restart().await.unwrap();
    wait_until(DEADLINE, "the rebuild under way", || async {
        first.metric(REBUILD_MESSAGES).await > 0.0
    })
    .await;
    let (_, body) = readyz(&first).await;
    eprintln!("killed with the rebuild at {}", body["checks"]["rebuild"]);
    first.kill().await.unwrap();

    // The requests not finished stay in Redis, with the marker the first daemon set:
    // the next owner of each partition replays it whole.
    let second = spawn(&scenario.kafka, &scenario.redis.url(), QUICK_SESSION);
    scenario.assert_converged(DEADLINE).await;
    wait_rebuilt_and_ready(&second).await;
    wait_committed(&scenario, scenario.stream.len()).await;
    assert!(second.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_each_rebuild_their_own_partitions() {
    let (mut scenario, half) = half_landed(29).await;
    let first = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    wait_committed(&scenario, half).await;
    let second = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    // Both assigned (their statistics report the lag of partitions of their own) before
    // the rest is produced: each writes partitions of its own.
    for daemon in [&first, &second] {
        wait_until(DEADLINE, "both daemons assigned", || async {
            daemon
                .get("/metrics")
                .await
                .is_some_and(|(_, text)| text.contains(&format!("{}{{", CONSUMER_LAG)))
        })
        .await;
    }
    produce_rest(&scenario, half).await;
    scenario.assert_landed(DEADLINE).await;
    let (a, b) = (
        first.metric(MESSAGES_CONSUMED).await,
        second.metric(MESSAGES_CONSUMED).await,
    );
    assert!(a > 0.0 && b > 0.0, "consumed {a} and {b}");

    scenario.redis.restart().await.unwrap();
    scenario.assert_converged(DEADLINE).await;
    wait_rebuilt_and_ready(&first).await;
    wait_rebuilt_and_ready(&second).await;
    // The loss found by whichever looked first (both, when they look at the same
    // moment, and then the partitions are replayed twice); each replayed its own.
    let losses = first.metric(REDIS_DATA_LOSS).await + second.metric(REDIS_DATA_LOSS).await;
    let (a, b) = (
        first.metric(REBUILD_MESSAGES).await,
        second.metric(REBUILD_MESSAGES).await,
    );
    assert!(a > 0.0 && b > 0.0, "replayed {a} and {b}");
    assert!(losses >= 1.0, "{losses} losses");
    if losses == 1.0 {
        assert_eq!(a + b, scenario.stream.len() as f64);
    }
    for daemon in [first, second] {
        assert!(daemon.stop().await.unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_command_names_source_topics_that_do_not_exist() {
    let kafka = TestKafka::start(1).await;
    let redis = cache_layer_testkit::RedisServer::start().await.unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .args(["rebuild", "--since", "15m"])
        .env_remove("CACHE_LAYER_CONFIG")
        .envs(kafka.daemon_env())
        .env("CACHE_LAYER__TOPICS__TRENDS", "no-such-trends")
        .env("CACHE_LAYER__TOPICS__USER_METRICS", "no-such-users")
        .env("CACHE_LAYER__TOPICS__WINDOWS", "no-such-windows")
        .env("CACHE_LAYER__REDIS__URL", redis.url())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for topic in ["no-such-trends", "no-such-users", "no-such-windows"] {
        assert!(stderr.contains(topic), "{stderr}");
    }
    assert!(!connect(&redis)
        .exists::<_, bool>("rebuild:requests")
        .unwrap());
}
