//! The HTTP listeners under attack, beside a live stream: a crowd of readers of the
//! largest answer (`/v1/trends?limit=1000`), then slow clients that never finish their
//! request head (slowloris). It reports the daemon's resident set before, at the peak and
//! 30 s after the crowd, `/healthz`'s latency on the operator's port during the attack,
//! and the stream the daemon consumed meanwhile. Loopback only, bounded in count and time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use cache_layer::cache::CacheLayer;
use cache_layer::config::RedisConfig;
use cache_layer_testkit::fixtures;
use cache_layer_testkit::generate::{Generator, GeneratorConfig};
use cache_layer_testkit::RedisServer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::topics_by_kind;
use crate::daemon::{Daemon, Target};
use crate::latency::quantile;

/// How hard to push.
pub struct Load {
    /// Concurrent `GET /v1/trends?limit=1000`.
    pub readers: usize,
    /// Connections that send half a request head and stop.
    pub slow_clients: usize,
    /// The live stream's rate, messages/s.
    pub rate: u64,
    /// How long the stream runs before the idle resident set is read, and how long after
    /// the crowd it is read again.
    pub settle: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct HttpLoadReport {
    pub readers: usize,
    pub stream_rate: u64,
    /// Bytes of one `limit=1000` answer.
    pub answer_bytes: usize,
    pub answered_200: u64,
    pub shed_503: u64,
    pub failed: u64,
    pub readers_secs: f64,
    /// Seconds after the crowd until the daemon had consumed all that was produced by
    /// its end.
    pub caught_up_secs: f64,
    /// The mean and the largest resident set over 5 s of the stream alone.
    pub idle_rss_mib: f64,
    pub idle_max_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// The mean resident set over 5 s, `settle_secs` after the crowd.
    pub settled_rss_mib: f64,
    pub settle_secs: u64,
    /// The stream before the attack, while the crowd reads, and while slow clients hold on.
    pub stream_before: StreamRates,
    pub stream_readers: StreamRates,
    pub slow_clients: usize,
    pub slow_clients_closed: usize,
    pub healthz_probes: usize,
    pub healthz_failed: usize,
    pub healthz_p50_ms: f64,
    pub healthz_p99_ms: f64,
    pub healthz_max_ms: f64,
    pub stream_slowloris: StreamRates,
}

/// Messages per second over a phase: what the upstream producer sent and what the
/// daemon consumed. The daemon kept up when the two are alike.
#[derive(Debug, Default, Serialize)]
pub struct StreamRates {
    pub produced: f64,
    pub consumed: f64,
}

/// The start of a phase.
struct Phase {
    at: Instant,
    produced: f64,
    consumed: f64,
}

impl Phase {
    async fn start(stream: &LiveStream, daemon: &Daemon) -> Self {
        Self {
            at: Instant::now(),
            produced: stream.sent(),
            consumed: consumed(daemon).await,
        }
    }

    async fn rates(&self, stream: &LiveStream, daemon: &Daemon) -> StreamRates {
        let secs = self.at.elapsed().as_secs_f64();
        StreamRates {
            produced: (stream.sent() - self.produced) / secs,
            consumed: (consumed(daemon).await - self.consumed) / secs,
        }
    }
}

const TRENDS: &str = "/v1/trends?limit=1000";

impl HttpLoadReport {
    /// Its rows of the results table.
    pub fn print_rows(&self) {
        println!(
            "| HTTP: {} concurrent readers of {TRENDS} ({} bytes each) | {} answered, {} shed with 503, {} failed, in {:.1} s |",
            self.readers, self.answer_bytes, self.answered_200, self.shed_503, self.failed, self.readers_secs
        );
        println!(
            "| HTTP: daemon RSS, stream alone (mean, max over 5 s), crowd's peak, {} s after (mean over 5 s) | {:.1}, {:.1}, {:.1}, {:.1} MiB |",
            self.settle_secs, self.idle_rss_mib, self.idle_max_rss_mib, self.peak_rss_mib, self.settled_rss_mib
        );
        println!(
            "| HTTP: the stream caught up after the crowd | in {:.1} s |",
            self.caught_up_secs
        );
        println!(
            "| HTTP: {} slow clients | {} closed by the daemon; /healthz p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} of {} probes failed |",
            self.slow_clients, self.slow_clients_closed, self.healthz_p50_ms, self.healthz_p99_ms, self.healthz_max_ms, self.healthz_failed, self.healthz_probes
        );
        for (phase, rates) in [
            ("before", &self.stream_before),
            ("during the readers", &self.stream_readers),
            ("during the slow clients", &self.stream_slowloris),
        ] {
            println!(
                "| HTTP: stream {phase}, produced / consumed | {:.0} / {:.0} msg/s |",
                rates.produced, rates.consumed
            );
        }
    }
}

pub async fn http_load(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    load: Load,
) -> anyhow::Result<HttpLoadReport> {
    // The crowd needs a file per connection on this side too.
    cache_layer::app::raise_open_files_limit()?;
    seed_trends(redis).await?;
    let daemon = Daemon::spawn(target, redis, prefix, &format!("{prefix}-daemon"), 50)?;
    let stream = LiveStream::start(&target.bootstrap, prefix, load.rate)?;
    // Until the daemon has caught up with the stream, to within half a second of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&daemon).await < 1.0
        || consumed(&daemon).await + load.rate as f64 / 2.0 < stream.sent()
    {
        ensure!(
            Instant::now() < deadline,
            "the daemon never caught up with the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut report = HttpLoadReport {
        readers: load.readers,
        stream_rate: load.rate,
        slow_clients: load.slow_clients,
        settle_secs: load.settle.as_secs(),
        ..HttpLoadReport::default()
    };
    let api = daemon.addr_of(TRENDS);
    let (_, answer) = read_answer(api, TRENDS).await?;
    report.answer_bytes = answer;
    // The stream alone grows the daemon's memory for a while (librdkafka's queues, the
    // allocator's caches): the idle figure is taken once that has settled as well.
    tokio::time::sleep(load.settle).await;
    let phase = Phase::start(&stream, &daemon).await;
    (report.idle_rss_mib, report.idle_max_rss_mib) = rss_over(&daemon, RSS_WINDOW).await;
    report.stream_before = phase.rates(&stream, &daemon).await;

    eprintln!("  {} concurrent readers of {TRENDS}", load.readers);
    let phase = Phase::start(&stream, &daemon).await;
    let peak = Arc::new(AtomicU64::new(0));
    let readers = (0..load.readers).map(|_| tokio::spawn(read_answer(api, TRENDS)));
    let crowd = futures::future::join_all(readers);
    tokio::pin!(crowd);
    let answers = loop {
        tokio::select! {
            answers = &mut crowd => break answers,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                peak.fetch_max(daemon.rss_kib(), Ordering::Relaxed);
            }
        }
    };
    report.readers_secs = phase.at.elapsed().as_secs_f64();
    report.stream_readers = phase.rates(&stream, &daemon).await;
    for answer in answers {
        match answer? {
            Ok((200, _)) => report.answered_200 += 1,
            Ok((503, _)) => report.shed_503 += 1,
            _ => report.failed += 1,
        }
    }
    report.peak_rss_mib = mib(peak.load(Ordering::Relaxed).max(daemon.rss_kib()));
    // How long the daemon took to consume what was produced by the end of the crowd.
    let produced = stream.sent();
    let crowd_ended = Instant::now();
    while consumed(&daemon).await < produced {
        ensure!(
            crowd_ended.elapsed() < Duration::from_secs(120),
            "the daemon never caught up after the crowd"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.caught_up_secs = crowd_ended.elapsed().as_secs_f64();
    tokio::time::sleep(load.settle.saturating_sub(crowd_ended.elapsed())).await;
    (report.settled_rss_mib, _) = rss_over(&daemon, RSS_WINDOW).await;

    eprintln!("  {} slow clients", load.slow_clients);
    let phase = Phase::start(&stream, &daemon).await;
    let mut slow = Vec::with_capacity(load.slow_clients);
    for _ in 0..load.slow_clients {
        if let Ok(mut stream) = TcpStream::connect(api).await {
            let _ = stream
                .write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
                .await;
            slow.push(stream);
        }
    }
    let operator = daemon.addr_of("/healthz");
    let mut latencies = Vec::new();
    let probing = Instant::now();
    while probing.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            cache_layer_testkit::http::get(operator, "/healthz"),
        );
        match answer.await {
            Ok(Some((200, _))) => latencies.push(asked.elapsed().as_secs_f64() * 1_000.0),
            _ => report.healthz_failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = slow.into_iter().map(|mut stream| async move {
        let mut rest = [0u8; 512];
        // The daemon closes them; one that is still open 10 s on was not closed.
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    });
    report.slow_clients_closed = futures::future::join_all(closed)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    report.stream_slowloris = phase.rates(&stream, &daemon).await;
    latencies.sort_by(f64::total_cmp);
    report.healthz_probes = latencies.len() + report.healthz_failed;
    report.healthz_p50_ms = quantile(&latencies, 0.50);
    report.healthz_p99_ms = quantile(&latencies, 0.99);
    report.healthz_max_ms = latencies.last().copied().unwrap_or(f64::NAN);

    stream.stop().await?;
    daemon.stop().await?;
    Ok(report)
}

/// How long the resident set is sampled for an idle or a settled figure.
const RSS_WINDOW: Duration = Duration::from_secs(5);

/// The mean and the largest resident set over `window`, sampled every 100 ms, in MiB.
async fn rss_over(daemon: &Daemon, window: Duration) -> (f64, f64) {
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < window {
        samples.push(mib(daemon.rss_kib()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    (mean, samples.iter().copied().fold(0.0, f64::max))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn consumed(daemon: &Daemon) -> f64 {
    daemon.metric("cache_layer_messages_consumed_total").await
}

/// One GET over a fresh connection: the status and the bytes of the answer, read and
/// dropped as they come, so that the crowd holds little memory on this side.
async fn read_answer(addr: SocketAddr, path: &'static str) -> anyhow::Result<(u16, usize)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let mut total = 0;
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            if head.len() < 16 {
                head.extend_from_slice(&buffer[..n.min(16)]);
            }
            total += n;
        }
        let code = std::str::from_utf8(&head)
            .ok()
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        anyhow::Ok((code, total))
    };
    tokio::time::timeout(Duration::from_secs(120), exchange).await?
}

/// 1,000 trends of about 460 bytes each, in a window ahead of anything the stream
/// writes, so that they are the answer to `limit=1000`.
async fn seed_trends(redis: &RedisServer) -> anyhow::Result<()> {
    let cache = CacheLayer::connect(&RedisConfig::from_url(&redis.url())).await?;
    let alerts: Vec<_> = (1..=1_000)
        .map(|rank| {
            let mut alert = fixtures::trend(&format!("seeded-{rank}"), "2099-01-01T00:01:00Z", rank);
            alert.sample_posts = (0..3).map(|i| format!("post {i} of a trend seeded for the load test, long enough to weigh as a real one does")).collect();
            alert
        })
        .collect();
    cache
        .cache_current_trends(&alerts, Duration::from_secs(3_600))
        .await?;
    Ok(())
}

/// The upstream stream, at a fixed rate, on a thread of its own until stopped.
struct LiveStream {
    stop: Arc<AtomicBool>,
    /// Messages handed to the producer so far.
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<u64>>,
}

impl LiveStream {
    fn start(bootstrap: &str, prefix: &str, rate: u64) -> anyhow::Result<Self> {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        let topics = topics_by_kind(prefix);
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&stop);
        let sent = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&sent);
        let thread = std::thread::spawn(move || {
            let mut generator = Generator::new(GeneratorConfig {
                malformed: 0.0,
                ..GeneratorConfig::default()
            });
            let started = Instant::now();
            let mut sent = 0u64;
            while !running.load(Ordering::Relaxed) {
                let due = (rate as f64 * started.elapsed().as_secs_f64()) as u64;
                while sent < due {
                    let message = generator.next_message();
                    let record = BaseRecord::to(&topics[&message.kind])
                        .key(&message.key)
                        .payload(&message.payload);
                    if producer.send(record).is_err() {
                        break;
                    }
                    sent += 1;
                }
                counted.store(sent, Ordering::Relaxed);
                producer.poll(Duration::from_millis(1));
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(sent)
        });
        Ok(Self { stop, sent, thread })
    }

    fn sent(&self) -> f64 {
        self.sent.load(Ordering::Relaxed) as f64
    }

    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || {
            thread.join().expect("the producer thread does not panic")
        })
        .await?
    }
}
