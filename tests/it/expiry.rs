//! `cache.ttl_from = "event"`: a key expires at its event time plus its category's TTL,
//! whenever it is written, so a replay or a late message never restarts the clock; a
//! message already past its expiry is counted and not written. Exact expiry times from
//! a real redis-server (`EXPIRETIME`).

use std::time::Duration;

use cache_layer::config::TtlFrom;
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::{connect, wait_until, RedisServer};
use chrono::{DateTime, Utc};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);
const TTL: i64 = 600;

fn at(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A window count of `keyword` in the window `id` that ended at `end` (unix seconds).
fn window(id: &str, keyword: &str, end: i64) -> (String, String) {
    let json = format!(
        r#"{{"keyword":"{keyword}","count":3,"unique_authors":1,"window_id":"{id}",
        "window_start":"{}","window_end":"{}"}}"#,
        at(end - 60),
        at(end)
    );
    (id.to_owned(), json)
}

fn trend(keyword: &str, end: i64) -> (String, String) {
    let json = format!(
        r#"{{"keyword":"{keyword}","frequency":5,"growth_rate":1.5,"confidence_score":0.5,
        "window_start":"{}","window_end":"{}","sample_posts":[],"unique_authors":2,"rank":1}}"#,
        at(end - 60),
        at(end)
    );
    (keyword.to_owned(), json)
}

fn users(timestamp: i64) -> (String, String) {
    let json = format!(
        r#"{{"total_active_users":2,"posts_per_minute":1.0,"active_users":["did:plc:a"],
        "timestamp":"{}"}}"#,
        at(timestamp)
    );
    ("u".to_owned(), json)
}

fn expire_time(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("EXPIRETIME").arg(key).query(conn).unwrap()
}

/// The key's expiry is `expected` (unix seconds), within the rounding: the daemon gives
/// what is left of the TTL rounded up to the second, Redis counts it from its own clock a
/// moment later, and `EXPIRETIME` rounds to the second. A TTL counted from the write
/// would be minutes off.
fn assert_expires_at(conn: &mut redis::Connection, key: &str, expected: i64) {
    let actual = expire_time(conn, key);
    assert!(
        (expected..=expected + 2).contains(&actual),
        "{key} expires at {actual}, not {expected}"
    );
}

async fn expired_metric(daemon: &RunningDaemon, topic: &str) -> f64 {
    let addr = daemon.status.http_addr().unwrap();
    let (_, text) = cache_layer_testkit::http::get(addr, "/metrics")
        .await
        .unwrap();
    let (samples, _) = cache_layer_testkit::http::parse_metrics(&text);
    samples
        .iter()
        .find(|s| {
            s.name == "cache_layer_messages_expired_total"
                && s.labels.get("topic").map(String::as_str) == Some(topic)
        })
        .map_or(-1.0, |s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_at_their_event_plus_the_ttl_through_a_replay_and_a_late_window() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let now = Utc::now().timestamp();
    kafka
        .produce(
            &kafka.windows,
            &[
                window("w_recent", "rust", now - 300),
                window("w_gone", "go", now - TTL - 60),
            ],
        )
        .await;
    kafka
        .produce(
            &kafka.trends,
            &[trend("rust", now - 100), trend("zig", now - TTL - 5)],
        )
        .await;
    kafka.produce(&kafka.users, &[users(now - 200)]).await;
    let mut config = daemon_config(&kafka, &redis.url());
    config.cache.default_ttl = Duration::from_secs(TTL as u64);
    config.cache.ttl_from = TtlFrom::Event;
    let daemon = RunningDaemon::spawn(config.clone());
    kafka.wait_committed(&kafka.group, 5, DEADLINE).await;

    let mut conn = connect(&redis);
    assert_expires_at(&mut conn, "windows:w_recent", now - 300 + TTL);
    assert_expires_at(&mut conn, "windows:index", now - 300 + TTL);
    assert_expires_at(&mut conn, "trends:keyword:rust", now - 100 + TTL);
    assert_expires_at(&mut conn, "trends:current", now - 100 + TTL);
    assert_expires_at(&mut conn, "users:metrics", now - 200 + TTL);
    assert_expires_at(&mut conn, "users:active", now - 200 + TTL);
    // Past their expiry: counted, not written, not rejected.
    assert!(!conn.exists::<_, bool>("windows:w_gone").unwrap());
    assert!(!conn.exists::<_, bool>("trends:keyword:zig").unwrap());
    let ranked: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(ranked, ["rust"]);
    let indexed: Vec<String> = conn.zrange("windows:index", 0, -1).unwrap();
    assert_eq!(indexed, ["w_recent"]);
    wait_until(DEADLINE, "the expired messages counted", || async {
        expired_metric(&daemon, &kafka.windows).await == 1.0
            && expired_metric(&daemon, &kafka.trends).await == 1.0
    })
    .await;
    assert_eq!(daemon.status.snapshot().rejected, 0);

    // A late message of an older window lives what is left of its own TTL, and leaves
    // the index to the newer window's.
    kafka
        .produce(&kafka.windows, &[window("w_late", "rust", now - 500)])
        .await;
    kafka.wait_committed(&kafka.group, 6, DEADLINE).await;
    assert_expires_at(&mut conn, "windows:w_late", now - 500 + TTL);
    assert_expires_at(&mut conn, "windows:index", now - 300 + TTL);
    daemon.stop().await;

    // A replay of everything, by a group that starts from the beginning: no clock
    // restarts.
    let mut replay = config;
    replay.kafka.group_id = "cache-layer-replay".into();
    let replayer = RunningDaemon::spawn(replay);
    kafka
        .wait_committed("cache-layer-replay", 6, DEADLINE)
        .await;
    for (key, expected) in [
        ("windows:w_recent", now - 300 + TTL),
        ("windows:w_late", now - 500 + TTL),
        ("windows:index", now - 300 + TTL),
        ("trends:keyword:rust", now - 100 + TTL),
        ("trends:current", now - 100 + TTL),
        ("users:metrics", now - 200 + TTL),
    ] {
        assert_expires_at(&mut conn, key, expected);
    }
    replayer.stop().await;
}
