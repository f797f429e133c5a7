//! Sweeps and statistics rounds against a real redis-server with short TTLs: stale index
//! members and keys without a TTL are removed and counted, the lock lets one instance
//! sweep per interval, and an outage skips rounds without killing the loop.

use std::sync::Arc;
use std::time::Duration;

use cache_layer::background::{self, sweep_once, SweepOutcome};
use cache_layer::cache::{lock_token, SweepReport};
use cache_layer::config::Config;
use cache_layer::status::Status;
use cache_layer_testkit::{connect, trend, user_metrics, wait_until, window_count, TestRedis};
use chrono::Utc;
use redis::Commands;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(60);

/// One sweep by this test's single instance (one lock token per test).
async fn swept(redis: &TestRedis) -> SweepReport {
    match sweep_once(
        &redis.cache,
        WINDOW,
        Duration::from_secs(5),
        "the-only-instance",
    )
    .await
    .unwrap()
    {
        SweepOutcome::Swept(report) => report,
        SweepOutcome::Skipped => panic!("nobody else holds the lock"),
    }
}

#[tokio::test]
async fn stale_index_members_are_removed_and_counted() {
    let redis = TestRedis::start().await;
    // Short-lived data first; the long write after it keeps each index alive.
    let doomed = [
        ("old1", "2024-01-01T12:00:00Z", 2),
        ("old2", "2024-01-01T12:00:00Z", 3),
    ];
    redis.cache_trends(&doomed, SHORT).await;
    redis
        .cache_trends(&[("fresh", "2024-01-01T12:00:00Z", 1)], LONG)
        .await;
    let counts = [window_count("rust", 1, "2024-01-01T12:00:00Z")];
    redis
        .cache
        .cache_windowed_data(&counts, "w_old", SHORT)
        .await
        .unwrap();
    redis
        .cache
        .cache_windowed_data(&counts, "w_new", LONG)
        .await
        .unwrap();
    let long_ago = (Utc::now() - chrono::Duration::seconds(3_600)).to_rfc3339();
    redis
        .cache
        .cache_user_metrics(&user_metrics(&["did:plc:gone"], &long_ago, 1), LONG)
        .await
        .unwrap();
    let now = Utc::now().to_rfc3339();
    redis
        .cache
        .cache_user_metrics(&user_metrics(&["did:plc:here"], &now, 1), LONG)
        .await
        .unwrap();

    let mut conn = connect(&redis.server);
    wait_until(Duration::from_secs(5), "the short TTLs to run out", || {
        let gone = !conn.exists::<_, bool>("trends:keyword:old1").unwrap()
            && !conn.exists::<_, bool>("windows:w_old").unwrap();
        async move { gone }
    })
    .await;
    let report = swept(&redis).await;
    assert_eq!(
        (
            report.trends_removed,
            report.windows_removed,
            report.users_removed
        ),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        conn.zrange::<_, Vec<String>>("trends:current", 0, -1)
            .unwrap(),
        ["fresh"]
    );
    assert_eq!(
        conn.zrange::<_, Vec<String>>("windows:index", 0, -1)
            .unwrap(),
        ["w_new"]
    );
    let mut active: Vec<String> = conn.zrange("users:active", 0, -1).unwrap();
    active.sort();
    assert_eq!(
        active,
        ["did:plc:here", "did:plc:top"],
        "did:plc:top was seen now too"
    );
    assert_eq!(
        swept(&redis).await,
        SweepReport::default(),
        "a second sweep finds nothing"
    );
}

#[tokio::test]
async fn keys_without_a_ttl_are_found_deleted_and_counted_as_anomalies() {
    let redis = TestRedis::start_with_prefix("p:").await;
    redis
        .cache
        .cache_current_trends(&[trend("kept", "2024-01-01T12:00:00Z", 1)], LONG)
        .await
        .unwrap();
    let mut conn = connect(&redis.server);
    let _: () = conn.set("p:trends:keyword:rogue", "{}").unwrap();
    let _: () = conn.hset("p:windows:w_rogue", "k", "v").unwrap();
    let _: () = conn.set("p:users:metrics", "{}").unwrap();
    let _: () = conn.set("not-ours", "no TTL, not ours").unwrap();

    let report = swept(&redis).await;
    assert_eq!(
        (
            report.trends_without_ttl,
            report.users_without_ttl,
            report.windows_without_ttl
        ),
        (1, 1, 1)
    );
    for key in [
        "p:trends:keyword:rogue",
        "p:windows:w_rogue",
        "p:users:metrics",
    ] {
        assert!(!conn.exists::<_, bool>(key).unwrap(), "{key} deleted");
    }
    assert!(
        conn.exists::<_, bool>("not-ours").unwrap(),
        "outside the namespaces: untouched"
    );
    assert!(
        conn.exists::<_, bool>("p:trends:keyword:kept").unwrap(),
        "keys with a TTL stay"
    );
    assert!(
        conn.ttl::<_, i64>("p:locks:sweep").unwrap() > 0,
        "the lock itself expires"
    );
}

#[tokio::test]
async fn two_instances_sweep_once_per_interval() {
    let redis = TestRedis::start().await;
    let (a, b) = (lock_token(), lock_token());
    let interval = Duration::from_secs(2);
    let round = |token: String| {
        let cache = redis.cache.clone();
        async move { sweep_once(&cache, WINDOW, interval, &token).await.unwrap() }
    };
    assert!(matches!(round(a.clone()).await, SweepOutcome::Swept(_)));
    assert_eq!(round(b.clone()).await, SweepOutcome::Skipped);
    assert!(
        matches!(round(a.clone()).await, SweepOutcome::Swept(_)),
        "the owner renews"
    );
    assert_eq!(round(b.clone()).await, SweepOutcome::Skipped);

    // Only the owner's token releases the lock; then the other instance takes over.
    let stolen = redis
        .cache
        .try_lock(background::SWEEP_LOCK, interval, &b)
        .await
        .unwrap();
    assert!(stolen.is_none());
    let held = redis
        .cache
        .try_lock(background::SWEEP_LOCK, interval, &a)
        .await
        .unwrap()
        .unwrap();
    assert!(redis.cache.unlock(&held).await.unwrap());
    assert!(matches!(round(b.clone()).await, SweepOutcome::Swept(_)));
    assert_eq!(round(a).await, SweepOutcome::Skipped);
}

#[tokio::test]
async fn an_outage_skips_rounds_and_never_kills_the_background_task() {
    let mut redis = TestRedis::start().await;
    let config =
        Config::from_toml("[stats]\ninterval_secs = 1\n[sweep]\ninterval_secs = 1\n").unwrap();
    let status = Arc::new(Status::default());
    let shutdown = CancellationToken::new();
    let (_settings, updates) = tokio::sync::watch::channel(Arc::new(config));
    let task = tokio::spawn(background::run(
        redis.cache.clone(),
        updates,
        Arc::clone(&status),
        cache_layer::metrics::install(),
        shutdown.clone(),
    ));
    wait_until(Duration::from_secs(10), "a first stats round", || async {
        status.redis_ok()
    })
    .await;
    redis.server.stop();
    wait_until(Duration::from_secs(10), "a failed round", || async {
        !status.redis_ok()
    })
    .await;
    redis.server.restart().await.unwrap();
    wait_until(
        Duration::from_secs(15),
        "rounds to succeed again",
        || async { status.redis_ok() },
    )
    .await;
    assert!(!task.is_finished());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}
