//! What cache-layer's tests, demo and benchmark need, kept out of the production library.
//!
//! - [`redis_server`]: a throwaway `redis-server` on a free loopback port;
//!   [`certs`]: a test CA and certificates;
//!   [`cluster`]: a local Redis Cluster of such servers; [`sentinel`]: a master and a
//!   replica watched by three sentinels;
//! - [`apache`]: Apache Kafka, fetched with Maven, as a JVM process of its own;
//!   [`kafka`]: a test's topics and group on it (or on librdkafka's mock cluster, for
//!   its fault injection), a producer, a reader of topics and committed offsets, and a
//!   daemon runner;
//! - [`fixtures`]: upstream messages as JSON and as decoded models, built in one place;
//! - [`http`]: serving the API of a cache on loopback, and parsing `/metrics`;
//! - [`process`]: the `cache-layer` binary as a separate process, to stop or kill;
//! - [`generate`]: a realistic synthetic Bluesky-trend stream; [`state`]: whole Redis
//!   states, and the one a stream must leave behind;
//! - [`demo`]: everything on one machine, with a live summary.
//!
//! Every helper that waits is async and waits with a deadline; none blocks a runtime
//! thread.

pub mod allocations;
pub mod apache;
pub mod certs;
pub mod cluster;
pub mod demo;
pub mod fixtures;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod process;
pub mod redis_server;
pub mod sentinel;
pub mod state;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cache_layer::config::RedisConfig;
use cache_layer::CacheLayer;

pub use fixtures::{
    trend, trend_json, trend_records, user_metrics, window_count, window_json, window_records,
    TREND,
};
pub use redis_server::RedisServer;

/// A running redis-server and a library handle on it.
pub struct TestRedis {
    pub server: RedisServer,
    pub cache: CacheLayer,
}

impl TestRedis {
    pub async fn start() -> Self {
        Self::start_with_prefix("").await
    }

    pub async fn start_with_prefix(prefix: &str) -> Self {
        let server = RedisServer::start().await.expect("redis-server starts");
        let mut config = RedisConfig::from_url(&server.url());
        config.key_prefix = prefix.to_owned();
        let cache = CacheLayer::connect(&config).await.expect("connects");
        Self { server, cache }
    }

    /// A fresh synchronous connection, for asserting on raw Redis state.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.server)
    }

    /// Caches trend alerts given as (keyword, window end, rank), through the library.
    pub async fn cache_trends(&self, alerts: &[(&str, &str, i64)], ttl: Duration) {
        let alerts: Vec<_> = alerts
            .iter()
            .map(|(keyword, window_end, rank)| trend(keyword, window_end, *rank))
            .collect();
        self.cache
            .cache_current_trends(&alerts, ttl)
            .await
            .expect("trends cached");
    }
}

/// A plain synchronous connection to a test server, for asserting on raw Redis state:
/// each assertion is one quick round trip on loopback.
pub fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
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

/// A loopback port that was free a moment ago; 0 (any port) if none could be found.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A binary built beside the running one (`target/<profile>/<name>`), for tests and
/// tools that start another binary of the workspace; a test binary runs from `deps/`.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
