//! The CacheLayer's maintenance against a real redis-server: invalidating expired trends,
//! namespace-restricted clears, statistics, and surviving a Redis outage.

use std::time::Duration;

use cache_layer::CacheError;
use cache_layer_testkit::{trend, user_metrics, wait_until, window_count, TestRedis};
use redis::Commands;

const TTL: Duration = Duration::from_secs(300);

/// Caches the trends `kw0` to `kw{n-1}`, ranked in that order.
async fn cache_numbered_trends(redis: &TestRedis, n: i64) {
    let alerts: Vec<_> = (0..n)
        .map(|i| trend(&format!("kw{i}"), "2024-01-01T12:00:00Z", 1 + i))
        .collect();
    redis
        .cache
        .cache_current_trends(&alerts, TTL)
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_trends_leave_the_ranking_when_invalidated() {
    let redis = TestRedis::start().await;
    // The short-lived ones first: trends:current takes the TTL of the last write.
    redis
        .cache
        .cache_current_trends(
            &[
                trend("gone", "2024-01-01T12:00:00Z", 2),
                trend("also", "2024-01-01T12:00:00Z", 3),
            ],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    redis
        .cache_trends(&[("keep", "2024-01-01T12:00:00Z", 1)], TTL)
        .await;
    let mut conn = redis.conn();
    wait_until(Duration::from_secs(5), "the 1 s details to expire", || {
        let exists: bool = conn.exists("trends:keyword:gone").unwrap();
        async move { !exists }
    })
    .await;
    // Reads skip them already; invalidation removes them for good.
    assert_eq!(
        redis.cache.get_trending_keywords(10).await.unwrap().len(),
        1
    );
    assert_eq!(redis.cache.invalidate_expired_trends().await.unwrap(), 2);
    let members: Vec<String> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(members, ["keep"]);
    assert_eq!(redis.cache.invalidate_expired_trends().await.unwrap(), 0);
}

#[tokio::test]
async fn clear_deletes_exactly_its_matches_and_refuses_foreign_patterns() {
    let redis = TestRedis::start_with_prefix("bsky:").await;
    cache_numbered_trends(&redis, 250).await;
    let mut conn = redis.conn();
    let _: () = conn.set("other-app:trends:keyword:kw1", "theirs").unwrap();
    let _: () = conn
        .set("trends:keyword:kw1", "unprefixed, not ours")
        .unwrap();

    for foreign in ["*", "bsky:*", "trends:*", "bsky:trend*", "bsky:[t]rends:*"] {
        let err = redis.cache.clear_cache_pattern(foreign).await.unwrap_err();
        assert!(
            matches!(err, CacheError::ForeignPattern { .. }),
            "{foreign}: {err}"
        );
        assert!(err.to_string().contains("bsky:trends:"), "{err}");
    }
    let removed = redis
        .cache
        .clear_cache_pattern("bsky:trends:keyword:kw1*")
        .await
        .unwrap();
    assert_eq!(removed, 111, "kw1, kw10..kw19, kw100..kw199");
    let left: Vec<String> = conn.keys("bsky:trends:keyword:*").unwrap();
    assert_eq!(left.len(), 250 - 111);
    assert!(conn
        .exists::<_, bool>("other-app:trends:keyword:kw1")
        .unwrap());
    assert!(conn.exists::<_, bool>("trends:keyword:kw1").unwrap());
    assert!(conn.exists::<_, bool>("bsky:trends:current").unwrap());
}

#[tokio::test]
async fn stats_count_keys_per_category_and_read_info() {
    let redis = TestRedis::start().await;
    cache_numbered_trends(&redis, 3).await;
    redis
        .cache
        .cache_user_metrics(
            &user_metrics(&["did:plc:a"], "2024-01-01T12:00:00Z", 1),
            TTL,
        )
        .await
        .unwrap();
    redis
        .cache
        .cache_windowed_data(
            &[window_count("rust", 1, "2024-01-01T12:00:00Z")],
            "w1",
            TTL,
        )
        .await
        .unwrap();
    let _: () = redis.conn().set("unrelated", "1").unwrap();
    redis.cache.get_trend_details("kw0").await.unwrap(); // a hit
    redis.cache.get_trend_details("missing").await.unwrap(); // a miss

    let stats = redis.cache.get_cache_stats().await.unwrap();
    assert_eq!(
        stats.trends_keys,
        3 + 2,
        "three details, current, last_update"
    );
    assert_eq!(stats.users_keys, 3, "metrics, active, last_update");
    assert_eq!(stats.windows_keys, 2, "the window hash and the index");
    assert_eq!(stats.total_keys, 11);
    assert!(stats.server.used_memory > 0);
    assert!(!stats.server.used_memory_human.is_empty());
    assert!(stats.server.connected_clients >= 1);
    assert!(stats.server.keyspace_hits >= 1 && stats.server.keyspace_misses >= 1);
    assert!(stats.server.hit_ratio > 0.0 && stats.server.hit_ratio < 1.0);
}

#[tokio::test]
async fn a_redis_outage_is_a_retryable_error_and_a_restart_is_survived() {
    let mut redis = TestRedis::start().await;
    redis.cache.health_check().await.unwrap();
    redis.server.stop();
    let err = redis.cache.health_check().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let err = redis
        .cache
        .cache_current_trends(&[trend("rust", "2024-01-01T12:00:00Z", 1)], TTL)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // The restarted server is empty, scripts included: the write reloads them.
    redis.server.restart().await.unwrap();
    let cache = redis.cache.clone();
    wait_until(
        Duration::from_secs(10),
        "the connection to come back",
        || {
            let cache = cache.clone();
            async move { cache.health_check().await.is_ok() }
        },
    )
    .await;
    redis
        .cache
        .cache_current_trends(&[trend("rust", "2024-01-01T12:00:00Z", 1)], TTL)
        .await
        .unwrap();
    let details = redis.cache.get_trend_details("rust").await.unwrap();
    assert!(details.is_some());
}

#[tokio::test]
async fn keys_and_members_that_are_not_utf8_do_not_break_stats_sweeps_or_clears() {
    let redis = TestRedis::start().await;
    cache_numbered_trends(&redis, 2).await;
    let mut conn = redis.conn();
    // Another client's bytes: a key without a TTL, and a ranking member without details.
    let foreign_key: &[u8] = b"trends:keyword:\xff\xfe";
    let _: () = conn.set(foreign_key, "theirs").unwrap();
    let _: () = conn
        .zadd("trends:current", b"\xff\xfd".as_slice(), 1)
        .unwrap();

    let stats = redis.cache.get_cache_stats().await.unwrap();
    assert_eq!(
        stats.trends_keys,
        2 + 2 + 1,
        "two trends, two fixed keys, the foreign key"
    );
    let report = redis.cache.sweep(Duration::from_secs(900)).await.unwrap();
    assert_eq!((report.trends_removed, report.trends_without_ttl), (1, 1));
    assert!(!conn.exists::<_, bool>(foreign_key).unwrap());
    let members: Vec<Vec<u8>> = conn.zrange("trends:current", 0, -1).unwrap();
    assert_eq!(members, [b"kw0".to_vec(), b"kw1".to_vec()]);

    let _: () = conn.set(foreign_key, "again").unwrap();
    let cleared = redis.cache.clear_cache_pattern("trends:keyword:*").await;
    assert_eq!(cleared.unwrap(), 3, "two trends and the foreign key");
}
