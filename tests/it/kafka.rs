//! Kafka as users run it: every compression codec on input, a source topic created after
//! the daemon started, and the librdkafka properties that cache-layer manages refused.

use std::process::Command;
use std::time::{Duration, Instant};

use cache_layer::models::MessageKind;
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::{connect, wait_until, window_json, RedisServer};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_compressed_with_every_codec_land_like_uncompressed_ones() {
    let kafka = TestKafka::start(2).await;
    let redis = RedisServer::start().await.unwrap();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for (minute, codec) in codecs.iter().enumerate() {
        let records: Vec<_> = (0..50)
            .map(|i| {
                (
                    format!("{codec}{i}"),
                    window_json(&format!("{codec}{i}"), i + 1, minute as u32),
                )
            })
            .collect();
        kafka
            .produce_compressed(&kafka.windows, codec, &records)
            .await;
    }
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 250, DEADLINE).await;

    let mut conn = connect(&redis);
    let plain: Vec<(String, String)> = conn.hgetall("windows:window_2024_01_01_12_00").unwrap();
    assert_eq!(plain.len(), 50);
    for (minute, codec) in codecs.iter().enumerate().skip(1) {
        let key = format!("windows:window_2024_01_01_12_{minute:02}");
        let written: Vec<(String, String)> = conn.hgetall(&key).unwrap();
        assert_eq!(written.len(), 50, "{codec}");
        // The same counts as the uncompressed ones, under the codec's keywords.
        let count = |fields: &[(String, String)], i: usize| {
            fields
                .iter()
                .filter(|(_, v)| v.contains(&format!("\"count\":{i},")))
                .count()
        };
        for i in 1..=50 {
            assert_eq!(count(&written, i), count(&plain, i), "{codec}, count {i}");
        }
    }
    assert_eq!(daemon.status.snapshot().rejected, 0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_topic_created_after_the_start_is_consumed_within_seconds() {
    let kafka = TestKafka::start_with(1, &[MessageKind::Trends, MessageKind::UserMetrics]).await;
    let redis = RedisServer::start().await.unwrap();
    let mut config = daemon_config(&kafka, &redis.url());
    // The daemon's own metadata refresh, not the tests' faster one.
    config
        .kafka
        .properties
        .0
        .remove("topic.metadata.refresh.interval.ms");
    let started = Instant::now();
    let daemon = RunningDaemon::spawn(config);
    wait_until(DEADLINE, "/readyz to name the missing topic", || async {
        daemon.readyz().await.is_some_and(|(code, body)| {
            code == 503
                && body["checks"]["kafka"]["missing_topics"]
                    == serde_json::json!([kafka.windows.as_str()])
        })
    })
    .await;

    // The topic-creating job finishes 5 s after the daemon started.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    kafka.create_source(MessageKind::Windows).await;
    let created = Instant::now();
    kafka
        .produce(&kafka.windows, &[("late", window_json("late", 1, 0))])
        .await;
    kafka
        .wait_committed(&kafka.group, 1, Duration::from_secs(10))
        .await;
    assert!(created.elapsed() < Duration::from_secs(10));
    let held: bool = connect(&redis)
        .hexists("windows:window_2024_01_01_12_00", "late")
        .unwrap();
    assert!(held);
    wait_until(DEADLINE, "/readyz to be ready", || async {
        daemon.readyz().await.is_some_and(|(code, _)| code == 200)
    })
    .await;
    daemon.stop().await;
}

#[test]
fn a_managed_property_stops_check_config_and_run_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache-layer.toml");
    std::fs::write(
        &path,
        "[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n",
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let output = Command::new(env!("CARGO_BIN_EXE_cache-layer"))
            .arg("--config")
            .arg(&path)
            .arg(command)
            .env_remove("CACHE_LAYER_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("kafka.properties.enable.auto.offset.store")
                && stderr.contains("an offset is stored only after its batch was written"),
            "{command}: {stderr}"
        );
    }
}
