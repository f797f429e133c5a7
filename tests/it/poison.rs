//! Messages and keys that must not stall the stage: a window id naming a fixed key, a
//! foreign key of another type at one of the schema's keys, and rejected messages too
//! large for the broker's defaults. Each is set aside in the dead-letter topic with its
//! headers, and the stream behind it lands. A dead letter slow to deliver holds back no
//! write, and no offset passes it before it is delivered.

use std::time::Duration;

use cache_layer::pipeline::dead_letter::{
    HEADER_DETAIL, HEADER_OFFSET, HEADER_ORIGINAL_BYTES, HEADER_REASON, HEADER_TOPIC,
    HEADER_TRUNCATED_TO, TRUNCATED_BYTES,
};
use cache_layer_testkit::kafka::{daemon_config, record, MockKafka, RunningDaemon, TestKafka};
use cache_layer_testkit::{
    connect, trend_json, trend_records, wait_until, window_records, RedisServer,
};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_window_id_and_a_foreign_key_are_set_aside_and_the_stream_lands() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let mut conn = connect(&redis);
    // Another writer holds a hash where a trend's detail string belongs.
    let _: () = conn
        .hset("trends:keyword:collide", "owner", "another-app")
        .unwrap();

    let poison = r#"{"keyword":"rust","count":1,"unique_authors":1,"window_id":"index",
        "window_start":"2024-01-01T12:00:00Z","window_end":"2024-01-01T12:01:00Z"}"#;
    let mut windows = vec![("poison".to_owned(), poison.to_owned())];
    windows.extend(window_records("w", 200));
    let mut trends = vec![("collide".to_owned(), trend_json("collide", 0, 1, 10))];
    trends.extend((0..50).map(|i| (format!("t{i}"), trend_json(&format!("t{i}"), 0, i + 2, 10))));
    kafka.produce(&kafka.windows, &windows).await;
    kafka.produce(&kafka.trends, &trends).await;

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 252, DEADLINE).await;

    let held: usize = conn.hlen("windows:window_2024_01_01_12_00").unwrap();
    assert_eq!(held, 200, "every window count behind the poison");
    let kind: String = redis::cmd("TYPE")
        .arg("windows:index")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kind, "zset");
    for i in 0..50 {
        assert!(conn
            .exists::<_, bool>(format!("trends:keyword:t{i}"))
            .unwrap());
    }
    let foreign: String = conn.hget("trends:keyword:collide", "owner").unwrap();
    assert_eq!(foreign, "another-app", "the foreign key is left alone");

    let dead = kafka.read(&kafka.dead_letter, 2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let poisoned = record(&dead, "poison");
    assert_eq!(poisoned.headers[HEADER_REASON], "invalid_window_id");
    assert_eq!(poisoned.headers[HEADER_TOPIC], kafka.windows);
    assert_eq!(poisoned.payload, poison.as_bytes());
    let refused = record(&dead, "collide");
    assert_eq!(refused.headers[HEADER_REASON], "redis_refused");
    assert_eq!(refused.headers[HEADER_TOPIC], kafka.trends);
    assert_eq!(refused.headers[HEADER_OFFSET], "0");
    assert!(
        refused.headers[HEADER_DETAIL].contains("WRONGTYPE"),
        "Redis's own error: {}",
        refused.headers[HEADER_DETAIL]
    );
    assert_eq!(refused.payload, trends[0].1.as_bytes());
    let status = daemon.status.snapshot();
    assert_eq!((status.rejected, status.dead_lettered), (1, 2));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_rejected_messages_are_dead_lettered_and_the_stream_behind_them_lands() {
    let kafka = TestKafka::start(2).await;
    let redis = RedisServer::start().await.unwrap();
    let not_json = vec![b'x'; 1_040_001];
    let too_large = vec![b'{'; 4_500_000];
    // The source topic takes them; the dead-letter topic keeps the broker's 1 MB default.
    kafka
        .alter_topic(&kafka.windows, &[("max.message.bytes", "10000000")])
        .await;
    kafka
        .produce_to(&kafka.windows, Some(0), &[("not-json", &not_json)])
        .await;
    kafka
        .produce_to(&kafka.windows, Some(1), &[("too-large", &too_large)])
        .await;
    kafka
        .produce(&kafka.windows, &window_records("w", 100))
        .await;

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 102, DEADLINE).await;
    let held: usize = connect(&redis)
        .hlen("windows:window_2024_01_01_12_00")
        .unwrap();
    assert_eq!(held, 100);

    let dead = kafka.read(&kafka.dead_letter, 2).await;
    assert_eq!(dead.len(), 2);
    let whole = record(&dead, "not-json");
    assert_eq!(whole.headers[HEADER_REASON], "not_json");
    assert_eq!(whole.payload, not_json, "under the limit: sent whole");
    let cut = record(&dead, "too-large");
    assert_eq!(cut.headers[HEADER_REASON], "too_large");
    assert_eq!(cut.payload, too_large[..TRUNCATED_BYTES]);
    assert_eq!(cut.headers[HEADER_ORIGINAL_BYTES], "4500000");
    assert_eq!(
        cut.headers[HEADER_TRUNCATED_TO],
        TRUNCATED_BYTES.to_string()
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_slow_to_deliver_holds_back_no_write_and_no_offset_passes_it() {
    // The mock cluster, for the produce errors it injects.
    let kafka = MockKafka::start(1);
    let redis = RedisServer::start().await.unwrap();
    // The rejected message last: however the consumer splits the stream into batches,
    // every valid message is in its batch or in one before it, never held behind it.
    let mut trends = trend_records("t", 20, 10);
    trends.push(("bad".to_owned(), "{not json".to_owned()));
    kafka.produce(&kafka.trends, &trends).await;
    // The broker refuses every produce request, retriably, until told otherwise: the
    // dead letter waits in the daemon's producer, which keeps retrying it.
    kafka.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 1_000],
    );

    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    let mut conn = connect(&redis);
    wait_until(DEADLINE, "the valid messages of the batch in Redis", || {
        let ranked: usize = conn.zcard("trends:current").unwrap();
        async move { ranked == 20 }
    })
    .await;
    assert_eq!(kafka.high_watermark(&kafka.dead_letter, 0).await, 0);
    assert!(
        kafka.committed_total(&kafka.group).await <= 20,
        "an offset passed the dead letter (offset 20) before it was delivered"
    );

    kafka.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    kafka.wait_committed(&kafka.group, 21, DEADLINE).await;
    let dead = kafka.read(&kafka.dead_letter, 1).await;
    let bad = record(&dead, "bad");
    assert_eq!(bad.headers[HEADER_REASON], "not_json");
    assert_eq!(bad.headers[HEADER_OFFSET], "20");
    assert_eq!(kafka.high_watermark(&kafka.dead_letter, 0).await, 1);
    daemon.stop().await;
}
