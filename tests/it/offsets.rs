//! `cache-layer offsets` and `cache-layer offsets reset`, run as the operator runs them,
//! against Apache Kafka: the figures printed are the broker's own, a reset is refused
//! while the group has a member (and, on the mock cluster, which cannot describe a
//! group, whenever membership cannot be told), and a reset to a time replays exactly the
//! messages produced after it.

use std::ops::Deref;
use std::process::{Command, Output};
use std::time::Duration;

use cache_layer::metrics::MESSAGES_CONSUMED;
use cache_layer_testkit::kafka::{Broker, MockKafka};
use cache_layer_testkit::state::{assert_same_state, data_snapshot, expected_state, Scenario};
use cache_layer_testkit::{connect, wait_until};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::spawn;

const DEADLINE: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;

/// `cache-layer offsets ARGS` for the test group on `kafka`.
fn offsets(kafka: &Broker, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cache-layer"))
        .arg("offsets")
        .args(args)
        .env_remove("CACHE_LAYER_CONFIG")
        .envs(kafka.daemon_env())
        .output()
        .unwrap()
}

/// The JSON a successful command printed.
fn json(output: Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The whole stream consumed by a daemon that then stopped, and 10 more trend alerts
/// produced to each partition after it, for a lag.
async fn consumed_then_more<K: Deref<Target = Broker>>(scenario: &Scenario<K>) {
    scenario.kafka.produce_generated(&scenario.stream).await;
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    scenario.assert_landed(DEADLINE).await;
    assert!(daemon.stop().await.unwrap().success());
    for partition in 0..PARTITIONS {
        let records: Vec<(String, String)> = (0..10)
            .map(|i| {
                (
                    format!("late-{i}"),
                    cache_layer_testkit::fixtures::TREND.to_owned(),
                )
            })
            .collect();
        scenario
            .kafka
            .produce_to(&scenario.kafka.trends, Some(partition), &records)
            .await;
    }
}

/// Every partition's figures, as printed, against what the broker says: the log end, the
/// commit, the lag of the 10 late alerts, and the committed message's time.
async fn assert_figures_exact(scenario: &Scenario) {
    let started = Utc::now();
    let printed = json(offsets(&scenario.kafka, &["--json"]));
    let committed = scenario.kafka.committed(&scenario.kafka.group).await;
    let rows = printed.as_array().unwrap();
    assert_eq!(rows.len(), 3 * PARTITIONS as usize, "{printed}");
    for row in rows {
        let topic = row["topic"].as_str().unwrap();
        let partition = row["partition"].as_i64().unwrap() as i32;
        let end = scenario.kafka.high_watermark(topic, partition).await;
        assert_eq!(row["log_end"], end, "{row}");
        // A partition without messages has no commit, and so no lag.
        let Some(commit) = committed.get(&(topic.to_owned(), partition)) else {
            assert!(row["committed"].is_null() && row["lag"].is_null(), "{row}");
            continue;
        };
        assert_eq!(row["committed"], *commit, "{row}");
        assert_eq!(row["lag"], (end - commit).max(0), "{row}");
        let late = if topic == scenario.kafka.trends {
            10
        } else {
            0
        };
        assert_eq!(row["lag"], late, "{row}");
        // The stream was produced within the test, before the command.
        let time: DateTime<Utc> = row["committed_timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            time <= started && started - time < chrono::TimeDelta::minutes(5),
            "{row}"
        );
    }
    // The text form shows the same figures.
    let text = offsets(&scenario.kafka, &[]);
    let text = String::from_utf8(text.stdout).unwrap();
    let group = &scenario.kafka.group;
    assert!(text.starts_with(&format!("group {group}\n")), "{text}");
    for topic in scenario.kafka.sources() {
        assert_eq!(text.matches(topic).count(), PARTITIONS as usize, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_printed_are_the_brokers() {
    let scenario = Scenario::start(PARTITIONS, 900, 41).await;
    consumed_then_more(&scenario).await;
    assert_figures_exact(&scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_refused_while_the_group_has_a_member() {
    refused_while_a_member_runs("classic", 43).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_refused_while_a_consumer_protocol_group_has_a_member() {
    refused_while_a_member_runs("consumer", 47).await;
}

/// A member of the group running under `protocol` (KIP-848's `consumer` or `classic`):
/// the reset is refused and nothing moves.
async fn refused_while_a_member_runs(protocol: &str, seed: u64) {
    let scenario = Scenario::start(PARTITIONS, 300, seed).await;
    scenario.kafka.produce_generated(&scenario.stream).await;
    let protocol = [("CACHE_LAYER__KAFKA__GROUP_PROTOCOL", protocol)];
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &protocol);
    scenario.assert_landed(DEADLINE).await;
    let before = scenario.kafka.committed(&scenario.kafka.group).await;

    let refused = offsets(&scenario.kafka, &["reset", "--to-earliest", "--execute"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("has active members"), "{stderr}");
    assert!(stderr.contains("stop every instance"), "{stderr}");
    assert_eq!(
        scenario.kafka.committed(&scenario.kafka.group).await,
        before
    );
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_cannot_describe_the_group_gets_no_reset() {
    // librdkafka's mock cluster has no DescribeGroups: whether the group has members
    // cannot be told, so the reset is refused rather than risked.
    let scenario = Scenario::start_on(MockKafka::start(PARTITIONS), 300, 44).await;
    consumed_then_more(&scenario).await;
    let before = scenario.kafka.committed(&scenario.kafka.group).await;
    let refused = offsets(&scenario.kafka, &["reset", "--to-earliest", "--execute"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot tell whether group"), "{stderr}");
    assert_eq!(
        scenario.kafka.committed(&scenario.kafka.group).await,
        before
    );
    // A dry run needs no membership: it prints the moves.
    let plan = json(offsets(
        &scenario.kafka,
        &["reset", "--to-earliest", "--dry-run", "--json"],
    ));
    assert_eq!(plan["dry_run"], true);
    for m in plan["moves"].as_array().unwrap() {
        assert_eq!(m["to"], 0, "{m}");
    }
    let plan = json(offsets(
        &scenario.kafka,
        &["reset", "--to-latest", "--dry-run", "--json"],
    ));
    for m in plan["moves"].as_array().unwrap() {
        let end = scenario
            .kafka
            .high_watermark(
                m["topic"].as_str().unwrap(),
                m["partition"].as_i64().unwrap() as i32,
            )
            .await;
        assert_eq!(m["to"], end, "{m}");
    }
    assert_eq!(
        scenario.kafka.committed(&scenario.kafka.group).await,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_to_a_time_replays_exactly_the_messages_after_it() {
    let scenario = Scenario::start(PARTITIONS, 2_000, 45).await;
    let (before, after) = scenario.stream.split_at(800);
    scenario.kafka.produce_generated(before).await;
    // The reset's time: after every message of the first part, before any of the second.
    // Kafka finds a time's offset by the records' timestamps (CreateTime, the producer's
    // clock); half a second on either side keeps the two parts apart.
    let margin = chrono::TimeDelta::milliseconds(500);
    let time = Utc::now() + margin;
    wait_until(DEADLINE, "the clock past the reset's time", || async {
        Utc::now() > time + margin
    })
    .await;
    scenario.kafka.produce_generated(after).await;
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    scenario.assert_landed(DEADLINE).await;
    assert!(daemon.stop().await.unwrap().success());
    let mut conn = connect(&scenario.redis);
    redis::cmd("FLUSHDB").exec(&mut conn).unwrap();

    let at = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let committed = scenario.kafka.committed(&scenario.kafka.group).await;
    let plan = json(offsets(
        &scenario.kafka,
        &["reset", "--to-datetime", &at, "--dry-run", "--json"],
    ));
    assert_eq!(
        scenario.kafka.committed(&scenario.kafka.group).await,
        committed,
        "a dry run commits nothing"
    );
    let done = json(offsets(
        &scenario.kafka,
        &["reset", "--to-datetime", &at, "--execute", "--json"],
    ));
    assert_eq!(done["moves"], plan["moves"]);
    assert_eq!(
        scenario.kafka.committed_total(&scenario.kafka.group).await,
        before.len() as i64,
        "every partition back to its first message after the time"
    );
    // Everything was produced within the last 15 minutes: back to the logs' start.
    let plan = json(offsets(
        &scenario.kafka,
        &["reset", "--by-duration", "-15m", "--dry-run", "--json"],
    ));
    for m in plan["moves"].as_array().unwrap() {
        assert_eq!(m["to"], 0, "{m}");
    }

    // The next run reads exactly the second part again, and Redis holds what it writes.
    // (Without its marker, the emptied Redis would be rebuilt from the TTL's start.)
    let daemon = spawn(
        &scenario.kafka,
        &scenario.redis.url(),
        &[("CACHE_LAYER__CACHE__REBUILD_ON_LOSS", "false")],
    );
    scenario
        .kafka
        .wait_committed(
            &scenario.kafka.group,
            scenario.stream.len() as i64,
            DEADLINE,
        )
        .await;
    assert_eq!(daemon.metric(MESSAGES_CONSUMED).await, after.len() as f64);
    assert_same_state(&data_snapshot(&mut conn), &expected_state(after).await);
    assert!(daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_a_dry_run_unless_executed_and_moves_by_offset_shift_and_topic() {
    let scenario = Scenario::start(PARTITIONS, 600, 46).await;
    scenario.kafka.produce_generated(&scenario.stream).await;
    let daemon = spawn(&scenario.kafka, &scenario.redis.url(), &[]);
    scenario.assert_landed(DEADLINE).await;
    assert!(daemon.stop().await.unwrap().success());
    let kafka = &scenario.kafka;
    let before = kafka.committed(&kafka.group).await;

    // As kafka-consumer-groups: without --execute, nothing is committed.
    let plan = json(offsets(kafka, &["reset", "--to-earliest", "--json"]));
    assert_eq!(plan["dry_run"], true);
    assert_eq!(kafka.committed(&kafka.group).await, before);

    // Five back, in one partition of one topic only.
    let trends0 = format!("{}:0", kafka.trends);
    let done = json(offsets(
        kafka,
        &[
            "reset",
            "--shift-by",
            "-5",
            "--topic",
            &trends0,
            "--execute",
            "--json",
        ],
    ));
    assert_eq!(done["dry_run"], false);
    let moves = done["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{done}");
    let key = (kafka.trends.clone(), 0);
    let was = before[&key];
    assert_eq!(moves[0]["to"], (was - 5).max(0), "{done}");
    let mut expected = before.clone();
    expected.insert(key, (was - 5).max(0));
    assert_eq!(kafka.committed(&kafka.group).await, expected);

    // To offset 2 in every partition of one topic.
    let done = json(offsets(
        kafka,
        &[
            "reset",
            "--to-offset",
            "2",
            "--topic",
            &kafka.windows,
            "--execute",
            "--json",
        ],
    ));
    let moves = done["moves"].as_array().unwrap();
    assert_eq!(moves.len(), PARTITIONS as usize, "{done}");
    for m in moves {
        assert_eq!(m["topic"], kafka.windows.as_str(), "{m}");
        let end = kafka
            .high_watermark(&kafka.windows, m["partition"].as_i64().unwrap() as i32)
            .await;
        assert_eq!(m["to"], 2.min(end), "{m}");
    }

    // A topic that is not a source one is named.
    let refused = offsets(
        kafka,
        &["reset", "--to-earliest", "--topic", "no-such-topic"],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no-such-topic"), "{stderr}");
}
