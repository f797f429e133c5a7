//! The streaming daemon end to end: Apache Kafka in, a real redis-server out.

use std::collections::HashMap;
use std::time::Duration;

use cache_layer::pipeline::dead_letter::{
    HEADER_DETAIL, HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC,
};
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::RedisServer;
use cache_layer_testkit::{connect, trend_json, trend_records, wait_until, window_records};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(30);

fn users_json(user: &str, second: u32) -> String {
    format!(
        r#"{{"total_active_users":{second},"posts_per_minute":1.0,"top_contributors":[],
        "active_users":["{user}"],"timestamp":"2024-01-01T12:00:{second:02}Z"}}"#
    )
}

fn hlen(conn: &mut redis::Connection, key: &str) -> usize {
    conn.hlen(key).unwrap()
}

fn commandstat(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map(|calls| calls.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_every_kind_lands_in_redis_with_ttls_and_its_offset_committed() {
    let kafka = TestKafka::start(3).await;
    let redis = RedisServer::start().await.unwrap();
    let trends: Vec<_> = (0..60)
        .map(|i| {
            (
                format!("kw{i}"),
                trend_json(&format!("KW{i}"), 0, i + 1, 10),
            )
        })
        .collect();
    let users: Vec<_> = (0..20)
        .map(|i| ("users".to_owned(), users_json(&format!("did:plc:u{i}"), i)))
        .collect();
    let windows = window_records("w", 150);
    kafka.produce(&kafka.trends, &trends).await;
    kafka.produce(&kafka.users, &users).await;
    kafka.produce(&kafka.windows, &windows).await;

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    let mut conn = connect(&redis);
    kafka.wait_committed(&kafka.group, 230, DEADLINE).await;

    let ranking: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(ranking.len(), 60);
    assert_eq!(
        &ranking[..3],
        ["kw0", "kw1", "kw2"],
        "rank ascending within the window"
    );
    for i in 0..60 {
        let detail: String = conn.get(format!("trends:keyword:kw{i}")).unwrap();
        assert!(
            detail.contains(&format!("\"keyword\":\"KW{i}\"")),
            "{detail}"
        );
    }
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 150);
    let active: usize = conn.zcard("users:active").unwrap();
    assert_eq!(active, 20);
    let metrics: String = conn.get("users:metrics").unwrap();
    assert!(
        metrics.contains("\"total_active_users\":19"),
        "the newest snapshot wins: {metrics}"
    );
    let keys: Vec<String> = conn.keys("*").unwrap();
    // The trends, users and windows keys, and the group's marker.
    assert_eq!(keys.len(), 60 + 2 + 3 + 2 + 1);
    assert!(
        keys.contains(&format!("markers:{}", kafka.group)),
        "{keys:?}"
    );
    for key in keys {
        let ttl: i64 = conn.ttl(&key).unwrap();
        assert!(ttl > 0 && ttl <= 300, "{key} has TTL {ttl}");
    }
    let status = daemon.status.snapshot();
    assert_eq!(
        (status.consumed, status.acknowledged, status.rejected),
        (230, 230, 0)
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_batched_into_far_fewer_pipelines() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    kafka
        .produce(&kafka.windows, &window_records("k", 3_000))
        .await;

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 3_000, DEADLINE).await;

    let mut conn = connect(&redis);
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 3_000);
    // Each pipeline with window counts holds exactly one ZADD of windows:index.
    let pipelines = commandstat(&mut conn, "zadd");
    let batches = daemon.status.snapshot().batches;
    assert_eq!(pipelines, batches);
    assert!(
        (6..=60).contains(&pipelines),
        "3000 messages, batches of at most 500: {pipelines} pipelines"
    );
    // One HSET per window per pipeline, not one per message.
    assert_eq!(commandstat(&mut conn, "hset"), pipelines);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_message_is_written_without_waiting_for_the_batch_timer() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let mut config = daemon_config(&kafka, &redis.url());
    // A batch timer far longer than the deadline below: only the write made when the
    // consumer has nothing more ready can meet it.
    config.batch.max_wait = Duration::from_secs(600);
    let daemon = RunningDaemon::spawn(config);
    kafka
        .produce(
            &kafka.trends,
            &[("lone".to_owned(), trend_json("Lone", 0, 1, 10))],
        )
        .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    // The batch is counted just after its write, so the key may be seen first.
    wait_until(
        DEADLINE,
        "the lone trend in Redis, its batch counted",
        || {
            let mut conn = conn.clone();
            let batches = daemon.status.snapshot().batches;
            async move {
                let written: bool = redis::AsyncCommands::exists(&mut conn, "trends:keyword:lone")
                    .await
                    .unwrap();
                written && batches > 0
            }
        },
    )
    .await;
    assert_eq!(daemon.status.snapshot().batches, 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_updates_to_one_key_in_a_batch_coalesce_and_the_last_wins() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let updates: Vec<_> = (1..=100)
        .map(|f| ("rust".to_owned(), trend_json("Rust", 0, 1, f)))
        .collect();
    kafka.produce(&kafka.trends, &updates).await;
    let snapshots: Vec<_> = (0..50)
        .map(|s| ("users".to_owned(), users_json("did:plc:a", s)))
        .collect();
    kafka.produce(&kafka.users, &snapshots).await;

    // A long linger, so that the batches are cut by size rather than by fetch timing.
    let mut config = daemon_config(&kafka, &redis.url());
    config.batch.max_wait = Duration::from_secs(1);
    let daemon = RunningDaemon::spawn(config);
    kafka.wait_committed(&kafka.group, 150, DEADLINE).await;

    let mut conn = connect(&redis);
    let detail: String = conn.get("trends:keyword:rust").unwrap();
    assert!(
        detail.contains("\"frequency\":100"),
        "the last alert wins: {detail}"
    );
    let metrics: String = conn.get("users:metrics").unwrap();
    assert!(metrics.contains("\"total_active_users\":49"), "{metrics}");
    // 150 messages, at most a few batches: each batch runs one detail script and one
    // ranking script for the keyword, one guarded SET of users:metrics and one ZADD of
    // users:active.
    let batches = daemon.status.snapshot().batches;
    assert!(batches < 10, "150 messages in {batches} batches");
    let scripts = commandstat(&mut conn, "evalsha");
    assert!(
        scripts <= 4 * batches,
        "{scripts} script calls for 150 messages in {batches} batches"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_the_dead_letter_topic_and_good_ones_are_written() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let bad: Vec<(&str, String, &str)> = vec![
        ("b0", "{not json".into(), "not_json"),
        ("b1", r#"{"keyword":"x"}"#.into(), "wrong_shape"),
        ("b2", trend_json("   ", 0, 1, 5), "empty_keyword"),
        ("b3", trend_json("neg", 0, 1, -5), "negative_value"),
        (
            "b4",
            trend_json("nan", 0, 1, 5).replace("1.5", "NaN"),
            "non_finite",
        ),
        ("b5", trend_json("rank", 0, 0, 5), "invalid_rank"),
        (
            "b6",
            trend_json("conf", 0, 1, 5).replace("0.75", "1.75"),
            "confidence_out_of_range",
        ),
        ("b7", "x".repeat(20_000), "too_large"),
    ];
    let mut records = Vec::new();
    for i in 0..30 {
        records.push((
            format!("g{i}"),
            trend_json(&format!("good{i}"), 0, i + 1, 5),
        ));
        if let Some((key, payload, _)) = bad.get(i as usize / 4).filter(|_| i % 4 == 3) {
            records.push((key.to_string(), payload.clone()));
        }
    }
    assert_eq!(records.len(), 30 + bad.len() - 1);
    records.push(("b7".into(), bad[7].1.clone()));
    kafka.produce(&kafka.trends, &records).await;

    let mut config = daemon_config(&kafka, &redis.url());
    config.batch.max_message_bytes = 10_000;
    let daemon = RunningDaemon::spawn(config);
    kafka.wait_committed(&kafka.group, 38, DEADLINE).await;

    let mut conn = connect(&redis);
    let ranking: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(ranking.len(), 30, "every good message is written");
    let dead = kafka.read(&kafka.dead_letter, bad.len()).await;
    assert_eq!(dead.len(), bad.len());
    let by_key: HashMap<_, _> = dead.iter().map(|r| (r.key.clone().unwrap(), r)).collect();
    for (key, payload, reason) in &bad {
        let record = by_key[*key];
        assert_eq!(
            record.payload,
            payload.as_bytes(),
            "the original bytes of {key}"
        );
        assert_eq!(record.headers[HEADER_REASON], *reason, "{key}");
        assert_eq!(record.headers[HEADER_TOPIC], kafka.trends);
        assert_eq!(record.headers[HEADER_PARTITION], "0");
        assert!(record.headers[HEADER_OFFSET].parse::<i64>().unwrap() < 38);
        assert!(
            record.headers[HEADER_DETAIL].starts_with(reason),
            "{}",
            record.headers[HEADER_DETAIL]
        );
    }
    let status = daemon.status.snapshot();
    assert_eq!(
        (status.consumed, status.rejected, status.dead_lettered),
        (38, 8, 8)
    );
    // Exactly one copy of each: the topic ends after them.
    assert_eq!(
        kafka.high_watermark(&kafka.dead_letter, 0).await,
        bad.len() as i64
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_loses_nothing_and_advances_no_offset() {
    let kafka = TestKafka::start(2).await;
    let mut redis = RedisServer::start_persistent().await.unwrap();
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka
        .produce(&kafka.windows, &window_records("before", 200))
        .await;
    kafka.wait_committed(&kafka.group, 200, DEADLINE).await;

    redis.stop();
    kafka
        .produce(&kafka.windows, &window_records("during", 300))
        .await;
    wait_until(DEADLINE, "the daemon to notice the outage", || async {
        !daemon.status.redis_ok()
    })
    .await;
    // While Redis is down, every commit leaves the offsets where they were.
    for _ in 0..5 {
        assert_eq!(kafka.committed_total(&kafka.group).await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(daemon.status.snapshot().acknowledged, 200);

    redis.restart().await.unwrap();
    kafka
        .produce(&kafka.windows, &window_records("after", 100))
        .await;
    kafka.wait_committed(&kafka.group, 600, DEADLINE).await;
    let mut conn = connect(&redis);
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 600);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_mid_stream_commits_and_a_second_daemon_writes_the_rest() {
    let kafka = TestKafka::start(3).await;
    let redis = RedisServer::start().await.unwrap();
    kafka
        .produce(&kafka.windows, &window_records("k", 5_000))
        .await;
    let mut config = daemon_config(&kafka, &redis.url());
    config.batch.max_messages = 10;

    let first = RunningDaemon::spawn(config.clone());
    wait_until(DEADLINE, "a first commit", || async {
        kafka.committed_total(&kafka.group).await > 0
    })
    .await;
    let acknowledged = {
        first.shutdown.cancel();
        let status = std::sync::Arc::clone(&first.status);
        tokio::time::timeout(DEADLINE, first.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        status.snapshot().acknowledged
    };
    let committed = kafka.committed_total(&kafka.group).await;
    assert_eq!(
        committed as u64, acknowledged,
        "the drain commits everything it wrote"
    );
    assert!(committed < 5_000, "stopped mid-stream: {committed}");
    let mut conn = connect(&redis);
    assert_eq!(
        hlen(&mut conn, "windows:window_2024_01_01_12_00") as i64,
        committed
    );

    let second = RunningDaemon::spawn(config);
    kafka.wait_committed(&kafka.group, 5_000, DEADLINE).await;
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 5_000);
    let resumed = second.status.snapshot().consumed;
    assert_eq!(
        resumed as i64,
        5_000 - committed,
        "the second daemon starts where the first committed"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_in_one_group_split_the_partitions_and_write_everything() {
    let kafka = TestKafka::start(4).await;
    let redis = RedisServer::start().await.unwrap();
    let config = daemon_config(&kafka, &redis.url());
    let a = RunningDaemon::spawn(config.clone());
    let b = RunningDaemon::spawn(config);
    wait_until(DEADLINE, "both members to hold partitions", || async {
        let (a, b) = (a.status.snapshot().assigned, b.status.snapshot().assigned);
        a > 0 && b > 0 && a + b == 12
    })
    .await;

    kafka
        .produce(&kafka.windows, &window_records("k", 2_000))
        .await;
    kafka
        .produce(&kafka.trends, &trend_records("t", 200, 3))
        .await;
    kafka.wait_committed(&kafka.group, 2_200, DEADLINE).await;

    let mut conn = connect(&redis);
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 2_000);
    assert_eq!(conn.zcard::<_, usize>("trends:current").unwrap(), 200);
    let (sa, sb) = (a.status.snapshot(), b.status.snapshot());
    assert!(
        sa.consumed > 0 && sb.consumed > 0,
        "both consumed: {sa:?} {sb:?}"
    );
    assert_eq!(sa.consumed + sb.consumed, 2_200, "no message read twice");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_survived_without_loss() {
    let mut kafka = TestKafka::own(2).await;
    let redis = RedisServer::start().await.unwrap();
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka
        .produce(&kafka.windows, &window_records("before", 100))
        .await;
    kafka.wait_committed(&kafka.group, 100, DEADLINE).await;

    kafka.apache_mut().kill().await;
    // The producer queues while the broker is down and delivers once it is back.
    let producer = kafka.clients();
    let producing = tokio::spawn(async move {
        let topic = producer.windows.clone();
        producer
            .produce(&topic, &window_records("during", 100))
            .await
    });
    // An outage of a few seconds, as a broker's restart takes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.apache_mut().restart().await.unwrap();
    producing.await.unwrap();

    kafka.wait_committed(&kafka.group, 200, DEADLINE).await;
    let mut conn = connect(&redis);
    assert_eq!(hlen(&mut conn, "windows:window_2024_01_01_12_00"), 200);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_instances_loses_nothing() {
    let kafka = TestKafka::start(6).await;
    let redis = RedisServer::start().await.unwrap();
    let config = daemon_config(&kafka, &redis.url());
    let mut instances: Vec<RunningDaemon> = (0..3)
        .map(|_| RunningDaemon::spawn(config.clone()))
        .collect();

    // A stream that keeps flowing through the restarts: 40 chunks of 100 messages.
    let records = window_records("r", 4_000);
    let producing = async {
        for chunk in records.chunks(100) {
            kafka.produce(&kafka.windows, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let restarting = async {
        for i in 0..3 {
            wait_until(DEADLINE, "progress before the next restart", || async {
                kafka.committed_total(&kafka.group).await as usize > 600 * (i + 1)
            })
            .await;
            let stopped = instances.remove(0);
            stopped.stop().await;
            instances.push(RunningDaemon::spawn(config.clone()));
        }
    };
    tokio::join!(producing, restarting);

    kafka.wait_committed(&kafka.group, 4_000, DEADLINE).await;
    let mut conn = connect(&redis);
    let stored: HashMap<String, String> = conn.hgetall("windows:window_2024_01_01_12_00").unwrap();
    assert_eq!(stored.len(), 4_000);
    for (i, (keyword, _)) in records.iter().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(&stored[keyword]).unwrap();
        assert_eq!(
            entry["count"],
            i as i64 + 1,
            "{keyword} holds its own value"
        );
    }
    for instance in instances {
        instance.stop().await;
    }
}
