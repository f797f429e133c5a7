//! The cache converges to what Kafka holds whatever a neighbour does: here, an upstream
//! clock in the future. One alert dated 2150 must neither shadow the correct alerts of
//! its keyword nor sit at the top of the ranking: it is refused at the door, and a value
//! stored before that check existed is skipped by readers and replaced by the next write.

use std::time::Duration;

use cache_layer::metrics::MESSAGES_REJECTED;
use cache_layer::models::TrendAlert;
use cache_layer::pipeline::dead_letter::{HEADER_DETAIL, HEADER_REASON};
use cache_layer_testkit::fixtures::trend_alert_json;
use cache_layer_testkit::http::{get, parse_metrics, value};
use cache_layer_testkit::kafka::{daemon_config, record, RunningDaemon, TestKafka};
use cache_layer_testkit::{connect, trend, RedisServer, TestRedis};
use chrono::{SecondsFormat, Utc};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);
const FAR_FUTURE: &str = "2150-01-01T00:00:00Z";

/// Five seconds ago, as upstream writes a `window_end`.
fn just_now() -> String {
    (Utc::now() - chrono::TimeDelta::seconds(5)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn stored_alert(conn: &mut redis::Connection, keyword: &str) -> TrendAlert {
    let json: String = conn.get(format!("trends:keyword:{keyword}")).unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_from_a_clock_in_the_future_is_refused_and_pins_nothing() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let now = just_now();
    let alerts = [
        ("skewed", trend_alert_json("skewed", FAR_FUTURE, 1)),
        ("skewed", trend_alert_json("skewed", &now, 2)),
        ("honest", trend_alert_json("honest", &now, 1)),
        ("honest2", trend_alert_json("honest2", &now, 3)),
    ];
    kafka.produce(&kafka.trends, &alerts).await;
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka.wait_committed(&kafka.group, 4, DEADLINE).await;

    let mut conn = connect(&redis);
    let skewed = stored_alert(&mut conn, "skewed");
    assert_eq!(skewed.rank, 2, "the correct alert is the one stored");
    assert_eq!(
        skewed.window_end.to_rfc3339_opts(SecondsFormat::Secs, true),
        now
    );
    let ranking: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(ranking, ["honest", "skewed", "honest2"]);

    let dead = kafka.read(&kafka.dead_letter, 1).await;
    let refused = record(&dead, "skewed");
    assert_eq!(refused.headers[HEADER_REASON], "future_timestamp");
    assert!(
        refused.headers[HEADER_DETAIL].contains("2150-01-01T00:00:00"),
        "{:?}",
        refused.headers
    );
    let (_, text) = get(daemon.status.http_addr().unwrap(), "/metrics")
        .await
        .unwrap();
    let (samples, _) = parse_metrics(&text);
    assert_eq!(
        value(
            &samples,
            MESSAGES_REJECTED,
            &[
                ("topic", kafka.trends.as_str()),
                ("reason", "future_timestamp")
            ]
        ),
        1.0
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_value_stored_from_a_future_clock_is_skipped_by_readers_and_replaced() {
    let redis = TestRedis::start().await;
    let ttl = Duration::from_secs(60);
    // Written as a version without the check did: any time up to 2200 believed.
    let unchecked = redis
        .cache
        .clone()
        .with_max_future_skew(Duration::from_secs(200 * 365 * 86_400));
    unchecked
        .cache_current_trends(&[trend("pinned", FAR_FUTURE, 1)], ttl)
        .await
        .unwrap();
    let now = just_now();
    redis
        .cache_trends(&[("honest", now.as_str(), 1)], ttl)
        .await;

    let ranked: Vec<String> = (redis.cache.get_trending_keywords(10).await.unwrap())
        .into_iter()
        .map(|e| e.keyword)
        .collect();
    assert_eq!(ranked, ["honest"], "the pinned alert is not served");

    // The next correct alert of the keyword replaces it, detail and ranking alike.
    redis
        .cache_trends(&[("pinned", now.as_str(), 2)], ttl)
        .await;
    let ranked: Vec<(String, i64)> = (redis.cache.get_trending_keywords(10).await.unwrap())
        .into_iter()
        .map(|e| (e.keyword, e.alert.rank))
        .collect();
    assert_eq!(ranked, [("honest".into(), 1), ("pinned".into(), 2)]);
    let mut conn = redis.conn();
    assert_eq!(stored_alert(&mut conn, "pinned").rank, 2);
    let ttl_left: i64 = conn.ttl("trends:keyword:pinned").unwrap();
    assert!(ttl_left > 0 && ttl_left <= 60);
}
