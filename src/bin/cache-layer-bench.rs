//! `cache-layer-bench`: the end-to-end benchmark, with its ceilings measured in the same
//! run on the same machine. `scripts/bench.sh` builds it in release mode and runs it.
//!
//! It starts a redis-server on loopback, uses a Kafka broker (librdkafka's in-process mock
//! cluster, or any broker given with `--bootstrap`, such as tansu), preloads a synthetic
//! stream, and measures: the Kafka ceiling (a raw consume), the Redis ceiling (the same
//! writes by a raw pipelined writer), the release daemon's throughput and peak RSS, the
//! naive one-round-trip-per-message baseline, and produce-to-visible latency at fixed
//! rates. It refuses to report when the broker lost preloaded messages.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use cache_layer::cache::{CacheLayer, WriteSet};
use cache_layer::config::{RedisConfig, Ttls};
use cache_layer::models::{decode, Message, MessageKind};
use cache_layer::redis_server::RedisServer;
use cache_layer::tools::generate::{Generated, Generator, GeneratorConfig};
use chrono::Utc;
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

const TOPICS: [(&str, MessageKind); 3] = [
    ("trend-alerts", MessageKind::Trends),
    ("user-metrics", MessageKind::UserMetrics),
    ("keyword-windows", MessageKind::Windows),
];

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of cache-layer with its ceilings")]
struct Args {
    /// Messages to preload.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// A Kafka-compatible broker to use instead of the in-process mock cluster.
    #[arg(long)]
    bootstrap: Option<String>,
    /// The broker's name in the report.
    #[arg(long)]
    broker_name: Option<String>,
    /// Messages for the naive baseline (it is slow by design).
    #[arg(long, default_value_t = 50_000)]
    naive_messages: u64,
    /// Produce rates for the latency scenario, messages/s.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000u64, 100_000])]
    rates: Vec<u64>,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// The daemons' `fetch.wait.max.ms`: the mock broker and tansu hold each fetch that
    /// long even when data arrives, where Apache Kafka answers at once.
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The daemon binary (default: `cache-layer` beside this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    broker: String,
    messages: u64,
    malformed: u64,
    partitions: i32,
    preload_secs: f64,
    kafka_ceiling_msgs_per_sec: f64,
    redis_ceiling_msgs_per_sec: f64,
    daemon_msgs_per_sec: f64,
    daemon_secs: f64,
    daemon_redis_commands_per_msg: f64,
    daemon_pipelines: u64,
    daemon_peak_rss_mib: f64,
    naive_msgs_per_sec: f64,
    ratio_to_lower_ceiling: f64,
    ratio_to_naive: f64,
    latency: Vec<LatencyReport>,
}

#[derive(Debug, Default, Serialize)]
struct LatencyReport {
    rate: u64,
    achieved_rate: f64,
    probes: usize,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("cannot start redis-server")?;
    let mock = match &args.bootstrap {
        Some(_) => None,
        None => Some(MockCluster::new(1)?),
    };
    let bootstrap = match (&args.bootstrap, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => m.bootstrap_servers(),
        (None, None) => unreachable!(),
    };
    let mut report = Report {
        broker: args
            .broker_name
            .clone()
            .unwrap_or_else(|| match &args.bootstrap {
                Some(b) => format!("external broker at {b}"),
                None => "librdkafka mock cluster (in-process)".into(),
            }),
        messages: args.messages,
        partitions: args.partitions,
        ..Report::default()
    };
    create_topics(mock.as_ref(), &bootstrap, args.partitions, "bench").await?;

    eprintln!("generating {} messages", args.messages);
    let mut generator = Generator::new(GeneratorConfig::default());
    let stream: Vec<Generated> = (0..args.messages)
        .map(|_| generator.next_message())
        .collect();
    report.malformed = stream.iter().filter(|m| m.malformed).count() as u64;

    eprintln!("preloading");
    let started = Instant::now();
    preload(&bootstrap, "bench", &stream)?;
    report.preload_secs = started.elapsed().as_secs_f64();
    if mock.is_some() {
        verify_present(&bootstrap, "bench", args.partitions, &stream)?;
    }

    eprintln!("Kafka ceiling: raw consume");
    report.kafka_ceiling_msgs_per_sec = kafka_ceiling(&bootstrap, args.messages)?;

    eprintln!("Redis ceiling: raw pipelined writes");
    let cache = CacheLayer::connect(&RedisConfig::from_url(&redis.url())).await?;
    report.redis_ceiling_msgs_per_sec = redis_ceiling(&cache, &stream).await?;
    flush(&redis)?;

    eprintln!("daemon throughput");
    let target = Target {
        daemon: args.daemon.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .expect("own path")
                .with_file_name("cache-layer")
        }),
        bootstrap: bootstrap.clone(),
        fetch_wait_ms: args.fetch_wait_ms,
    };
    let throughput = daemon_throughput(&target, &redis, args.messages).await?;
    report.daemon_secs = throughput.secs;
    report.daemon_msgs_per_sec = args.messages as f64 / throughput.secs;
    report.daemon_redis_commands_per_msg = throughput.redis_commands as f64 / args.messages as f64;
    report.daemon_pipelines = throughput.pipelines;
    report.daemon_peak_rss_mib = throughput.peak_rss_kib as f64 / 1024.0;
    verify_written(&redis, &stream)?;
    flush(&redis)?;

    eprintln!("naive baseline: one awaited round trip per message");
    let sample = &stream[..stream.len().min(args.naive_messages as usize)];
    report.naive_msgs_per_sec = naive(&cache, sample).await?;
    flush(&redis)?;

    for rate in args.rates.iter().copied() {
        eprintln!("latency at {rate} messages/s");
        let topics_prefix = format!("lat{rate}");
        create_topics(mock.as_ref(), &bootstrap, args.partitions, &topics_prefix).await?;
        report
            .latency
            .push(latency(&target, &redis, &topics_prefix, rate, args.latency_secs).await?);
        flush(&redis)?;
    }

    let lower = report
        .kafka_ceiling_msgs_per_sec
        .min(report.redis_ceiling_msgs_per_sec);
    report.ratio_to_lower_ceiling = report.daemon_msgs_per_sec / lower;
    report.ratio_to_naive = report.daemon_msgs_per_sec / report.naive_msgs_per_sec;
    print_table(&report);
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

fn topic_name(prefix: &str, topic: &str) -> String {
    format!("{prefix}-{topic}")
}

/// Creates the source topics and the dead-letter topic under `prefix`: through the mock
/// cluster's own API, or the Kafka admin API of an external broker.
async fn create_topics(
    mock: Option<&MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    bootstrap: &str,
    partitions: i32,
    prefix: &str,
) -> anyhow::Result<()> {
    let names: Vec<String> = TOPICS
        .iter()
        .map(|(t, _)| topic_name(prefix, t))
        .chain([topic_name(prefix, "dlq")])
        .collect();
    if let Some(mock) = mock {
        for name in &names {
            mock.create_topic(name, partitions, 1)?;
        }
        return Ok(());
    }
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        if let Err((topic, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create {topic}: {code}");
            }
        }
    }
    Ok(())
}

fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000");
    config
}

/// Counts failed deliveries, which a plain `BaseProducer` would drop silently.
#[derive(Default)]
struct DeliveryCheck {
    failed: std::sync::atomic::AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Produces the whole stream and waits for every delivery; any failed delivery fails it.
fn preload(bootstrap: &str, prefix: &str, stream: &[Generated]) -> anyhow::Result<()> {
    let producer: BaseProducer<DeliveryCheck> =
        producer_config(bootstrap).create_with_context(DeliveryCheck::default())?;
    let topics: HashMap<MessageKind, String> = TOPICS
        .iter()
        .map(|(t, k)| (*k, topic_name(prefix, t)))
        .collect();
    for message in stream {
        let mut record = BaseRecord::to(&topics[&message.kind])
            .key(&message.key)
            .payload(&message.payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    ensure!(
        failed == 0,
        "{failed} deliveries failed, the first with: {}",
        producer
            .context()
            .first_error
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or_default()
    );
    Ok(())
}

/// Refuses to go on when the broker does not hold every preloaded message (the mock
/// cluster silently drops the oldest beyond about 5 MB per partition).
fn verify_present(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
    stream: &[Generated],
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for (topic, kind) in TOPICS {
        let expected = stream.iter().filter(|m| m.kind == kind).count() as i64;
        let mut held = 0;
        let mut marks = Vec::new();
        for partition in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(
                &topic_name(prefix, topic),
                partition,
                Duration::from_secs(10),
            )?;
            held += high - low;
            marks.push(format!("{partition}:{low}..{high}"));
        }
        ensure!(
            held == expected,
            "the broker holds {held} of the {expected} messages produced to {topic} (watermarks {}): it dropped some \
             (librdkafka's mock cluster keeps about 5 MB per partition). Use fewer --messages, \
             more --partitions, or a real broker with --bootstrap (scripts/bench.sh starts tansu).",
            marks.join(" ")
        );
    }
    Ok(())
}

/// Reads every preloaded message with no Redis at all.
fn kafka_ceiling(bootstrap: &str, expected: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-raw-consume")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let topics: Vec<String> = TOPICS.iter().map(|(t, _)| topic_name("bench", t)).collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
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
}

/// Decodes the valid messages of a stream, outside any timing.
fn decoded(stream: &[Generated]) -> Vec<Message> {
    stream
        .iter()
        .filter_map(|m| decode(m.kind, m.payload.as_bytes()).ok())
        .collect()
}

fn ttls() -> Ttls {
    let ttl = Duration::from_secs(3_600);
    Ttls {
        trends: ttl,
        users: ttl,
        windows: ttl,
    }
}

/// The same writes as the daemon's, in batches of 5,000, by a raw pipelined writer.
async fn redis_ceiling(cache: &CacheLayer, stream: &[Generated]) -> anyhow::Result<f64> {
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
async fn naive(cache: &CacheLayer, stream: &[Generated]) -> anyhow::Result<f64> {
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

fn flush(redis: &RedisServer) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    redis::cmd("FLUSHALL").exec(&mut conn)?;
    redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut conn)?;
    Ok(())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// What the daemons of a run start against.
struct Target {
    daemon: PathBuf,
    bootstrap: String,
    fetch_wait_ms: u64,
}

/// The release daemon as a separate process, configured through the environment.
struct Daemon {
    child: Child,
    http_port: u16,
}

impl Daemon {
    fn spawn(
        target: &Target,
        redis: &RedisServer,
        prefix: &str,
        group: &str,
        max_wait_ms: u64,
    ) -> anyhow::Result<Self> {
        let http_port = free_port();
        let mut command = Command::new(&target.daemon);
        // The mock broker (and tansu) hold every fetch for fetch.wait.max.ms even when
        // data arrives meanwhile, where Apache Kafka answers at once: keep the wait short.
        command.env(
            "CACHE_LAYER__KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS",
            target.fetch_wait_ms.to_string(),
        );
        let bootstrap = &target.bootstrap;
        let child = command
            .arg("run")
            // No file: the built-in defaults, then these variables.
            .env_remove("CACHE_LAYER_CONFIG")
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("CACHE_LAYER__KAFKA__GROUP_ID", group)
            .env(
                "CACHE_LAYER__TOPICS__TRENDS",
                topic_name(prefix, "trend-alerts"),
            )
            .env(
                "CACHE_LAYER__TOPICS__USER_METRICS",
                topic_name(prefix, "user-metrics"),
            )
            .env(
                "CACHE_LAYER__TOPICS__WINDOWS",
                topic_name(prefix, "keyword-windows"),
            )
            .env(
                "CACHE_LAYER__TOPICS__DEAD_LETTER",
                topic_name(prefix, "dlq"),
            )
            .env("CACHE_LAYER__REDIS__URL", redis.url())
            .env(
                "CACHE_LAYER__HTTP__LISTEN",
                format!("127.0.0.1:{http_port}"),
            )
            .env("CACHE_LAYER__BATCH__MAX_WAIT_MS", max_wait_ms.to_string())
            .env("CACHE_LAYER__CACHE__DEFAULT_TTL", "3600")
            .env("CACHE_LAYER__LOG__LEVEL", "error")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run the daemon {}", target.daemon.display()))?;
        Ok(Self { child, http_port })
    }

    /// The sum of a metric over its labels, from a scrape; 0 before it exists.
    async fn metric(&self, name: &str) -> f64 {
        let Ok(response) = http_get(self.http_port, "/metrics").await else {
            return 0.0;
        };
        response
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("VmHWM:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
                })
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = self.child.wait()?;
        ensure!(status.success(), "the daemon exited with {status}");
        Ok(())
    }
}

/// A minimal HTTP GET on loopback, enough for /metrics.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

struct Throughput {
    secs: f64,
    redis_commands: u64,
    pipelines: u64,
    peak_rss_kib: u64,
}

fn redis_calls(redis: &RedisServer) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
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

/// A client that reads a group's committed offsets; made once, so that polling it costs
/// one request and not a new librdkafka client (which would slow the measured daemon).
fn offsets_reader(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?)
}

fn committed(consumer: &BaseConsumer, prefix: &str, partitions: i32) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for (topic, _) in TOPICS {
        for partition in 0..partitions {
            tpl.add_partition(&topic_name(prefix, topic), partition);
        }
    }
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum())
}

/// Runs the daemon on the preloaded topics; times from its first consumed message until
/// every offset is committed.
async fn daemon_throughput(
    target: &Target,
    redis: &RedisServer,
    messages: u64,
) -> anyhow::Result<Throughput> {
    let bootstrap = target.bootstrap.as_str();
    let calls_before = redis_calls(redis)?;
    let daemon = Daemon::spawn(target, redis, "bench", "bench-daemon", 50)?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while daemon.metric("cache_layer_messages_consumed_total").await == 0.0 {
        ensure!(Instant::now() < deadline, "the daemon never consumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let partitions = partition_count(bootstrap, "bench")?;
    let reader = offsets_reader(bootstrap, "bench-daemon")?;
    loop {
        ensure!(
            Instant::now() < deadline,
            "the daemon did not finish in time"
        );
        if committed(&reader, "bench", partitions)? == messages as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let pipelines = daemon.metric("cache_layer_batches_written_total").await as u64;
    let peak_rss_kib = daemon.peak_rss_kib();
    daemon.stop()?;
    Ok(Throughput {
        secs,
        redis_commands: redis_calls(redis)? - calls_before,
        pipelines,
        peak_rss_kib,
    })
}

fn partition_count(bootstrap: &str, prefix: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topic = topic_name(prefix, TOPICS[0].0);
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32))
}

/// Every valid message's key is in Redis: nothing was lost on the way.
fn verify_written(redis: &RedisServer, stream: &[Generated]) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis.url())?.get_connection()?;
    let mut windows: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut trends = std::collections::BTreeSet::new();
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
    let ranked: usize = redis::cmd("ZCARD").arg("trends:current").query(&mut conn)?;
    ensure!(
        ranked == trends.len(),
        "trends:current holds {ranked} of {} keywords",
        trends.len()
    );
    for (window, keywords) in windows {
        let held: usize = redis::cmd("HLEN")
            .arg(format!("windows:{window}"))
            .query(&mut conn)?;
        ensure!(
            held == keywords.len(),
            "windows:{window} holds {held} of {} keywords",
            keywords.len()
        );
    }
    Ok(())
}

/// Produces at `rate` for `secs`, with a probe trend alert every 10 ms whose key is polled
/// in Redis: the time from produce to visible.
async fn latency(
    target: &Target,
    redis: &RedisServer,
    prefix: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<LatencyReport> {
    let bootstrap = target.bootstrap.as_str();
    let group = format!("{prefix}-daemon");
    let daemon = Daemon::spawn(target, redis, prefix, &group, 10)?;
    // An upstream producer tuned for latency rather than for bulk loading.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))?;
    // Let the daemon join its group before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    let warmup_key = "latency-warmup";
    let warmup = format!(
        r#"{{"keyword":"{warmup_key}","frequency":1,"growth_rate":1,"confidence_score":0.5,"window_start":"2025-01-01T00:00:00Z","window_end":"2025-01-01T00:01:00Z","sample_posts":[],"unique_authors":1,"rank":1}}"#
    );
    let trends_topic = topic_name(prefix, "trend-alerts");
    let mut conn = redis::aio::ConnectionManager::new(redis::Client::open(redis.url())?).await?;
    loop {
        let _ = producer.send(
            BaseRecord::to(&trends_topic)
                .key(warmup_key)
                .payload(&warmup),
        );
        producer.flush(Duration::from_secs(5))?;
        let seen: bool = redis::cmd("EXISTS")
            .arg(format!("trends:keyword:{warmup_key}"))
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
    let topics: HashMap<MessageKind, String> = TOPICS
        .iter()
        .map(|(t, k)| (*k, topic_name(prefix, t)))
        .collect();
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
                if producer
                    .send(
                        BaseRecord::to(&trends_topic)
                            .key(&keyword)
                            .payload(&payload),
                    )
                    .is_ok()
                {
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
                pipe.exists(format!("trends:keyword:{keyword}"));
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
    producer.flush(Duration::from_secs(30))?;
    daemon.stop()?;
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(LatencyReport {
        rate,
        achieved_rate,
        probes: latencies.len(),
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
    })
}

fn print_table(r: &Report) {
    println!("broker: {}", r.broker);
    println!(
        "messages: {} ({} malformed), {} partitions per topic, preload {:.1} s",
        r.messages, r.malformed, r.partitions, r.preload_secs
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| Kafka ceiling (raw consume) | {:.0} msg/s |",
        r.kafka_ceiling_msgs_per_sec
    );
    println!(
        "| Redis ceiling (raw pipelined writes) | {:.0} msg/s |",
        r.redis_ceiling_msgs_per_sec
    );
    println!(
        "| daemon throughput | {:.0} msg/s ({:.2} s) |",
        r.daemon_msgs_per_sec, r.daemon_secs
    );
    println!(
        "| daemon Redis commands per message | {:.3} ({} pipelines) |",
        r.daemon_redis_commands_per_msg, r.daemon_pipelines
    );
    println!("| daemon peak RSS | {:.1} MiB |", r.daemon_peak_rss_mib);
    println!(
        "| naive baseline (1 round trip/message) | {:.0} msg/s |",
        r.naive_msgs_per_sec
    );
    println!(
        "| daemon / min(ceilings) | {:.2} |",
        r.ratio_to_lower_ceiling
    );
    println!("| daemon / naive | {:.1}x |", r.ratio_to_naive);
    for l in &r.latency {
        println!(
            "| latency at {} msg/s (achieved {:.0}) | p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms ({} probes) |",
            l.rate, l.achieved_rate, l.p50_ms, l.p99_ms, l.p999_ms, l.probes
        );
    }
}
