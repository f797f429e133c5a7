//! Faults that must neither stall the stage nor lose a message: a full Redis, a Redis
//! that refuses writes, poison messages and foreign keys, oversized rejects, a slow
//! Redis and a broker outage. Each test asserts the exact final Redis state.

use std::time::Duration;

use cache_layer_testkit::kafka::{daemon_config, MockKafka, RunningDaemon, GROUP, WINDOWS};
use cache_layer_testkit::{connect, wait_until, window_json, RedisServer};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

/// `windows` one-minute windows of `keywords` counts each, window by window.
fn window_stream(windows: u32, keywords: usize) -> Vec<(String, String)> {
    (0..windows)
        .flat_map(|minute| {
            (0..keywords).map(move |k| {
                let keyword = format!("kw{k}");
                let json = window_json(&keyword, (minute as i64 + 1) * 1_000 + k as i64, minute);
                (keyword, json)
            })
        })
        .collect()
}

/// Asserts that every window of [`window_stream`] is in Redis, field for field.
fn assert_windows_complete(conn: &mut redis::Connection, windows: u32, keywords: usize) {
    for minute in 0..windows {
        let key = format!("windows:window_2024_01_01_12_{minute:02}");
        let held: usize = conn.hlen(&key).unwrap();
        assert_eq!(held, keywords, "{key}");
        let last: String = conn.hget(&key, format!("kw{}", keywords - 1)).unwrap();
        let count = (minute as i64 + 1) * 1_000 + keywords as i64 - 1;
        assert!(last.contains(&format!("\"count\":{count}")), "{key}: {last}");
    }
}

/// How many commands Redis refused with OOM so far.
fn oom_errors(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut connect(redis))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_OOM:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_loses_nothing_once_memory_is_raised() {
    let kafka = MockKafka::start(3);
    let redis = RedisServer::start().await.unwrap();
    let mut admin = connect(&redis);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .exec(&mut admin)
        .unwrap();
    // Room for about a third of the stream.
    let info: String = redis::cmd("INFO").arg("memory").query(&mut admin).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 1_000_000)
        .exec(&mut admin)
        .unwrap();
    let stream = window_stream(20, 500);
    let mut config = daemon_config(&kafka, &redis.url());
    config.batch = Default::default();
    let daemon = RunningDaemon::spawn(config);
    let producing = async {
        for chunk in stream.chunks(500) {
            kafka.produce(WINDOWS, chunk).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let refused = async {
        wait_until(DEADLINE, "Redis to refuse writes for a while", || async {
            oom_errors(&redis) >= 20
        })
        .await;
    };
    tokio::join!(producing, refused);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .exec(&mut admin)
        .unwrap();
    kafka
        .wait_committed(GROUP, stream.len() as i64, DEADLINE)
        .await;
    assert_windows_complete(&mut connect(&redis), 20, 500);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_mixed_stream_under_oom() {
    use cache_layer::models::{decode, Message, MessageKind};
    use cache_layer_testkit::generate::{Generator, GeneratorConfig};
    use cache_layer_testkit::kafka::{TRENDS, USERS};
    use std::collections::{BTreeMap, BTreeSet};
    let kafka = MockKafka::start(12);
    let redis = RedisServer::start().await.unwrap();
    let mut admin = connect(&redis);
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").exec(&mut admin).unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut admin).unwrap();
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|n| n.trim().parse().ok()).unwrap();
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 600_000).exec(&mut admin).unwrap();
    let mut generator = Generator::new(GeneratorConfig { malformed: 0.0, messages_per_window: 650, vocabulary: 2_000, ..Default::default() });
    let stream: Vec<_> = (0..13_000).map(|_| generator.next_message()).collect();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &stream {
        if let Ok(Message::Windows(counts)) = decode(m.kind, m.payload.as_bytes()) {
            for c in counts { expected.entry(c.window_id().to_owned()).or_default().insert(c.normalized_keyword.clone()); }
        }
    }
    let mut config = daemon_config(&kafka, &redis.url());
    config.batch = Default::default();
    let daemon = RunningDaemon::spawn(config);
    let started = std::time::Instant::now();
    let producing = async {
        for chunk in stream.chunks(500) {
            for kind in [MessageKind::Trends, MessageKind::UserMetrics, MessageKind::Windows] {
                let topic = match kind { MessageKind::Trends => TRENDS, MessageKind::UserMetrics => USERS, MessageKind::Windows => WINDOWS };
                let records: Vec<_> = chunk.iter().filter(|m| m.kind == kind).map(|m| (m.key.clone(), m.payload.clone())).collect();
                kafka.produce(topic, &records).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    };
    let raise = async {
        tokio::time::sleep(Duration::from_secs(12)).await;
        eprintln!("raising at {:?}, oom errors {}", started.elapsed(), oom_errors(&redis));
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").exec(&mut connect(&redis)).unwrap();
    };
    tokio::join!(producing, raise);
    kafka.wait_committed(GROUP, stream.len() as i64, DEADLINE).await;
    let mut conn = connect(&redis);
    let mut missing = 0;
    for (window, keywords) in &expected {
        let held: usize = conn.hlen(format!("windows:{window}")).unwrap();
        if held != keywords.len() { eprintln!("{window}: {held} of {}", keywords.len()); missing += keywords.len() - held; }
    }
    daemon.stop().await;
    assert_eq!(missing, 0);
}
