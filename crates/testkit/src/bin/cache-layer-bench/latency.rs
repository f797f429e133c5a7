//! Latency at a fixed produce rate, for the daemon and for a raw consumer on the same
//! broker in the same run: a producer at the rate, and a probe trend alert every 10 ms.
//! For the daemon a probe counts once its key is in Redis (polled every millisecond);
//! for the raw consumer, once `poll` returns it. The raw consumer has the daemon's fetch
//! settings, so the difference is what the daemon adds: decoding, batching, the write.
//! Each observer runs beside the producer's loop, on a thread or task of its own, and
//! notes when it saw each probe: the loop that produces never waits on Redis.
//!
//! The raw consumer runs once before the daemon and once after it, and its probes are
//! pooled: a broker that keeps every message in memory slows as the run goes on, so
//! whichever ran second would be measured on a slower broker (two raw runs in a row
//! differed by up to 6.5 ms at p99). For the same reason each phase deletes its topics
//! when it is done, where the broker can. Each phase also records where the machine's
//! CPU went while its probes ran (see [`crate::cpu`]).
//!
//! The producer is warmed (metadata, a first delivery seen) and the load runs for a
//! warm-up before the first probe, so that neither the producer's first use nor the
//! consumer's group join is counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use cache_layer::schema::Keys;
use cache_layer_testkit::generate::{Generator, GeneratorConfig};
use cache_layer_testkit::RedisServer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use serde::Serialize;

use crate::broker::{
    blocking, delete_topics, raw_consumer_config, topic_name, topic_names, topics_by_kind,
};
use crate::cpu::{Cores, Processes, Sample};
use crate::daemon::{Daemon, Target};
use crate::report::quantile;
use crate::scenarios::connect;

/// The load before the first probe.
const WARM_UP: Duration = Duration::from_secs(3);
const PROBE_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Default, Serialize)]
pub struct LatencyReport {
    pub rate: u64,
    pub achieved_rate: f64,
    pub probes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// A raw consumer with the daemon's fetch settings, produce to `poll`.
    pub raw: RawLatency,
    /// The daemon's p99 minus the raw consumer's.
    pub p99_over_raw_ms: f64,
    /// The daemon's batches over the run: messages per batch, and ms per write.
    pub mean_batch: f64,
    pub mean_write_ms: f64,
    /// Where the CPU went while the daemon's probes ran.
    pub cpu: Cores,
}

/// The raw consumer's two phases, their probes pooled.
#[derive(Debug, Default, Serialize)]
pub struct RawLatency {
    pub achieved_rate: f64,
    pub probes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Each phase's own p99: before the daemon ran, and after.
    pub p99_before_ms: f64,
    pub p99_after_ms: f64,
    /// Where the CPU went while the first phase's probes ran.
    pub cpu: Cores,
}

/// What one phase measured: the achieved rate, each probe's latency in ms (sorted), and
/// where the CPU went meanwhile.
struct Phase {
    achieved_rate: f64,
    ms: Vec<f64>,
    cpu: Cores,
}

/// The topic prefixes the scenario uses under `prefix`: the daemon's, then the raw
/// consumer's before and after it.
pub fn prefixes(prefix: &str) -> [String; 3] {
    [
        prefix.to_owned(),
        format!("{prefix}-raw"),
        format!("{prefix}-raw-after"),
    ]
}

/// Measures the raw consumer, the daemon and the raw consumer again, one after the other,
/// each on its own topics (see [`prefixes`]), at the same rate.
pub async fn latency(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<LatencyReport> {
    let [prefix, raw_before, raw_after] = prefixes(prefix);
    let before = raw_phase(target, redis, &raw_before, rate, secs).await?;

    let daemon = Daemon::spawn(target, redis, &prefix, &format!("{prefix}-daemon"), 10)?;
    let processes = Processes {
        daemon: daemon.pid(),
        ..target.processes
    };
    let observer = Observer::Redis(RedisObserver::start(connect(redis).await?));
    let measured = drive(target, redis, processes, &prefix, rate, secs, &observer).await?;
    observer.stop().await?;
    let batches = daemon.metric("cache_layer_batches_written_total").await;
    let mean_batch = daemon.metric("cache_layer_batch_size_messages_sum").await / batches;
    let mean_write_ms = daemon
        .metric("cache_layer_pipeline_duration_seconds_sum")
        .await
        * 1e3
        / batches;
    daemon.stop().await?;
    done_with(target, &prefix).await?;

    let after = raw_phase(target, redis, &raw_after, rate, secs).await?;
    let mut raw_ms: Vec<f64> = before.ms.iter().chain(&after.ms).copied().collect();
    raw_ms.sort_by(f64::total_cmp);
    let raw = RawLatency {
        achieved_rate: (before.achieved_rate + after.achieved_rate) / 2.0,
        probes: raw_ms.len(),
        p50_ms: quantile(&raw_ms, 0.50),
        p99_ms: quantile(&raw_ms, 0.99),
        p99_before_ms: quantile(&before.ms, 0.99),
        p99_after_ms: quantile(&after.ms, 0.99),
        cpu: before.cpu,
    };
    let ms = &measured.ms;
    let p99_ms = quantile(ms, 0.99);
    Ok(LatencyReport {
        rate,
        achieved_rate: measured.achieved_rate,
        probes: ms.len(),
        p50_ms: quantile(ms, 0.50),
        p99_ms,
        p999_ms: quantile(ms, 0.999),
        p99_over_raw_ms: p99_ms - raw.p99_ms,
        raw,
        mean_batch,
        mean_write_ms,
        cpu: measured.cpu,
    })
}

/// One run of the raw consumer on the topics under `prefix`.
async fn raw_phase(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Phase> {
    let observer = Observer::Raw(RawObserver::start(target, prefix)?);
    let phase = drive(
        target,
        redis,
        target.processes,
        prefix,
        rate,
        secs,
        &observer,
    )
    .await?;
    observer.stop().await?;
    done_with(target, prefix).await?;
    Ok(phase)
}

/// Deletes a finished phase's topics, where the broker can (the mock cluster cannot).
async fn done_with(target: &Target, prefix: &str) -> anyhow::Result<()> {
    if target.deletes_topics {
        delete_topics(&target.bootstrap, prefix).await?;
    }
    Ok(())
}

/// Where a probe is looked for.
enum Observer {
    /// The daemon's write: the probe's key in Redis.
    Redis(RedisObserver),
    /// The raw consumer's `poll`.
    Raw(RawObserver),
}

/// When each probe was seen, by its key.
type SeenAt = Arc<Mutex<HashMap<String, Instant>>>;

impl Observer {
    /// Starts looking for the probe `keyword`.
    fn expect(&self, keyword: &str) {
        if let Observer::Redis(redis) = self {
            redis
                .expected
                .lock()
                .expect("not poisoned")
                .push(keyword.to_owned());
        }
    }

    /// The latency of the probe `keyword` sent at `sent`, in ms, once it has been seen.
    fn latency(&self, keyword: &str, sent: Instant) -> Option<f64> {
        let seen = match self {
            Observer::Redis(redis) => &redis.seen,
            Observer::Raw(raw) => &raw.consumed,
        };
        let at = *seen.lock().expect("not poisoned").get(keyword)?;
        Some(ms(at.saturating_duration_since(sent)))
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Observer::Redis(redis) => redis.stop().await,
            Observer::Raw(raw) => raw.stop().await,
        }
    }
}

/// Looks for the expected probes' keys in Redis every millisecond, on a task of its own.
/// A probe counts when the reply that found its key arrived.
struct RedisObserver {
    expected: Arc<Mutex<Vec<String>>>,
    seen: SeenAt,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RedisObserver {
    fn start(mut conn: MultiplexedConnection) -> Self {
        let expected: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: SeenAt = Arc::default();
        let stop = CancellationToken::new();
        let (looking, noted, stopping) = (Arc::clone(&expected), Arc::clone(&seen), stop.clone());
        let task = tokio::spawn(async move {
            let keys = Keys::new("");
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let keywords = looking.lock().expect("not poisoned").clone();
                if keywords.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for keyword in &keywords {
                    pipe.exists(keys.trend_normalized(keyword));
                }
                let found: Vec<bool> = pipe.query_async(&mut conn).await?;
                let at = Instant::now();
                let found: Vec<String> = keywords
                    .into_iter()
                    .zip(found)
                    .filter_map(|(keyword, found)| found.then_some(keyword))
                    .collect();
                if found.is_empty() {
                    continue;
                }
                looking
                    .lock()
                    .expect("not poisoned")
                    .retain(|k| !found.contains(k));
                let mut noted = noted.lock().expect("not poisoned");
                noted.extend(found.into_iter().map(|keyword| (keyword, at)));
            }
        });
        Self {
            expected,
            seen,
            stop,
            task,
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// A raw consumer on its own thread, noting when each probe arrives.
struct RawObserver {
    consumed: SeenAt,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl RawObserver {
    fn start(target: &Target, prefix: &str) -> anyhow::Result<Self> {
        let group = format!("{prefix}-consumer");
        let consumer: BaseConsumer =
            raw_consumer_config(&target.bootstrap, &group, target.fetch_wait_ms).create()?;
        let topics = topic_names(prefix);
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let consumed: SeenAt = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (noted, stopping) = (Arc::clone(&consumed), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Some(message) = consumer.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let message = message?;
                let at = Instant::now();
                if let Some(Ok(key)) = message.key().map(std::str::from_utf8) {
                    if key.starts_with("probe-") || key == WARM_UP_KEY {
                        noted
                            .lock()
                            .expect("not poisoned")
                            .insert(key.to_owned(), at);
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            consumed,
            stop,
            thread,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        blocking(move || thread.join().expect("the raw consumer does not panic")).await
    }
}

const WARM_UP_KEY: &str = "latency-warmup";

fn probe_payload(keyword: &str) -> String {
    format!(
        r#"{{"keyword":"{keyword}","frequency":1,"growth_rate":1,"confidence_score":0.5,"window_start":"2025-01-01T00:00:00Z","window_end":"2025-01-01T00:01:00Z","sample_posts":[],"unique_authors":1,"rank":1}}"#
    )
}

/// Warms the producer and the observer, then produces at `rate` for the warm-up and
/// `secs` more, a probe every 10 ms after the warm-up. Returns the achieved rate, the
/// probes' latencies in ms (sorted), and the CPU that `processes` used while the probes
/// ran.
async fn drive(
    target: &Target,
    redis: &RedisServer,
    processes: Processes,
    prefix: &str,
    rate: u64,
    secs: u64,
    observer: &Observer,
) -> anyhow::Result<Phase> {
    // An upstream producer tuned for latency rather than for bulk loading, but not below
    // 10 ms of linger: tansu serves one produce request after the other, and with smaller
    // batches its queue of requests grows (linger.ms = 2 measured p50 500 ms at 20,000
    // msg/s for the raw consumer as for the daemon; 10 ms, 23 ms).
    let producer: Arc<BaseProducer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &target.bootstrap)
            .set("linger.ms", "10")
            .set("queue.buffering.max.messages", "1000000")
            .create()?,
    );
    let trends_topic = topic_name(prefix, "trend-alerts");
    // Until a first message has gone through producer, broker and observer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let warm_up_sent = Instant::now();
    observer.expect(WARM_UP_KEY);
    loop {
        let payload = probe_payload(WARM_UP_KEY);
        let _ = producer.send(
            BaseRecord::to(&trends_topic)
                .key(WARM_UP_KEY)
                .payload(&payload),
        );
        let flushed = Arc::clone(&producer);
        blocking(move || Ok(flushed.flush(Duration::from_secs(5))?)).await?;
        if observer.latency(WARM_UP_KEY, warm_up_sent).is_some() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "nothing consumed the warm-up message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The stream is generated before the clock starts, so that generating it does not
    // take the cores the broker and the consumer under measurement need; two seconds of
    // it, sent round and round.
    let mut generator = Generator::new(GeneratorConfig {
        malformed: 0.0,
        seed: rate,
        ..GeneratorConfig::default()
    });
    let pool: Vec<_> = (0..rate * 2).map(|_| generator.next_message()).collect();
    let topics = topics_by_kind(prefix);
    let mut pending: Vec<(String, Instant)> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    let started = Instant::now();
    let probing = started + WARM_UP;
    let end = probing + Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut probe = 0u64;
    let mut next_probe = probing;
    let mut cpu_conn = connect(redis).await?;
    let mut cpu_from = None;
    let mut cpu = None;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while Instant::now() < end || !pending.is_empty() {
        tick.tick().await;
        let now = Instant::now();
        if now >= probing && cpu_from.is_none() {
            cpu_from = Some(Sample::take(processes, &mut cpu_conn).await?);
        }
        if now >= end && cpu.is_none() {
            if let Some(from) = &cpu_from {
                let to = Sample::take(processes, &mut cpu_conn).await?;
                cpu = Some(to.cores_since(from));
            }
        }
        if now < end {
            let due = (rate as f64 * now.duration_since(started).as_secs_f64()) as u64;
            while sent < due {
                let message = &pool[(sent % pool.len() as u64) as usize];
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
                let payload = probe_payload(&keyword);
                let record = BaseRecord::to(&trends_topic)
                    .key(&keyword)
                    .payload(&payload);
                if producer.send(record).is_ok() {
                    observer.expect(&keyword);
                    pending.push((keyword, Instant::now()));
                }
                probe += 1;
                next_probe += PROBE_EVERY;
            }
            producer.poll(Duration::ZERO);
        }
        pending.retain(|(keyword, sent)| match observer.latency(keyword, *sent) {
            Some(ms) => {
                latencies.push(ms);
                false
            }
            None => true,
        });
        ensure!(
            Instant::now() < end + Duration::from_secs(60),
            "probes never arrived"
        );
    }
    let achieved_rate = sent as f64 / end.duration_since(started).as_secs_f64();
    let cpu = match cpu {
        Some(cpu) => cpu,
        None => {
            let from = cpu_from.context("the run ended before its probes began")?;
            Sample::take(processes, &mut cpu_conn)
                .await?
                .cores_since(&from)
        }
    };
    blocking(move || Ok(producer.flush(Duration::from_secs(30))?)).await?;
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        achieved_rate,
        ms: latencies,
        cpu,
    })
}
