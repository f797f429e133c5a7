//! Helpers shared by the integration tests: a real redis-server per test, a connected
//! `CacheLayer`, message builders and a wait-until-condition with a deadline.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::time::{Duration, Instant};

use cache_layer::config::{RedisConfig, Ttls};
use cache_layer::models::{
    decode, Message, MessageKind, TrendAlert, UserMetrics, WindowedKeywordCount,
};
use cache_layer::redis_server::RedisServer;
use cache_layer::CacheLayer;

pub mod cluster;
pub mod deploy;
pub mod http;
pub mod kafka;

/// A running redis-server, a library handle on it and a plain connection for assertions.
pub struct TestRedis {
    pub server: RedisServer,
    pub cache: CacheLayer,
}

impl TestRedis {
    pub async fn start() -> Self {
        Self::start_with_prefix("").await
    }

    pub async fn start_with_prefix(prefix: &str) -> Self {
        let server = RedisServer::start().expect("redis-server starts");
        let mut config = RedisConfig::from_url(&server.url());
        config.key_prefix = prefix.to_owned();
        let cache = CacheLayer::connect(&config).await.expect("connects");
        Self { server, cache }
    }

    /// A fresh synchronous connection, for asserting on raw Redis state.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.server)
    }
}

pub fn ttls(secs: u64) -> Ttls {
    let ttl = Duration::from_secs(secs);
    Ttls {
        trends: ttl,
        users: ttl,
        windows: ttl,
    }
}

pub fn trend(keyword: &str, window_end: &str, rank: i64) -> TrendAlert {
    let json = format!(
        r#"{{"keyword":{keyword:?},"frequency":50,"growth_rate":3.5,"confidence_score":0.8,
        "window_start":"2024-01-01T00:00:00Z","window_end":"{window_end}",
        "sample_posts":["look at this"],"unique_authors":12,"rank":{rank}}}"#
    );
    match decode(MessageKind::Trends, json.as_bytes()).expect("valid trend") {
        Message::Trends(mut alerts) => alerts.remove(0),
        other => panic!("{other:?}"),
    }
}

pub fn window_count(keyword: &str, count: i64, window_start: &str) -> WindowedKeywordCount {
    let json = format!(
        r#"{{"keyword":{keyword:?},"count":{count},"unique_authors":1,
        "window_start":"{window_start}","window_end":"{window_start}"}}"#
    );
    match decode(MessageKind::Windows, json.as_bytes()).expect("valid count") {
        Message::Windows(mut counts) => counts.remove(0),
        other => panic!("{other:?}"),
    }
}

pub fn user_metrics(users: &[&str], timestamp: &str, total: i64) -> UserMetrics {
    let json = format!(
        r#"{{"total_active_users":{total},"posts_per_minute":4.5,
        "top_contributors":[{{"user_id":"did:plc:top","post_count":9}}],
        "active_users":{users:?},"timestamp":"{timestamp}"}}"#
    );
    match decode(MessageKind::UserMetrics, json.as_bytes()).expect("valid metrics") {
        Message::UserMetrics(mut all) => all.remove(0),
        other => panic!("{other:?}"),
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A plain synchronous connection to a test server, for asserting on raw Redis state.
pub fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A `TrendAlert` as upstream publishes it, in the window 12:`minute` to the next minute.
pub fn trend_json(keyword: &str, minute: u32, rank: i64, frequency: i64) -> String {
    format!(
        r#"{{"keyword":"{keyword}","frequency":{frequency},"growth_rate":1.5,"confidence_score":0.75,
        "window_start":"2024-01-01T12:{minute:02}:00Z","window_end":"2024-01-01T12:{:02}:00Z",
        "sample_posts":["a post about {keyword}"],"unique_authors":1,"rank":{rank}}}"#,
        minute + 1
    )
}

/// A `WindowedKeywordCount` as upstream publishes it, in the window 12:`minute`.
pub fn window_json(keyword: &str, count: i64, minute: u32) -> String {
    format!(
        r#"{{"keyword":"{keyword}","count":{count},"unique_authors":1,
        "window_start":"2024-01-01T12:{minute:02}:00Z","window_end":"2024-01-01T12:{:02}:00Z"}}"#,
        minute + 1
    )
}

/// `n` window counts for distinct keywords in window 12:00, keyed by keyword; the count
/// of the i-th is i + 1.
pub fn window_records(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                window_json(&format!("{prefix}{i}"), i as i64 + 1, 0),
            )
        })
        .collect()
}
