//! Latency at a fixed produce rate, for the daemon and for a raw consumer on the same
//! broker in the same run: a producer at the rate, and a probe trend alert every 10 ms.
//! For the daemon a probe counts once its key is in Redis (polled every millisecond);
//! for the raw consumer, once `poll` returns it. The raw consumer has the daemon's fetch
//! settings, so the difference is what the daemon adds: decoding, batching, the write.
//! Each observer runs beside the producer's loop, on a thread or task of its own, and
//! notes when it saw each probe: the loop that produces never waits on Redis.
//!
//! In the daemon's phase a raw consumer of its own group reads the probes' topic beside
//! the daemon: the control. It sees the broker as the daemon does, at the same moment and
//! under the same load, so the difference between the two, and probe by probe, is what
//! the daemon itself adds. A raw consumer alone (below) also sees a broker that the
//! daemon and Redis do not slow, which on a machine where all share two cores is a
//! different broker. The control reads that one topic only, a fifth of the stream: a
//! second reader of the whole stream doubled what the broker had to serve. The raw
//! consumer's phases have no control: with one, their own p99 went from 34 to 50 ms to
//! 200 to 300 ms in three runs of four at 100,000 msg/s, and the broker they measure
//! would no longer be the fastest this machine gives.
//!
//! The raw consumer runs alone once before the daemon and once after it, and its probes
//! are pooled: a broker that keeps every message in memory slows as the run goes on, so
//! whichever ran second would be measured on a slower broker (two raw runs in a row
//! differed by up to 6.5 ms at p99). For the same reason each phase deletes its topics
//! when it is done, where the broker can. Each phase also records where the machine's
//! CPU went while its probes ran (see [`crate::cpu`]).
//!
//! The producer is warmed (metadata, a first delivery seen) and the load runs for a
//! warm-up before the first probe, so that neither the producer's first use nor the
//! consumer's group join is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use cache_layer_testkit::generate::{Generator, GeneratorConfig};
use cache_layer_testkit::RedisServer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::broker::{blocking, delete_topics, topic_name, topics_by_kind};
use crate::cpu::{Cores, Processes, Sample};
use crate::daemon::{Daemon, Target};
use crate::observers::{Observer, RawObserver, Reads, RedisObserver, WARM_UP_KEY};
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
    /// A raw consumer with the daemon's fetch settings, produce to `poll`, alone.
    pub raw: RawLatency,
    /// The daemon's p99 minus the raw consumer's alone.
    pub p99_over_raw_ms: f64,
    /// The raw consumer beside the daemon, in the same phase.
    pub control: ControlLatency,
    /// The daemon's p99 minus the control's.
    pub p99_over_control_ms: f64,
    /// The daemon's batches over the run: messages per batch, and ms per write.
    pub mean_batch: f64,
    pub mean_write_ms: f64,
    /// Where the CPU went while the daemon's probes ran.
    pub cpu: Cores,
}

/// The raw consumer beside the daemon, and the difference probe by probe.
#[derive(Debug, Default, Serialize)]
pub struct ControlLatency {
    pub probes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Quantiles of each probe's latency for the daemon minus its latency for the control.
    pub paired_p50_ms: f64,
    pub paired_p99_ms: f64,
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

/// What one phase measured: the achieved rate, each probe's latency in ms for each
/// observer (in the order the probes were sent), and where the CPU went meanwhile.
struct Phase {
    achieved_rate: f64,
    ms: Vec<Vec<f64>>,
    cpu: Cores,
}

impl Phase {
    /// The latencies seen by the `i`th observer, sorted.
    fn sorted(&self, i: usize) -> Vec<f64> {
        let mut ms: Vec<f64> = self.ms.iter().map(|probe| probe[i]).collect();
        ms.sort_by(f64::total_cmp);
        ms
    }
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
    let observers = [
        Observer::Redis(RedisObserver::start(connect(redis).await?)),
        Observer::Raw(RawObserver::start(target, &prefix, Reads::Probes)?),
    ];
    let measured = drive(target, redis, processes, &prefix, rate, secs, &observers).await?;
    for observer in observers {
        observer.stop().await?;
    }
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
    let (before_ms, after_ms) = (before.sorted(0), after.sorted(0));
    let mut raw_ms: Vec<f64> = before_ms.iter().chain(&after_ms).copied().collect();
    raw_ms.sort_by(f64::total_cmp);
    let raw = RawLatency {
        achieved_rate: (before.achieved_rate + after.achieved_rate) / 2.0,
        probes: raw_ms.len(),
        p50_ms: quantile(&raw_ms, 0.50),
        p99_ms: quantile(&raw_ms, 0.99),
        p99_before_ms: quantile(&before_ms, 0.99),
        p99_after_ms: quantile(&after_ms, 0.99),
        cpu: before.cpu,
    };
    let (ms, control_ms) = (measured.sorted(0), measured.sorted(1));
    let mut paired: Vec<f64> = measured
        .ms
        .iter()
        .map(|probe| probe[0] - probe[1])
        .collect();
    paired.sort_by(f64::total_cmp);
    let control = ControlLatency {
        probes: control_ms.len(),
        p50_ms: quantile(&control_ms, 0.50),
        p99_ms: quantile(&control_ms, 0.99),
        paired_p50_ms: quantile(&paired, 0.50),
        paired_p99_ms: quantile(&paired, 0.99),
    };
    let p99_ms = quantile(&ms, 0.99);
    Ok(LatencyReport {
        rate,
        achieved_rate: measured.achieved_rate,
        probes: ms.len(),
        p50_ms: quantile(&ms, 0.50),
        p99_ms,
        p999_ms: quantile(&ms, 0.999),
        p99_over_raw_ms: p99_ms - raw.p99_ms,
        raw,
        p99_over_control_ms: p99_ms - control.p99_ms,
        control,
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
    let observer = Observer::Raw(RawObserver::start(target, prefix, Reads::All)?);
    let observers = std::slice::from_ref(&observer);
    let phase = drive(
        target,
        redis,
        target.processes,
        prefix,
        rate,
        secs,
        observers,
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

/// A probe sent, and its latency for each observer that has seen it.
struct Probe {
    keyword: String,
    sent: Instant,
    ms: Vec<Option<f64>>,
}

impl Probe {
    /// Its latency for each observer, once every observer has seen it.
    fn seen(&mut self, observers: &[Observer]) -> Option<Vec<f64>> {
        for (ms, observer) in self.ms.iter_mut().zip(observers) {
            if ms.is_none() {
                *ms = observer.latency(&self.keyword, self.sent);
            }
        }
        self.ms.iter().copied().collect()
    }
}

fn probe_payload(keyword: &str) -> String {
    format!(
        r#"{{"keyword":"{keyword}","frequency":1,"growth_rate":1,"confidence_score":0.5,"window_start":"2025-01-01T00:00:00Z","window_end":"2025-01-01T00:01:00Z","sample_posts":[],"unique_authors":1,"rank":1}}"#
    )
}

/// Warms the producer and the observers, then produces at `rate` for the warm-up and
/// `secs` more, a probe every 10 ms after the warm-up. Returns the achieved rate, each
/// probe's latency in ms for each observer, and the CPU that `processes` used while the
/// probes ran.
async fn drive(
    target: &Target,
    redis: &RedisServer,
    processes: Processes,
    prefix: &str,
    rate: u64,
    secs: u64,
    observers: &[Observer],
) -> anyhow::Result<Phase> {
    // An upstream producer tuned for latency rather than for bulk loading, with 10 ms of
    // linger on every broker, so that runs compare (a stand-in broker used before queued
    // smaller batches one after the other: linger.ms = 2 measured p50 500 ms there).
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
    observers.iter().for_each(|o| o.expect(WARM_UP_KEY));
    loop {
        let payload = probe_payload(WARM_UP_KEY);
        let _ = producer.send(
            BaseRecord::to(&trends_topic)
                .key(WARM_UP_KEY)
                .payload(&payload),
        );
        let flushed = Arc::clone(&producer);
        blocking(move || Ok(flushed.flush(Duration::from_secs(5))?)).await?;
        let waiting: Vec<&str> = observers
            .iter()
            .filter(|o| o.latency(WARM_UP_KEY, warm_up_sent).is_none())
            .map(Observer::name)
            .collect();
        if waiting.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the warm-up message never reached {} within 60 s",
            waiting.join(" and ")
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
    let mut pending: Vec<Probe> = Vec::new();
    let mut latencies: Vec<Vec<f64>> = Vec::new();
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
                    observers.iter().for_each(|o| o.expect(&keyword));
                    pending.push(Probe {
                        keyword,
                        sent: Instant::now(),
                        ms: vec![None; observers.len()],
                    });
                }
                probe += 1;
                next_probe += PROBE_EVERY;
            }
            producer.poll(Duration::ZERO);
        }
        pending.retain_mut(|probe| match probe.seen(observers) {
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
    Ok(Phase {
        achieved_rate,
        ms: latencies,
        cpu,
    })
}

/// The q-quantile of sorted values; NaN when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}
