//! Kafka's log as Apache Kafka writes it: offsets with holes that are the log's own.
//! A transactional upstream (a commit every 20 records, so a marker every 20 offsets of
//! each partition it wrote, and one aborted transaction) and a compacted topic whose
//! cleaner has run. Each test ends with Redis exactly as the library writes the valid
//! stream in one go, no WARN line in the daemon's log, and the group's commits at every
//! partition's log end: a lag of 0, past the last marker too. Tombstones delete what
//! their keys name. And a flood of bad messages is logged ten at a time with a summary
//! of the rest, never a line each.

use std::path::Path;
use std::time::Duration;

use cache_layer::metrics::CONSUMER_LAG;
use cache_layer::models::MessageKind;
use cache_layer_testkit::fixtures;
use cache_layer_testkit::generate::Generated;
use cache_layer_testkit::kafka::TestKafka;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::wait_until;

use crate::support::spawn_logging;

const DEADLINE: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 3;

/// Waits for the exact state and a lag of 0, committed and as the daemon reports it, then
/// stops the daemon and asserts that it logged no WARN or ERROR line.
async fn assert_landed_quietly(scenario: &Scenario, daemon: DaemonProcess, log: &Path) {
    scenario.assert_converged(DEADLINE).await;
    scenario
        .kafka
        .wait_caught_up(&scenario.kafka.group, DEADLINE)
        .await;
    // librdkafka's statistics (every 5 s) bring the lag the daemon exports.
    wait_until(DEADLINE, "the exported lag at 0", || async {
        let text = daemon
            .get("/metrics")
            .await
            .map(|(_, t)| t)
            .unwrap_or_default();
        text.contains(CONSUMER_LAG) && daemon.metric(CONSUMER_LAG).await == 0.0
    })
    .await;
    assert!(daemon.stop().await.unwrap().success());
    let logged = std::fs::read_to_string(log).unwrap();
    let loud: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(loud.is_empty(), "{} loud lines: {loud:#?}", loud.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_stream_lands_exactly_quietly_and_with_no_lag() {
    let scenario = Scenario::start(PARTITIONS, 3_000, 51).await;
    // Another stream over the same keys: were any of it read, Redis would differ.
    let aborted = fixtures::stream(300, 600, 52);
    scenario
        .kafka
        .produce_transactional(&scenario.stream, 20, &aborted, 40)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = spawn_logging(&scenario.kafka, &scenario.redis.url(), &[], &log);
    assert_landed_quietly(&scenario, daemon, &log).await;
}

/// Rounds of window counts keyed by window and keyword, each key updated every round
/// with a growing count, but the last round updates every other key only: compaction
/// keeps each key's last record, so the cleaned log has holes between the records it
/// keeps, and those records are also what Redis must hold after the whole stream.
fn updated_counts(keys: usize, rounds: i64) -> Vec<Vec<Generated>> {
    (1..=rounds)
        .map(|round| {
            (0..keys)
                .filter(|i| round < rounds || i % 2 == 0)
                .map(|i| Generated {
                    kind: MessageKind::Windows,
                    key: format!("window_2024_01_01_12_00|k{i}"),
                    payload: fixtures::window_json(&format!("k{i}"), round * 10 + i as i64, 0),
                    malformed: false,
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_lands_exactly_quietly_and_with_no_lag() {
    let kafka = TestKafka::start(PARTITIONS).await;
    // The cleaner takes every closed segment at once, and a segment closes after 100 ms.
    kafka
        .alter_topic(
            &kafka.windows,
            &[
                ("cleanup.policy", "compact"),
                ("segment.ms", "100"),
                ("min.cleanable.dirty.ratio", "0.001"),
                ("min.compaction.lag.ms", "0"),
                ("delete.retention.ms", "100"),
            ],
        )
        .await;
    let rounds = updated_counts(200, 5);
    let scenario = Scenario::with_stream(kafka, rounds.concat()).await;
    for round in &rounds {
        scenario.kafka.produce_generated(round).await;
        // The next record rolls the segment this one closes.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let held = || async {
        let mut held = 0;
        for partition in 0..PARTITIONS {
            held += scenario
                .kafka
                .records_held(&scenario.kafka.windows, partition)
                .await;
        }
        held
    };
    // The cleaner has removed superseded records: the log holds fewer than were produced.
    let produced = scenario.stream.len();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        // A record more rolls every partition's active segment, which is never cleaned.
        scenario
            .kafka
            .produce_generated(&rounds[rounds.len() - 1])
            .await;
        if held().await < produced {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log cleaner never ran"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = spawn_logging(&scenario.kafka, &scenario.redis.url(), &[], &log);
    assert_landed_quietly(&scenario, daemon, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_messages_is_logged_ten_at_a_time_with_a_summary() {
    let kafka = TestKafka::start(1).await;
    let redis = cache_layer_testkit::RedisServer::start().await.unwrap();
    let bad: Vec<(String, String)> = (0..60)
        .map(|i| (format!("bad-{i}"), "{not json".to_owned()))
        .collect();
    kafka.produce(&kafka.trends, &bad).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = spawn_logging(&kafka, &redis.url(), &[], &log);
    kafka.wait_committed(&kafka.group, 60, DEADLINE).await;
    // The summary comes once the 10 s window is over.
    wait_until(DEADLINE, "the summary of the lines held back", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("held_back=50")
    })
    .await;
    assert!(daemon.stop().await.unwrap().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines = logged.matches("message rejected").count();
    assert_eq!(lines, 10, "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_the_trend_and_the_window_their_keys_name() {
    use cache_layer_testkit::kafka::{daemon_config, RunningDaemon};
    use cache_layer_testkit::{connect, trend_records, window_json};
    use redis::Commands;

    let kafka = TestKafka::start(1).await;
    let redis = cache_layer_testkit::RedisServer::start().await.unwrap();
    // Five trends keyed by keyword, and two windows of three counts each.
    kafka
        .produce(&kafka.trends, &trend_records("t", 5, 3))
        .await;
    let counts: Vec<(String, String)> = (0..2)
        .flat_map(|minute| {
            (0..3).map(move |i| {
                (
                    format!("k{i}"),
                    window_json(&format!("k{i}"), 10 + i, minute),
                )
            })
        })
        .collect();
    kafka.produce(&kafka.windows, &counts).await;
    // Then tombstones of one trend and one window, one after a count of the window
    // comes again, and one on the user metrics, which name nothing.
    kafka.produce_tombstones(&kafka.trends, &["t1"]).await;
    kafka
        .produce_tombstones(&kafka.windows, &["window_2024_01_01_12_00"])
        .await;
    kafka
        .produce(&kafka.windows, &[("late", window_json("late", 7, 0))])
        .await;
    kafka.produce_tombstones(&kafka.users, &["snapshot"]).await;

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka
        .wait_committed(&kafka.group, 5 + 6 + 2 + 1 + 1, DEADLINE)
        .await;
    let mut conn = connect(&redis);
    assert!(!conn.exists::<_, bool>("trends:keyword:t1").unwrap());
    let ranked: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(ranked.len(), 4, "{ranked:?}");
    assert!(!ranked.contains(&"t1".to_owned()), "{ranked:?}");
    let fields: Vec<String> = conn.hkeys("windows:window_2024_01_01_12_00").unwrap();
    assert_eq!(fields, ["late"], "the window deleted, then written again");
    assert_eq!(
        conn.hlen::<_, usize>("windows:window_2024_01_01_12_01")
            .unwrap(),
        3
    );
    let indexed: Vec<String> = conn.zrange("windows:index", 0, -1).unwrap();
    assert_eq!(indexed.len(), 2, "{indexed:?}");
    for key in ["windows:window_2024_01_01_12_00", "trends:current"] {
        let ttl: i64 = conn.ttl(key).unwrap();
        assert!(ttl > 0, "{key} has TTL {ttl}");
    }
    // The user metrics' tombstone named nothing: rejected and dead-lettered.
    let dead = kafka.read(&kafka.dead_letter, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].headers[cache_layer::pipeline::dead_letter::HEADER_REASON],
        "wrong_shape"
    );
    daemon.stop().await;
}
