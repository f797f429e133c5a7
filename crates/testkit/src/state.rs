//! Whole Redis states: a snapshot of every key, the state a stream must leave behind,
//! and the TTL invariant. The fault tests compare a daemon's final state with the one
//! the library writes for the same stream in one go.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::time::Duration;

use cache_layer::cache::{CacheLayer, WriteSet};
use cache_layer::config::{RedisConfig, Ttls};
use cache_layer::models::decode;
use chrono::Utc;
use redis::Commands;

use crate::generate::Generated;
use crate::kafka::{Broker, TestKafka};
use crate::{connect, fixtures, RedisServer};

/// Every key with its TYPE and raw content, for comparing whole states.
pub fn snapshot(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = conn.keys("*").unwrap();
    keys.into_iter()
        .filter_map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
            let content = match kind.as_str() {
                "string" => conn.get::<_, String>(&key).unwrap(),
                "zset" => format!(
                    "{:?}",
                    conn.zrange_withscores::<_, Vec<(String, f64)>>(&key, 0, -1)
                        .unwrap()
                ),
                "hash" => format!(
                    "{:?}",
                    conn.hgetall::<_, BTreeMap<String, String>>(&key).unwrap()
                ),
                // Deleted since KEYS listed it.
                "none" => return None,
                other => panic!("unexpected type {other} of {key}"),
            };
            Some((key, format!("{kind}:{content}")))
        })
        .collect()
}

/// A snapshot of the cache's data: without the values that record when a write happened
/// (`*:last_update`), which no two runs share (their keys stay), and without the daemon's
/// bookkeeping outside the data namespaces (the group's marker, the rebuild requests).
pub fn data_snapshot(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let mut state = snapshot(conn);
    state.retain(|key, _| !key.starts_with("markers:") && !key.starts_with("rebuild:"));
    for (key, value) in state.iter_mut() {
        if key.ends_with(":last_update") {
            *value = "string:<time of the write>".into();
        }
    }
    state
}

/// What Redis must hold after the valid messages of `stream`: written by the library in
/// one go, in stream order, into a throwaway server.
pub async fn expected_state(stream: &[Generated]) -> BTreeMap<String, String> {
    let server = RedisServer::start().await.expect("redis-server starts");
    let cache = CacheLayer::connect(&RedisConfig::from_url(&server.url()))
        .await
        .expect("connects");
    let now = Utc::now();
    let mut set = WriteSet::new();
    for message in stream {
        if let Ok(decoded) = decode(message.kind, message.payload.as_bytes()) {
            set.add_message(decoded, now);
        }
    }
    let report = cache
        .write(&set, &Ttls::uniform(Duration::from_secs(300)), now)
        .await
        .expect("written");
    assert!(report.refused.is_empty(), "{report:?}");
    data_snapshot(&mut connect(&server))
}

/// Asserts that every key carries a TTL, no longer than `max` for the cache's data (a
/// rebuild request lives as long as the replay it asks for).
pub fn assert_every_key_expires(conn: &mut redis::Connection, max: Duration) {
    let keys: Vec<String> = conn.keys("*").unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = conn.ttl(&key).unwrap();
        let max = if key.starts_with("rebuild:") {
            i64::MAX
        } else {
            max.as_secs() as i64
        };
        // -2: deleted since KEYS listed it.
        assert!(ttl == -2 || (ttl > 0 && ttl <= max), "{key} has TTL {ttl}");
    }
}

/// What a fault test starts from: a broker (Apache Kafka unless said otherwise), a
/// Redis, a valid stream of every kind, and the state that stream must leave behind.
pub struct Scenario<K = TestKafka> {
    pub kafka: K,
    pub redis: RedisServer,
    pub stream: Vec<Generated>,
    expected: BTreeMap<String, String>,
}

impl Scenario {
    /// `messages` records over `partitions` partitions per topic of Apache Kafka (the
    /// shared broker when there is one), 600 to a window.
    pub async fn start(partitions: i32, messages: usize, seed: u64) -> Self {
        Self::start_on(TestKafka::start(partitions).await, messages, seed).await
    }
}

impl<K: Deref<Target = Broker>> Scenario<K> {
    /// `messages` records for the source topics of `kafka`, 600 to a window.
    pub async fn start_on(kafka: K, messages: usize, seed: u64) -> Self {
        Self::with_stream(kafka, fixtures::stream(messages, 600, seed)).await
    }

    /// This valid stream for the source topics of `kafka`.
    pub async fn with_stream(kafka: K, stream: Vec<Generated>) -> Self {
        Self {
            kafka,
            redis: RedisServer::start().await.expect("redis-server starts"),
            expected: expected_state(&stream).await,
            stream,
        }
    }

    /// Waits until the test group committed the whole stream, then asserts that Redis
    /// holds exactly the expected state, every key with a TTL.
    pub async fn assert_landed(&self, timeout: Duration) {
        self.kafka
            .wait_committed(&self.kafka.group, self.stream.len() as i64, timeout)
            .await;
        let mut conn = connect(&self.redis);
        assert_same_state(&data_snapshot(&mut conn), &self.expected);
        assert_every_key_expires(&mut conn, Duration::from_secs(300));
    }
}

impl<K> Scenario<K> {
    /// Waits until Redis holds exactly the expected state, as after it lost its data and
    /// the daemon rebuilt it from Kafka, or when no commit count tells that the stream
    /// landed (a log with offsets that hold no message); then asserts it, every key with
    /// a TTL.
    pub async fn assert_converged(&self, timeout: Duration) {
        let mut conn = connect(&self.redis);
        let deadline = std::time::Instant::now() + timeout;
        while data_snapshot(&mut conn) != self.expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_same_state(&data_snapshot(&mut conn), &self.expected);
        assert_every_key_expires(&mut conn, Duration::from_secs(300));
    }
}

/// Asserts that two states are equal, naming the keys that differ (with the size of
/// each side) rather than printing both whole states, which run to megabytes.
pub fn assert_same_state(actual: &BTreeMap<String, String>, expected: &BTreeMap<String, String>) {
    let differing: Vec<String> = expected
        .keys()
        .chain(actual.keys().filter(|k| !expected.contains_key(*k)))
        .filter(|key| actual.get(*key) != expected.get(*key))
        .map(|key| {
            let size = |state: &BTreeMap<String, String>| state.get(key).map_or(0, String::len);
            format!(
                "{key} ({} bytes, expected {})",
                size(actual),
                size(expected)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} keys differ from the expected state: {}",
        differing.len(),
        expected.len(),
        differing.join(", ")
    );
}
