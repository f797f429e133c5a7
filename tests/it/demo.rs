//! `cache-layer demo` runs for a few seconds on its own and fills every category.

use std::time::Duration;

use cache_layer::config::{Config, RedisConfig};
use cache_layer_testkit::connect;
use cache_layer_testkit::demo::{self, DemoOptions};
use cache_layer_testkit::RedisServer;
use redis::Commands;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_fills_redis_with_every_category_and_stops_by_itself() {
    let redis = RedisServer::start().await.unwrap();
    let mut config = Config::from_toml("[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    config.redis = RedisConfig::from_url(&redis.url());
    let options = DemoOptions {
        duration: Some(Duration::from_secs(8)),
        rate: 1_000,
        // Eight compressed minutes: the windows end further ahead of the real clock than
        // the default batch.max_future_skew_secs, which the demo widens.
        window_secs: 1,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        demo::run(config, options, CancellationToken::new()),
    )
    .await
    .expect("the demo stops after its duration")
    .expect("the demo runs");

    assert!(report.produced >= 1_000, "{report:?}");
    assert!(report.daemon.acknowledged > 0, "{report:?}");
    assert!(
        report.daemon.rejected > 0,
        "a trickle of malformed messages: {report:?}"
    );
    assert!(
        report.daemon.rejected * 20 < report.daemon.consumed,
        "only the malformed trickle (1%) is rejected: {report:?}"
    );
    assert_eq!(report.daemon.rejected, report.daemon.dead_lettered);
    let mut conn = connect(&redis);
    assert!(conn.zcard::<_, usize>("trends:current").unwrap() > 0);
    assert!(conn.exists::<_, bool>("users:metrics").unwrap());
    assert!(conn.zcard::<_, usize>("users:active").unwrap() > 0);
    let windows: Vec<String> = conn.zrange("windows:index", 0, -1).unwrap();
    assert!(windows.len() >= 2, "windows move every second: {windows:?}");
    assert!(
        conn.hlen::<_, usize>(format!("windows:{}", windows[0]))
            .unwrap()
            > 0
    );
}
