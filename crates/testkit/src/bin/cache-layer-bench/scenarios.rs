//! The measured scenarios: the Kafka ceiling (a raw consume), the Redis ceiling (the
//! daemon's writes by a raw pipelined writer), the naive baseline, the daemon's
//! throughput, and produce-to-visible latency at fixed rates. Each Redis check is async;
//! each synchronous librdkafka call runs on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use cache_layer::cache::{CacheLayer, WriteSet};
use cache_layer::config::Ttls;
use cache_layer::models::{decode, Message};
use cache_layer::schema::Keys;
use cache_layer_testkit::generate::{Generated, Generator, GeneratorConfig};
use cache_layer_testkit::RedisServer;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use redis::aio::MultiplexedConnection;

use crate::broker::{self, blocking, topic_name, topics_by_kind, OffsetsReader, TOPICS};
use crate::daemon::{Daemon, Target};
use crate::report::{quantile, LatencyReport};

/// The TTL of every key the scenarios write: longer than any run.
fn ttls() -> Ttls {
    Ttls::uniform(Duration::from_secs(3_600))
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

/// Reads every preloaded message with no Redis at all.
pub async fn kafka_ceiling(bootstrap: &str, expected: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw-consume")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let topics: Vec<String> = TOPICS.iter().map(|(t, _)| topic_name("bench", t)).collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    blocking(move || {
        let mut seen = 0u64;
        let mut bytes = 0usize;
        let mut started = None;
        let mut last_progress = Instant::now();
        while seen < expected {
            // Reading every message is also the proof that the broker kept them all.
            ensure!(
                last_progress.elapsed() < Duration::from_secs(15),
                "the broker served only {seen} of the {expected} preloaded messages: it lost some"
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message?;
                started.get_or_insert_with(Instant::now);
                last_progress = Instant::now();
                bytes += message.payload().map_or(0, <[u8]>::len);
                seen += 1;
            }
        }
        std::hint::black_box(bytes);
        Ok(seen as f64 / started.map_or(1.0, |s| s.elapsed().as_secs_f64()))
    })
    .await
}

/// Decodes the valid messages of a stream, outside any timing.
fn decoded(stream: &[Generated]) -> Vec<Message> {
    stream
        .iter()
        .filter_map(|m| decode(m.kind, m.payload.as_bytes()).ok())
        .collect()
}

/// The same writes as the daemon's, in batches of 5,000, by a raw pipelined writer.
pub async fn redis_ceiling(cache: &CacheLayer, stream: &[Generated]) -> anyhow::Result<f64> {
    let messages = decoded(stream);
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
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// One awaited round trip per message, as the old service did.
pub async fn naive(cache: &CacheLayer, stream: &[Generated]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let now = Utc::now();
    for message in stream {
        if let Ok(decoded) = decode(message.kind, message.payload.as_bytes()) {
            let mut set = WriteSet::new();
            set.add_message(decoded, now);
            cache.write(&set, &ttls(), now).await?;
        }
    }
    Ok(stream.len() as f64 / started.elapsed().as_secs_f64())
}

pub struct Throughput {
    pub secs: f64,
    pub redis_commands: u64,
    pub pipelines: u64,
    pub peak_rss_kib: u64,
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

/// Runs the daemon on the preloaded topics; times from its first consumed message until
/// every offset is committed.
pub async fn daemon_throughput(
    target: &Target,
    redis: &RedisServer,
    messages: u64,
) -> anyhow::Result<Throughput> {
    let mut conn = connect(redis).await?;
    let calls_before = redis_calls(&mut conn).await?;
    let partitions = broker::partition_count(&target.bootstrap, "bench").await?;
    let reader = OffsetsReader::new(&target.bootstrap, "bench-daemon", "bench", partitions)?;
    let daemon = Daemon::spawn(target, redis, "bench", "bench-daemon", 50)?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while daemon.metric("cache_layer_messages_consumed_total").await == 0.0 {
        ensure!(Instant::now() < deadline, "the daemon never consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    while reader.committed().await? != messages as i64 {
        ensure!(
            Instant::now() < deadline,
            "the daemon did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let pipelines = daemon.metric("cache_layer_batches_written_total").await as u64;
    let peak_rss_kib = daemon.peak_rss_kib();
    daemon.stop().await?;
    Ok(Throughput {
        secs,
        redis_commands: redis_calls(&mut conn).await? - calls_before,
        pipelines,
        peak_rss_kib,
    })
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
                        .entry(c.window_id().to_owned())
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

/// Produces at `rate` for `secs`, with a probe trend alert every 10 ms whose key is polled
/// in Redis: the time from produce to visible.
pub async fn latency(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<LatencyReport> {
    let keys = Keys::new("");
    let group = format!("{prefix}-daemon");
    let daemon = Daemon::spawn(target, redis, prefix, &group, 10)?;
    // An upstream producer tuned for latency rather than for bulk loading.
    let producer: Arc<BaseProducer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &target.bootstrap)
            .set("linger.ms", "2")
            .set("queue.buffering.max.messages", "1000000")
            .create()?,
    );
    let warmed = Arc::clone(&producer);
    blocking(move || {
        Ok(warmed
            .client()
            .fetch_metadata(None, Duration::from_secs(10))?)
    })
    .await?;
    // Let the daemon join its group before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    let warmup_key = "latency-warmup";
    let warmup = format!(
        r#"{{"keyword":"{warmup_key}","frequency":1,"growth_rate":1,"confidence_score":0.5,"window_start":"2025-01-01T00:00:00Z","window_end":"2025-01-01T00:01:00Z","sample_posts":[],"unique_authors":1,"rank":1}}"#
    );
    let trends_topic = topic_name(prefix, "trend-alerts");
    let mut conn = connect(redis).await?;
    loop {
        let _ = producer.send(
            BaseRecord::to(&trends_topic)
                .key(warmup_key)
                .payload(&warmup),
        );
        let flushed = Arc::clone(&producer);
        blocking(move || Ok(flushed.flush(Duration::from_secs(5))?)).await?;
        let seen: bool = redis::cmd("EXISTS")
            .arg(keys.trend_normalized(warmup_key))
            .query_async(&mut conn)
            .await?;
        if seen {
            break;
        }
        ensure!(Instant::now() < deadline, "the latency daemon never wrote");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut generator = Generator::new(GeneratorConfig {
        malformed: 0.0,
        seed: rate,
        ..GeneratorConfig::default()
    });
    let topics = topics_by_kind(prefix);
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut probe = 0u64;
    let mut next_probe = started;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end || !pending.is_empty() {
        tick.tick().await;
        let now = Instant::now();
        if now < end {
            let due = (rate as f64 * now.duration_since(started).as_secs_f64()) as u64;
            while sent < due {
                let message = generator.next_message();
                let record = BaseRecord::to(&topics[&message.kind])
                    .key(&message.key)
                    .payload(&message.payload);
                if producer.send(record).is_err() {
                    producer.poll(Duration::ZERO);
                    break;
                }
                sent += 1;
            }
            if now >= next_probe {
                let keyword = format!("probe-{probe}");
                let payload = warmup.replace(warmup_key, &keyword);
                let record = BaseRecord::to(&trends_topic)
                    .key(&keyword)
                    .payload(&payload);
                if producer.send(record).is_ok() {
                    pending.push((keyword, Instant::now()));
                }
                probe += 1;
                next_probe += Duration::from_millis(10);
            }
            producer.poll(Duration::ZERO);
        }
        if !pending.is_empty() {
            let mut pipe = redis::pipe();
            for (keyword, _) in &pending {
                pipe.exists(keys.trend_normalized(keyword));
            }
            let seen: Vec<bool> = pipe.query_async(&mut conn).await?;
            let now = Instant::now();
            let mut still = Vec::with_capacity(pending.len());
            for ((keyword, at), seen) in pending.drain(..).zip(seen) {
                if seen {
                    latencies.push(now.duration_since(at).as_secs_f64() * 1_000.0);
                } else {
                    still.push((keyword, at));
                }
            }
            pending = still;
        }
        ensure!(
            Instant::now() < end + Duration::from_secs(60),
            "probes never became visible"
        );
    }
    let achieved_rate = sent as f64 / secs as f64;
    blocking(move || Ok(producer.flush(Duration::from_secs(30))?)).await?;
    daemon.stop().await?;
    latencies.sort_by(f64::total_cmp);
    Ok(LatencyReport {
        rate,
        achieved_rate,
        probes: latencies.len(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        p999_ms: quantile(&latencies, 0.999),
    })
}
