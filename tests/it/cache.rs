//! The CacheLayer library against a real redis-server: every write and read, the TTLs,
//! the ranking, replay safety, normalisation, clears, stats and outages.

use std::time::Duration;

use cache_layer::cache::WriteSet;
use cache_layer::config::Ttls;
use cache_layer::models::TrendAlert;
use cache_layer::schema::trend_score;
use cache_layer::CacheError;
use cache_layer_testkit::state::{assert_every_key_expires, snapshot};
use cache_layer_testkit::{trend, user_metrics, wait_until, window_count, TestRedis};
use chrono::Utc;
use redis::Commands;

const TTL: Duration = Duration::from_secs(300);

#[tokio::test]
async fn trends_are_cached_with_details_ranking_and_ttls() {
    let redis = TestRedis::start().await;
    let alerts = [
        ("Rust", "2024-01-01T12:00:00Z", 1),
        ("Go", "2024-01-01T12:01:00Z", 2),
        ("Zig", "2024-01-01T12:01:00Z", 1),
        ("Java", "2024-01-01T11:59:00Z", 1),
    ];
    redis.cache_trends(&alerts, TTL).await;

    let mut conn = redis.conn();
    let ranking: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(
        ranking,
        ["zig", "go", "rust", "java"],
        "newest window first, then rank"
    );
    let listed: Vec<String> = redis
        .cache
        .get_trending_keywords(3)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.keyword)
        .collect();
    assert_eq!(listed, ["zig", "go", "rust"]);

    let details = redis.cache.get_trend_details("GO").await.unwrap().unwrap();
    let (keyword, window_end, rank) = alerts[1];
    assert_eq!(details, trend(keyword, window_end, rank));
    let raw: String = conn.get("trends:keyword:go").unwrap();
    let stored: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["window_end"], "2024-01-01T12:01:00.000000Z");
    let last_update: String = conn.get("trends:last_update").unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&last_update).is_ok(),
        "{last_update}"
    );
    assert_every_key_expires(&mut conn, TTL);
    assert_eq!(redis.cache.get_trend_details("absent").await.unwrap(), None);
}

#[tokio::test]
async fn writing_the_same_messages_twice_leaves_redis_as_it_was() {
    let redis = TestRedis::start().await;
    let alerts = [
        trend("rust", "2024-01-01T12:00:00Z", 1),
        trend("go", "2024-01-01T12:00:00Z", 2),
    ];
    let mut set = WriteSet::new();
    alerts.iter().cloned().for_each(|a| set.add_trend(a));
    set.add_user_metrics(
        user_metrics(&["did:plc:a"], "2024-01-01T12:00:00Z", 5),
        Utc::now(),
    );
    set.add_window_count(window_count("rust", 5, "2024-01-01T12:00:00Z"));
    let now = Utc::now();

    redis
        .cache
        .write(&set, &Ttls::uniform(Duration::from_secs(300)), now)
        .await
        .unwrap();
    let mut conn = redis.conn();
    let first = snapshot(&mut conn);
    redis
        .cache
        .write(&set, &Ttls::uniform(Duration::from_secs(300)), now)
        .await
        .unwrap();
    assert_eq!(snapshot(&mut conn), first);
}

/// Caches one alert on its own, as one message of its own batch.
async fn cache_one(redis: &TestRedis, alert: &TrendAlert) {
    redis
        .cache
        .cache_current_trends(std::slice::from_ref(alert), TTL)
        .await
        .unwrap();
}

/// Asserts that the detail key holds `alert` and the ranking places its keyword by it.
async fn assert_holds(redis: &TestRedis, alert: &TrendAlert) {
    let keyword = alert.normalized_keyword();
    let details = redis.cache.get_trend_details(&keyword).await.unwrap();
    assert_eq!(details.as_ref(), Some(alert));
    let score: f64 = redis.conn().zscore("trends:current", &keyword).unwrap();
    assert_eq!(score, trend_score(&alert.window_end, alert.rank));
}

#[tokio::test]
async fn an_older_trend_never_overwrites_a_newer_one_nor_moves_it() {
    let redis = TestRedis::start().await;
    let newer = trend("rust", "2024-01-01T12:05:00Z", 3);
    cache_one(&redis, &newer).await;
    cache_one(&redis, &trend("rust", "2024-01-01T12:00:00Z", 1)).await;
    assert_holds(&redis, &newer).await;

    // The same window with a new rank is a correction, and wins.
    let corrected = trend("rust", "2024-01-01T12:05:00Z", 7);
    cache_one(&redis, &corrected).await;
    assert_holds(&redis, &corrected).await;
}

#[tokio::test]
async fn alerts_within_one_second_leave_details_and_ranking_agreeing() {
    let redis = TestRedis::start().await;
    cache_one(&redis, &trend("rust", "2024-01-01T12:00:00.900Z", 1)).await;
    // Earlier within the same second: the ranking cannot tell them apart, so neither
    // may the details. The later write wins in both.
    let later = trend("rust", "2024-01-01T12:00:00.100Z", 7);
    cache_one(&redis, &later).await;
    assert_holds(&redis, &later).await;
}

/// A batch's trend details are written by one script call: a key of another writer in
/// the middle of them is the only one refused, an older alert still loses to a newer one
/// stored, and every other key is written with its TTL.
#[tokio::test]
async fn one_foreign_key_among_a_batch_of_trends_refuses_only_its_own_write() {
    let redis = TestRedis::start().await;
    let mut conn = redis.conn();
    let _: () = conn
        .hset("trends:keyword:k5", "owner", "another-app")
        .unwrap();
    let newer = trend("k1", "2024-01-01T12:05:00Z", 1);
    cache_one(&redis, &newer).await;

    let alerts: Vec<TrendAlert> = (0..10)
        .map(|i| trend(&format!("k{i}"), "2024-01-01T12:00:00Z", i + 1))
        .collect();
    let refused = match redis.cache.cache_current_trends(&alerts, TTL).await {
        Err(CacheError::Refused(refused)) => refused,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].key, b"trends:keyword:k5");
    assert!(refused[0].error.starts_with("WRONGTYPE"), "{refused:?}");

    let owner: String = conn.hget("trends:keyword:k5", "owner").unwrap();
    assert_eq!(owner, "another-app", "the foreign key is left alone");
    assert_holds(&redis, &newer).await;
    for alert in alerts
        .iter()
        .filter(|a| !["k1", "k5"].contains(&a.keyword.as_str()))
    {
        let details = redis.cache.get_trend_details(&alert.keyword).await.unwrap();
        assert_eq!(details.as_ref(), Some(alert));
        let ttl: i64 = conn
            .ttl(format!("trends:keyword:{}", alert.keyword))
            .unwrap();
        assert!(
            ttl > 0 && ttl <= TTL.as_secs() as i64,
            "{}: {ttl}",
            alert.keyword
        );
    }
}

#[tokio::test]
async fn keywords_are_normalised_and_glob_characters_stay_data() {
    let redis = TestRedis::start().await;
    for spelling in ["Python", " python ", "PYTHON"] {
        redis
            .cache
            .cache_current_trends(&[trend(spelling, "2024-01-01T12:00:00Z", 1)], TTL)
            .await
            .unwrap();
    }
    let odd = ["K8s*", "k8sx", "東京", "🚀 Launch", "#RustLang", "a:b?[c]"];
    redis
        .cache_trends(&odd.map(|k| (k, "2024-01-01T12:00:00Z", 2)), TTL)
        .await;

    let mut conn = redis.conn();
    let mut members: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    members.sort();
    let mut expected = vec![
        "python",
        "k8s*",
        "k8sx",
        "東京",
        "🚀 launch",
        "#rustlang",
        "a:b?[c]",
    ];
    expected.sort();
    assert_eq!(members, expected);
    assert!(conn.exists::<_, bool>("trends:keyword:🚀 launch").unwrap());
    assert_eq!(
        redis
            .cache
            .get_trend_details("k8S*")
            .await
            .unwrap()
            .unwrap()
            .keyword,
        "K8s*"
    );
    assert_eq!(
        redis
            .cache
            .get_trend_details("  東京 ")
            .await
            .unwrap()
            .unwrap()
            .keyword,
        "東京"
    );

    // A glob character in a keyword is escaped by whoever clears it, and matches itself only.
    let removed = redis
        .cache
        .clear_cache_pattern("trends:keyword:k8s\\*")
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(conn.exists::<_, bool>("trends:keyword:k8sx").unwrap());
}

#[tokio::test]
async fn user_metrics_and_active_users_are_cached_and_never_rolled_back() {
    let redis = TestRedis::start().await;
    let now = Utc::now();
    let recent = (now - chrono::Duration::seconds(10)).to_rfc3339();
    let newer = user_metrics(&["did:plc:a", "did:plc:b"], &recent, 42);
    redis.cache.cache_user_metrics(&newer, TTL).await.unwrap();
    let older = user_metrics(&["did:plc:a"], "2024-01-01T00:00:00Z", 7);
    redis.cache.cache_user_metrics(&older, TTL).await.unwrap();

    assert_eq!(
        redis.cache.get_user_metrics().await.unwrap().unwrap(),
        newer
    );
    let mut conn = redis.conn();
    let seen_a: f64 = conn.zscore("users:active", "did:plc:a").unwrap();
    assert_eq!(
        seen_a as i64,
        newer.timestamp.unwrap().timestamp(),
        "GT keeps the later sighting"
    );

    let active = redis.cache.get_active_users(10).await.unwrap();
    let mut ids: Vec<_> = active.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["did:plc:a", "did:plc:b", "did:plc:top"]);
    assert_eq!(redis.cache.get_active_users(1).await.unwrap().len(), 1);
    assert_every_key_expires(&mut conn, TTL);
}

#[tokio::test]
async fn users_outside_the_active_window_are_not_listed() {
    let redis = TestRedis::start().await;
    let cache = redis
        .cache
        .clone()
        .with_active_user_window(Duration::from_secs(60));
    let stale = (Utc::now() - chrono::Duration::seconds(600)).to_rfc3339();
    cache
        .cache_user_metrics(&user_metrics(&["did:plc:old"], &stale, 1), TTL)
        .await
        .unwrap();
    assert!(cache.get_active_users(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn windowed_counts_are_cached_listed_and_expire() {
    let redis = TestRedis::start().await;
    let counts = [
        window_count("Rust", 5, "2024-01-01T12:00:00Z"),
        window_count("rust", 9, "2024-01-01T12:00:00Z"),
        window_count("Go", 7, "2024-01-01T12:00:00Z"),
    ];
    // The short-lived window first: the index takes the TTL of the last write.
    redis
        .cache
        .cache_windowed_data(
            &[window_count("zig", 1, "2024-01-01T12:01:00Z")],
            "window_2024_01_01_12_01",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    redis
        .cache
        .cache_windowed_data(&counts, "window_2024_01_01_12_00", TTL)
        .await
        .unwrap();

    let entries = redis
        .cache
        .get_windowed_data("window_2024_01_01_12_00")
        .await
        .unwrap()
        .unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.keyword.as_str(), e.count))
        .collect();
    assert_eq!(
        summary,
        [("rust", 9), ("Go", 7)],
        "one field per normalised keyword, last wins"
    );
    let mut conn = redis.conn();
    let fields: Vec<String> = conn.hkeys("windows:window_2024_01_01_12_00").unwrap();
    assert_eq!(fields.len(), 2);
    let ttl: i64 = conn.ttl("windows:window_2024_01_01_12_00").unwrap();
    assert!(ttl > 250 && ttl <= 300, "{ttl}");

    let ids: Vec<_> = redis
        .cache
        .list_windows(10)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.window_id)
        .collect();
    assert_eq!(ids, ["window_2024_01_01_12_01", "window_2024_01_01_12_00"]);

    // Once the newer window's hash expires, reads skip its index member.
    wait_until(
        Duration::from_secs(5),
        "the 1 s window to expire",
        || async {
            redis
                .cache
                .get_windowed_data("window_2024_01_01_12_01")
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    let ids: Vec<_> = redis
        .cache
        .list_windows(10)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.window_id)
        .collect();
    assert_eq!(ids, ["window_2024_01_01_12_00"]);
    let members: Vec<String> = conn.zrange("windows:index", 0, -1).unwrap();
    assert_eq!(members.len(), 2, "the stale member is left for the sweep");
}

#[tokio::test]
async fn a_bad_window_id_or_zero_ttl_is_refused_before_redis() {
    let redis = TestRedis::start().await;
    let counts = [window_count("rust", 1, "2024-01-01T12:00:00Z")];
    let err = redis
        .cache
        .cache_windowed_data(&counts, "a*b", TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidValue(_)), "{err}");
    let err = redis
        .cache
        .cache_windowed_data(&counts, "w1", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TTL"), "{err}");
    assert!(redis.conn().keys::<_, Vec<String>>("*").unwrap().is_empty());
}
