//! The ceilings and the daemon's throughput: the Kafka ceiling (a raw consume with the
//! daemon's fetch settings), the Redis ceiling (the daemon's writes by a raw pipelined
//! writer), and the daemon over the preloaded stream with its CPU and Redis's. Each Redis
//! check is async; each synchronous librdkafka call runs on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::ensure;
use cache_layer::cache::{CacheLayer, WriteSet};
use cache_layer::config::Ttls;
use cache_layer::models::{decode, Message, MessageKind};
use cache_layer::schema::Keys;
use cache_layer_testkit::generate::Generated;
use cache_layer_testkit::process::cpu_secs_of;
use cache_layer_testkit::RedisServer;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use redis::aio::MultiplexedConnection;

use crate::broker::{self, blocking, raw_consumer_config, topic_names, OffsetsReader};
use crate::cpu::redis_cpu_secs;
use crate::daemon::{Daemon, Target};

/// The TTL of every key the scenarios write, in seconds: longer than any run.
pub const TTL_SECS: u64 = 3_600;

pub fn ttls() -> Ttls {
    Ttls::uniform(Duration::from_secs(TTL_SECS))
}

/// A connection for the benchmark's own checks on the Redis under test.
pub async fn connect(redis: &RedisServer) -> anyhow::Result<MultiplexedConnection> {
    Ok(redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// Empties Redis and its command statistics between scenarios.
pub async fn flush(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    redis::cmd("FLUSHALL").exec_async(conn).await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(conn)
        .await?;
    Ok(())
}

/// Reads every preloaded message with no Redis at all, with the daemon's fetch settings;
/// timed from `subscribe`, so that the group join and the prefetch are inside the clock
/// as they are for the daemon.
pub async fn kafka_ceiling(
    bootstrap: &str,
    fetch_wait_ms: u64,
    expected: u64,
) -> anyhow::Result<KafkaCeiling> {
    let consumer: BaseConsumer =
        raw_consumer_config(bootstrap, "bench-raw-consume", fetch_wait_ms).create()?;
    let topics = topic_names("bench");
    blocking(move || {
        // Nothing else of this process works meanwhile: its CPU is the raw consumer's
        // (librdkafka's threads and this polling one).
        let cpu_before = cpu_secs_of(std::process::id());
        let started = Instant::now();
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut seen = 0u64;
        let mut bytes = 0usize;
        let mut last_progress = Instant::now();
        while seen < expected {
            // Reading every message is also the proof that the broker kept them all.
            ensure!(
                last_progress.elapsed() < Duration::from_secs(15),
                "the broker served only {seen} of the {expected} preloaded messages: it lost some"
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message?;
                last_progress = Instant::now();
                bytes += message.payload().map_or(0, <[u8]>::len);
                seen += 1;
            }
        }
        std::hint::black_box(bytes);
        let secs = started.elapsed().as_secs_f64();
        let cpu_secs = cpu_secs_of(std::process::id()) - cpu_before;
        Ok(KafkaCeiling {
            msgs_per_sec: seen as f64 / secs,
            cpu_us_per_msg: cpu_secs * 1e6 / seen as f64,
        })
    })
    .await
}

/// What the Kafka ceiling measured: a raw consumer's rate, and its CPU per message, the
/// part of the daemon's cost that any consumer of the same topics pays.
pub struct KafkaCeiling {
    pub msgs_per_sec: f64,
    pub cpu_us_per_msg: f64,
}

/// Decodes the valid messages of a stream, outside any timing.
fn decoded(stream: &[Generated]) -> Vec<Message> {
    stream
        .iter()
        .filter_map(|m| decode(m.kind, m.payload.as_bytes()).ok())
        .collect()
}

/// What the Redis ceiling measured.
pub struct RedisCeiling {
    pub msgs_per_sec: f64,
    /// Redis's user and system CPU over the run, per million messages.
    pub redis_cpu_secs_per_million: f64,
}

/// The same writes as the daemon's, in batches of 5,000, by a raw pipelined writer; and
/// what they cost Redis, with nothing else asking it.
pub async fn redis_ceiling(
    cache: &CacheLayer,
    conn: &mut MultiplexedConnection,
    stream: &[Generated],
) -> anyhow::Result<RedisCeiling> {
    let messages = decoded(stream);
    let cpu_before = redis_cpu_secs(conn).await?;
    let started = Instant::now();
    let now = Utc::now();
    let mut iter = messages.into_iter().peekable();
    let mut total = 0usize;
    while iter.peek().is_some() {
        let mut set = WriteSet::new();
        for message in iter.by_ref().take(5_000) {
            set.add_message(message, now);
            total += 1;
        }
        cache.write(&set, &ttls(), now).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = redis_cpu_secs(conn).await? - cpu_before;
    Ok(RedisCeiling {
        msgs_per_sec: total as f64 / secs,
        redis_cpu_secs_per_million: cpu_secs * 1e6 / total as f64,
    })
}

pub struct Throughput {
    /// The offsets of the source topics in all: the messages, and the transaction
    /// markers of a transactional stream.
    pub log_end: i64,
    pub secs: f64,
    pub redis_commands: u64,
    pub pipelines: u64,
    pub peak_rss_kib: u64,
    /// The daemon's user and system CPU over the run.
    pub cpu_secs: f64,
    /// Redis's user and system CPU over the run (`INFO cpu`).
    pub redis_cpu_secs: f64,
    /// The time the daemon's batches took to write, all together: what the run spent
    /// with a write in flight.
    pub write_secs: f64,
}

/// Commands Redis ran since its statistics were reset, the benchmark's own excluded.
async fn redis_calls(conn: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_info")
                && !l.starts_with("cmdstat_config")
        })
        .filter_map(|l| {
            l.split_once("calls=")
                .and_then(|(_, rest)| rest.split(',').next()?.parse::<u64>().ok())
        })
        .sum())
}

/// Runs the daemon, in consumer group `group`, on the topics preloaded under `prefix`;
/// timed from its start, group join included as for the Kafka ceiling, until it has
/// written every message (the sum of its `cache_layer_batch_size_messages`). Its offsets
/// are checked afterwards, untimed: committed up to every log end, past the transaction
/// markers too.
pub async fn daemon_throughput(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    group: &str,
    messages: u64,
) -> anyhow::Result<Throughput> {
    let mut conn = connect(redis).await?;
    let calls_before = redis_calls(&mut conn).await?;
    let redis_cpu_before = redis_cpu_secs(&mut conn).await?;
    let partitions = broker::partition_count(&target.bootstrap, prefix).await?;
    let reader = OffsetsReader::new(&target.bootstrap, group, prefix, partitions)?;
    let log_end = reader.log_end().await?;
    let started = Instant::now();
    let daemon = Daemon::spawn(target, redis, prefix, group, 50)?;
    let deadline = started + Duration::from_secs(900);
    wait_written(&daemon, messages, deadline).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = daemon.cpu_secs();
    let redis_cpu_secs = redis_cpu_secs(&mut conn).await? - redis_cpu_before;
    while reader.committed().await? != log_end {
        ensure!(
            Instant::now() < deadline,
            "the daemon did not commit in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pipelines = daemon.metric("cache_layer_batches_written_total").await as u64;
    let write_secs = daemon
        .metric("cache_layer_pipeline_duration_seconds_sum")
        .await;
    let peak_rss_kib = daemon.peak_rss_kib();
    daemon.stop().await?;
    Ok(Throughput {
        log_end,
        secs,
        redis_commands: redis_calls(&mut conn).await? - calls_before,
        pipelines,
        peak_rss_kib,
        cpu_secs,
        redis_cpu_secs,
        write_secs,
    })
}

/// `n` trend alerts of about 1 MiB each (a thousand sample posts of a kilobyte), under
/// the daemon's default `batch.max_message_bytes` (1 MiB) and the broker's default
/// `max.message.bytes`.
pub fn large_alerts(n: u64) -> Vec<Generated> {
    (0..n)
        .map(|i| {
            let keyword = format!("large{i}");
            let payload = cache_layer_testkit::fixtures::padded_trend_json(&keyword, 1_030);
            Generated {
                kind: MessageKind::Trends,
                key: keyword,
                payload,
                malformed: false,
            }
        })
        .collect()
}

pub struct Rebuild {
    /// The same daemon's throughput over the stream before Redis restarted.
    pub throughput_secs: f64,
    /// From the restart to the loss counted.
    pub detect_secs: f64,
    /// From the loss counted to the last replayed message written.
    pub replay_secs: f64,
    pub replayed: u64,
    /// The daemon's peak RSS before the restart, and at the end.
    pub first_pass_peak_rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// A daemon writes the preloaded stream (timed as `daemon_throughput` times it), then
/// Redis restarts empty under it; timed until the daemon has found the loss, and until
/// it has replayed and written every message again. Its peak RSS covers both.
pub async fn daemon_rebuild(
    target: &Target,
    redis: &mut RedisServer,
    messages: u64,
) -> anyhow::Result<Rebuild> {
    let started = Instant::now();
    let daemon = Daemon::spawn(target, redis, "bench", "bench-rebuild", 50)?;
    let deadline = started + Duration::from_secs(900);
    wait_written(&daemon, messages, deadline).await?;
    let throughput_secs = started.elapsed().as_secs_f64();
    let first_pass_peak_rss_kib = daemon.peak_rss_kib();

    let restarted = Instant::now();
    redis.restart().await?;
    while daemon.metric("cache_layer_redis_data_loss_total").await < 1.0 {
        ensure!(
            Instant::now() < deadline,
            "the daemon did not find the loss"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let detect_secs = restarted.elapsed().as_secs_f64();
    let found = Instant::now();
    // Every message replayed (counted as its batch is handed to Redis), and no
    // partition left to replay (once the batch with its last message was written).
    loop {
        let replayed = daemon.metric("cache_layer_rebuild_messages_total").await;
        if replayed >= messages as f64
            && daemon.metric("cache_layer_rebuild_partitions").await == 0.0
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the rebuild did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replay_secs = found.elapsed().as_secs_f64();
    let replayed = daemon.metric("cache_layer_rebuild_messages_total").await as u64;
    let peak_rss_kib = daemon.peak_rss_kib();
    daemon.stop().await?;
    Ok(Rebuild {
        throughput_secs,
        detect_secs,
        replay_secs,
        replayed,
        first_pass_peak_rss_kib,
        peak_rss_kib,
    })
}

/// Waits until the daemon has written `messages` (the sum of its batch sizes).
///
/// Its `/metrics` is read as seldom as finding the end within a few milliseconds allows:
/// a scrape renders every series, about 0.4 ms of the daemon's CPU, and a look every
/// 10 ms put 6% of the daemon's CPU in a throughput run on this benchmark's scrapes. The
/// next look comes after half the time the rest should take at the rate since the last
/// one, between 2 and 100 ms.
async fn wait_written(daemon: &Daemon, messages: u64, deadline: Instant) -> anyhow::Result<()> {
    const SOONEST: Duration = Duration::from_millis(2);
    const LATEST: Duration = Duration::from_millis(100);
    let target = messages as f64;
    let mut last = (Instant::now(), 0.0);
    loop {
        let written = daemon.metric("cache_layer_batch_size_messages_sum").await;
        if written >= target {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon did not finish in time"
        );
        let (at, before) = last;
        let rate = (written - before) / at.elapsed().as_secs_f64();
        let wait = if rate > 0.0 {
            Duration::from_secs_f64((target - written) / rate / 2.0).clamp(SOONEST, LATEST)
        } else {
            LATEST
        };
        last = (Instant::now(), written);
        tokio::time::sleep(wait).await;
    }
}

/// Every valid message's key is in Redis: nothing was lost on the way.
pub async fn verify_written(redis: &RedisServer, stream: &[Generated]) -> anyhow::Result<()> {
    let keys = Keys::new("");
    let mut conn = connect(redis).await?;
    let mut windows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut trends = BTreeSet::new();
    for message in decoded(stream) {
        match message {
            Message::Trends(alerts) => trends.extend(alerts.iter().map(|a| a.normalized_keyword())),
            Message::Windows(counts) => {
                for c in counts {
                    windows
                        .entry(c.window_id().into_owned())
                        .or_default()
                        .insert(c.normalized_keyword.clone());
                }
            }
            Message::UserMetrics(_) => {}
        }
    }
    let ranked: usize = redis::cmd("ZCARD")
        .arg(keys.trends_current())
        .query_async(&mut conn)
        .await?;
    ensure!(
        ranked == trends.len(),
        "{} holds {ranked} of {} keywords",
        keys.trends_current(),
        trends.len()
    );
    for (window, keywords) in windows {
        let key = keys.window(&window);
        let held: usize = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await?;
        ensure!(
            held == keywords.len(),
            "{key} holds {held} of {} keywords",
            keywords.len()
        );
    }
    Ok(())
}
