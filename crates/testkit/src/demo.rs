//! `cache-layer demo`: the whole thing on one machine with no Kafka installed.
//!
//! An in-process Kafka broker (librdkafka's mock cluster) with the three topics, the
//! configured Redis when it answers or a local `redis-server` otherwise, a live synthetic
//! Bluesky-trend producer (one-minute windows compressed to a few seconds, a trickle of
//! malformed messages), and the real daemon with `/metrics`, the read API and the sweeps.
//! A summary refreshes in place until Ctrl-C or `--duration`; everything the demo started
//! is stopped and removed when it ends.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::generate::{Generator, GeneratorConfig};
use crate::redis_server::RedisServer;
use cache_layer::cache::CacheLayer;
use cache_layer::config::{Config, RedisConfig};
use cache_layer::models::MessageKind;
use cache_layer::status::{Snapshot, Status};

/// Partitions of each demo topic.
const PARTITIONS: i32 = 3;
/// How often the producer sends a slice of its rate.
const PRODUCE_TICK: Duration = Duration::from_millis(100);
/// How far ahead of the real clock the demo's event times may run: a year of compressed
/// windows.
const DEMO_FUTURE_SKEW: Duration = Duration::from_secs(365 * 86_400);

/// How long the demo waits for an existing Redis to answer before starting its own.
const REDIS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop by itself after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Messages per second from the synthetic producer.
    pub rate: u64,
    /// Real seconds per one-minute window.
    pub window_secs: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: None,
            rate: 2_000,
            window_secs: 5,
        }
    }
}

/// What the demo did, printed at the end and checked by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    pub produced: u64,
    pub daemon: Snapshot,
}

/// Runs the demo until `shutdown` or the duration.
pub async fn run(
    mut config: Config,
    options: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<DemoReport> {
    let (redis_note, _local_redis) = choose_redis(&mut config.redis).await?;
    let kafka = MockCluster::new(1).context("cannot start the in-process Kafka broker")?;
    if config.topics.dead_letter.is_empty() {
        config.topics.dead_letter = "cache-layer-dead-letters".into();
    }
    for topic in [
        &config.topics.trends,
        &config.topics.user_metrics,
        &config.topics.windows,
    ] {
        kafka.create_topic(topic, PARTITIONS, 1)?;
    }
    kafka.create_topic(&config.topics.dead_letter, 1, 1)?;
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    // The mock broker holds each fetch for the full fetch.wait.max.ms even when data
    // arrives (a real broker answers at once); keep the demo's latency realistic.
    config
        .kafka
        .properties
        .0
        .entry("fetch.wait.max.ms".into())
        .or_insert_with(|| "10".into());
    config.kafka.group_id = "cache-layer-demo".into();
    config.stats.interval = Duration::from_secs(5);
    config.sweep.interval = Duration::from_secs(10);
    // The demo's clock runs a minute every `window_secs`: its windows end hours ahead of
    // the real one, which the daemon would refuse (and its reads skip) as from the future.
    config.batch.max_future_skew = DEMO_FUTURE_SKEW;
    config.http.listen = demo_listen(&config.http.listen);
    config.http.api_listen = demo_listen(&config.http.api_listen);

    let status = Arc::new(Status::default());
    let stop_daemon = CancellationToken::new();
    let daemon = tokio::spawn(cache_layer::run_with_status(
        config.clone(),
        stop_daemon.clone(),
        Arc::clone(&status),
    ));
    let cache = CacheLayer::connect(&config.redis)
        .await?
        .with_max_future_skew(DEMO_FUTURE_SKEW);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .set("linger.ms", "5")
        .create()?;

    let started = Instant::now();
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut generator = Generator::new(GeneratorConfig {
        malformed: 0.01,
        ..GeneratorConfig::default()
    });
    let demo_start = Utc::now();
    let mut produced = 0u64;
    let mut produce_tick = tokio::time::interval(PRODUCE_TICK);
    let mut screen_tick = tokio::time::interval(Duration::from_secs(1));
    crate::wait_until(Duration::from_secs(30), "the listeners", || async {
        status.http_addr().is_some() || daemon.is_finished()
    })
    .await;
    let mut screen = Screen::new(&status, redis_note);
    let interrupted = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break true,
            _ = sleep_until(deadline) => break false,
            _ = produce_tick.tick() => {
                let window = window_start(demo_start, started.elapsed(), options.window_secs);
                generator.set_window(window);
                let slice = (options.rate * PRODUCE_TICK.as_millis() as u64 / 1_000).max(1);
                for _ in 0..slice {
                    let message = generator.next_message();
                    let topic = match message.kind {
                        MessageKind::Trends => &config.topics.trends,
                        MessageKind::UserMetrics => &config.topics.user_metrics,
                        MessageKind::Windows => &config.topics.windows,
                    };
                    let record = FutureRecord::to(topic).key(&message.key).payload(&message.payload);
                    // Delivery is librdkafka's business; a full queue just skips this slice.
                    if producer.send_result(record).is_ok() {
                        produced += 1;
                    }
                }
            }
            _ = screen_tick.tick() => screen.show(&cache, produced, status.snapshot(), started.elapsed()).await,
        }
    };

    // At the end of a timed run, what was produced is delivered and consumed before the
    // daemon stops (within 10 s), so that the summary adds up; Ctrl-C stops at once, and
    // what is left is consumed by the next run.
    if !interrupted {
        let flushing = producer.clone();
        tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(10))).await??;
        let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
            while status.snapshot().acknowledged < produced {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let _ = caught_up.await;
    }
    stop_daemon.cancel();
    daemon.await.context("the daemon task panicked")??;
    let report = DemoReport {
        produced,
        daemon: status.snapshot(),
    };
    println!(
        "\ndemo stopped: {} produced, {} consumed, {} written, {} rejected, {} dead-lettered",
        report.produced,
        report.daemon.consumed,
        report.daemon.acknowledged,
        report.daemon.rejected,
        report.daemon.dead_lettered
    );
    Ok(report)
}

/// The configured Redis when it answers; otherwise a local `redis-server`, started here
/// and stopped when the demo ends. Returns a line saying which, and the local server.
async fn choose_redis(redis: &mut RedisConfig) -> anyhow::Result<(String, Option<RedisServer>)> {
    let probe = async { CacheLayer::connect(redis).await?.health_check().await };
    if let Ok(Ok(())) = tokio::time::timeout(REDIS_PROBE_TIMEOUT, probe).await {
        return Ok((
            format!("the configured Redis at {}", redis.endpoint()),
            None,
        ));
    }
    let server = match RedisServer::start().await {
        Ok(server) => server,
        Err(e) => bail!(
            "no Redis answers at {} and no local one could be started ({e}).\n\
             Install one with `sudo apt-get install redis-server`, or point REDIS_HOST and \
             REDIS_PORT at a running Redis.",
            redis.endpoint()
        ),
    };
    let prefix = std::mem::take(&mut redis.key_prefix);
    *redis = RedisConfig::from_url(&server.url());
    redis.key_prefix = prefix;
    Ok((
        format!(
            "a local redis-server at 127.0.0.1:{} (started for the demo)",
            server.port()
        ),
        Some(server),
    ))
}

/// The configured listener if its port is free, else any free loopback port.
fn demo_listen(configured: &str) -> String {
    match std::net::TcpListener::bind(configured) {
        Ok(_) => configured.to_owned(),
        Err(_) => "127.0.0.1:0".to_owned(),
    }
}

/// The one-minute window that `elapsed` real time falls in, `window_secs` to a window.
fn window_start(demo_start: DateTime<Utc>, elapsed: Duration, window_secs: u64) -> DateTime<Utc> {
    let minutes = elapsed.as_secs() / window_secs.max(1);
    let base = demo_start.timestamp() - demo_start.timestamp() % 60;
    DateTime::from_timestamp(base, 0).unwrap_or(demo_start)
        + chrono::Duration::minutes(minutes as i64)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The live summary: redrawn in place on a terminal, one line a second otherwise.
struct Screen {
    interactive: bool,
    header: String,
    header_shown: bool,
    last: Option<(Instant, u64)>,
}

impl Screen {
    fn new(status: &Status, redis_note: String) -> Self {
        let shown = |addr: Option<std::net::SocketAddr>| match addr {
            Some(addr) => format!("127.0.0.1:{}", addr.port()),
            None => "(not bound)".to_owned(),
        };
        let (operator, api) = (shown(status.http_addr()), shown(status.api_addr()));
        Self {
            interactive: std::io::stdout().is_terminal(),
            header: format!(
                "cache-layer demo: in-process Kafka, {redis_note}\n\
                 open http://{operator}/metrics  http://{operator}/readyz  http://{api}/v1/trends\n\
                 Ctrl-C stops it",
            ),
            header_shown: false,
            last: None,
        }
    }

    async fn show(
        &mut self,
        cache: &CacheLayer,
        produced: u64,
        daemon: Snapshot,
        elapsed: Duration,
    ) {
        let rate = match self.last.replace((Instant::now(), daemon.consumed)) {
            Some((at, consumed)) => {
                (daemon.consumed - consumed) as f64 / at.elapsed().as_secs_f64().max(0.001)
            }
            None => 0.0,
        };
        let lag = produced.saturating_sub(daemon.acknowledged);
        // librdkafka's mock broker holds a new group's first assignment for 3 s.
        let joining = if daemon.assigned == 0 {
            "   (joining the consumer group: the broker assigns partitions after 3 s)"
        } else {
            ""
        };
        if !self.interactive {
            if !std::mem::replace(&mut self.header_shown, true) {
                println!("{}", self.header);
            }
            println!(
                "t={:>4}s produced={produced} consumed={} rate={rate:.0}/s lag={lag} rejected={} dead_lettered={}{joining}",
                elapsed.as_secs(),
                daemon.consumed,
                daemon.rejected,
                daemon.dead_lettered
            );
            return;
        }
        let trends = cache.get_trending_keywords(8).await.unwrap_or_default();
        let keys = cache.get_cache_stats().await.ok();
        let mut out = format!("\x1b[2J\x1b[H{}\n\n", self.header);
        out += &format!(
            "running {:>4}s   {rate:>8.0} msg/s   lag {lag:>6}   produced {produced}   written {}{joining}\n",
            elapsed.as_secs(),
            daemon.acknowledged
        );
        out += &format!(
            "rejected {}   dead-lettered {}\n",
            daemon.rejected, daemon.dead_lettered
        );
        if let Some(keys) = keys {
            out += &format!(
                "keys: trends {}   users {}   windows {}   memory {}\n",
                keys.trends_keys, keys.users_keys, keys.windows_keys, keys.server.used_memory_human
            );
        }
        out += "\ntop trends (newest window, by rank):\n";
        for entry in &trends {
            out += &format!(
                "  #{:<3} {:<28} frequency {:>8}  growth {:>5.2}\n",
                entry.alert.rank,
                entry.alert.keyword,
                entry.alert.frequency,
                entry.alert.growth_rate
            );
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}
