//! `cache-layer-bench`: the end-to-end benchmark, with its ceilings measured in the same
//! run on the same machine. `scripts/bench.sh` builds it in release mode and runs it.
//!
//! It starts a redis-server on loopback, uses a Kafka broker (Apache Kafka as a JVM
//! process of its own by default, librdkafka's in-process mock cluster with
//! `--broker mock`, or any broker given with `--bootstrap`), preloads a synthetic stream, and measures: the Kafka ceiling (a raw consume with the daemon's fetch
//! settings), the Redis ceiling (the same writes by a raw pipelined writer), the release
//! daemon's throughput, CPU and peak RSS with Redis's CPU beside them, the naive and the
//! batched baselines, produce-to-visible latency at fixed rates beside a raw consumer's,
//! and the HTTP listeners under a crowd of readers and slow clients. It refuses to report
//! when the broker lost preloaded messages. `--only` picks scenarios.
//!
//! The modules: [`broker`] (topics, preload, offsets), [`daemon`] (the daemon process),
//! [`scenarios`] (the ceilings and the throughput), [`baselines`], [`latency`],
//! [`http_load`] and [`report`] (what is printed).

mod baselines;
mod broker;
mod cpu;
mod daemon;
mod http_load;
mod latency;
mod observers;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cache_layer::cache::CacheLayer;
use cache_layer::config::RedisConfig;
use cache_layer_testkit::apache::{self, ApacheKafka};
use cache_layer_testkit::generate::{Generated, Generator, GeneratorConfig};
use cache_layer_testkit::{sibling_binary, RedisServer};
use clap::Parser;
use rdkafka::mocking::MockCluster;

use daemon::Target;
use report::{
    Baselines, Ceilings, LargeReport, RebuildReport, Report, ThroughputReport, TransactionalReport,
};

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of cache-layer with its ceilings")]
struct Args {
    /// Messages to preload.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// The broker to start, when no `--bootstrap` is given.
    #[arg(long, value_enum, default_value_t = BrokerKind::Apache)]
    broker: BrokerKind,
    /// A running Kafka-compatible broker to use instead of starting one.
    #[arg(long)]
    bootstrap: Option<String>,
    /// The broker's name in the report.
    #[arg(long)]
    broker_name: Option<String>,
    /// The broker's process id, when it runs as a process of its own, for the CPU it uses
    /// during the latency scenario.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Messages per transaction in the transactional scenario. Kafka Streams commits
    /// every 100 ms: 1,000 messages is its commit at 10,000 msg/s, one marker per
    /// partition written each time.
    #[arg(long, default_value_t = 1_000)]
    transaction_messages: usize,
    /// Messages of about 1 MiB in the large scenario.
    #[arg(long, default_value_t = 400)]
    large_messages: u64,
    /// Messages for the naive baseline (it is slow by design).
    #[arg(long, default_value_t = 50_000)]
    naive_messages: u64,
    /// Produce rates for the latency scenario, messages/s.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000u64, 60_000, 100_000])]
    rates: Vec<u64>,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// The daemons' and the raw consumers' `fetch.wait.max.ms`, the same for all: the
    /// mock broker holds each fetch that long even when data arrives, where Apache Kafka
    /// answers as soon as it has data.
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u64,
    /// The scenarios to run (all by default).
    #[arg(long, value_delimiter = ',', default_values_t = Scenario::ALL)]
    only: Vec<Scenario>,
    /// Concurrent readers of `/v1/trends?limit=1000` in the HTTP load scenario.
    #[arg(long, default_value_t = 4_000)]
    http_readers: usize,
    /// Slow clients (slowloris) in the HTTP load scenario.
    #[arg(long, default_value_t = 2_000)]
    http_slow_clients: usize,
    /// The live stream's rate during the HTTP load scenario, messages/s.
    #[arg(long, default_value_t = 20_000)]
    http_rate: u64,
    /// Seconds after the crowd of readers before the resident set is read again.
    #[arg(long, default_value_t = 30)]
    http_settle_secs: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The daemon binary (default: `cache-layer` beside this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
}

/// The broker a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BrokerKind {
    /// Apache Kafka (`cache_layer_testkit::apache::VERSION`), one KRaft node in a JVM of
    /// its own, fetched with Maven when missing.
    Apache,
    /// librdkafka's in-process mock cluster (about 5 MB per partition; no lookup by time).
    Mock,
}

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    /// The Kafka and Redis ceilings.
    Ceilings,
    /// The daemon over the preloaded stream.
    Throughput,
    /// The daemon over the same stream preloaded as an exactly-once upstream writes it,
    /// in transactions of `--transaction-messages`.
    Transactional,
    /// The baselines: one awaited round trip per message, and one pipeline per batch.
    Naive,
    /// The daemon over the preloaded stream, then Redis restarted empty: the rebuild.
    Rebuild,
    /// Produce-to-visible latency at `--rates`.
    Latency,
    /// The HTTP listeners under a crowd of readers and slow clients.
    Http,
    /// The daemon over a backlog of messages near `batch.max_message_bytes` (trend
    /// alerts of about 1 MiB), with its default `batch.max_bytes`: its peak RSS.
    Large,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Ceilings,
        Scenario::Throughput,
        Scenario::Transactional,
        Scenario::Naive,
        Scenario::Rebuild,
        Scenario::Latency,
        Scenario::Http,
        Scenario::Large,
    ];
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

/// How many turns of the plain and the transactional stream the transactional scenario
/// takes.
const TRANSACTIONAL_ROUNDS: usize = 3;

async fn bench(args: Args) -> anyhow::Result<()> {
    let mut redis = RedisServer::start()
        .await
        .context("cannot start redis-server")?;
    let mut redis_conn = scenarios::connect(&redis).await?;
    let (mock, apache) = match (&args.bootstrap, args.broker) {
        (Some(_), _) => (None, None),
        (None, BrokerKind::Mock) => (Some(MockCluster::new(1)?), None),
        (None, BrokerKind::Apache) => {
            eprintln!("starting Apache Kafka {}", apache::VERSION);
            (None, Some(ApacheKafka::start().await?))
        }
    };
    let bootstrap = match (&args.bootstrap, &mock, &apache) {
        (Some(b), _, _) => b.clone(),
        (None, Some(m), _) => m.bootstrap_servers(),
        (None, None, Some(a)) => a.bootstrap(),
        (None, None, None) => unreachable!("a broker is given or started"),
    };
    let mut report = Report {
        broker: args
            .broker_name
            .clone()
            .unwrap_or_else(|| match (&args.bootstrap, &apache) {
                (Some(b), _) => format!("external broker at {b}"),
                (None, Some(_)) => format!(
                    "Apache Kafka {} (KRaft, one node as broker and controller, own JVM: {})",
                    apache::VERSION,
                    apache::JVM_SETTINGS
                ),
                (None, None) => "librdkafka mock cluster (in-process)".into(),
            }),
        messages: args.messages,
        partitions: args.partitions,
        ..Report::default()
    };
    let runs = |scenario| args.only.contains(&scenario);
    let target = Target {
        daemon: args
            .daemon
            .clone()
            .unwrap_or_else(|| sibling_binary("cache-layer")),
        bootstrap: bootstrap.clone(),
        fetch_wait_ms: args.fetch_wait_ms,
        processes: cpu::Processes {
            broker: args
                .broker_pid
                .or(apache.as_ref().and_then(ApacheKafka::pid)),
            daemon: None,
        },
        deletes_topics: mock.is_none(),
    };
    let cache = CacheLayer::connect(&RedisConfig::from_url(&redis.url())).await?;
    let preloads = [
        Scenario::Ceilings,
        Scenario::Throughput,
        Scenario::Transactional,
        Scenario::Naive,
        Scenario::Rebuild,
    ];
    if preloads.into_iter().any(runs) {
        broker::create_topics(mock.as_ref(), &bootstrap, args.partitions, "bench").await?;
        eprintln!("generating {} messages", args.messages);
        let mut generator = Generator::new(GeneratorConfig::default());
        let stream: Arc<Vec<Generated>> = Arc::new(
            (0..args.messages)
                .map(|_| generator.next_message())
                .collect(),
        );
        report.malformed = stream.iter().filter(|m| m.malformed).count() as u64;

        eprintln!("preloading");
        let started = Instant::now();
        broker::preload(&bootstrap, "bench", Arc::clone(&stream), None).await?;
        report.preload_secs = started.elapsed().as_secs_f64();
        if mock.is_some() {
            broker::verify_present(&bootstrap, "bench", args.partitions, &stream).await?;
        }

        if runs(Scenario::Ceilings) {
            eprintln!("Kafka ceiling: raw consume");
            let kafka =
                scenarios::kafka_ceiling(&bootstrap, args.fetch_wait_ms, args.messages).await?;
            eprintln!("Redis ceiling: raw pipelined writes");
            let written = scenarios::redis_ceiling(&cache, &mut redis_conn, &stream).await?;
            report.ceilings = Some(Ceilings {
                kafka_ceiling_msgs_per_sec: kafka.msgs_per_sec,
                kafka_ceiling_cpu_us_per_msg: kafka.cpu_us_per_msg,
                redis_ceiling_msgs_per_sec: written.msgs_per_sec,
                redis_ceiling_cpu_secs_per_million: written.redis_cpu_secs_per_million,
            });
            scenarios::flush(&mut redis_conn).await?;
        }

        if runs(Scenario::Throughput) {
            eprintln!("daemon throughput");
            let throughput = scenarios::daemon_throughput(
                &target,
                &redis,
                "bench",
                "bench-daemon",
                args.messages,
            )
            .await?;
            report.throughput = Some(ThroughputReport::new(&throughput, args.messages));
            scenarios::verify_written(&redis, &stream).await?;
            scenarios::flush(&mut redis_conn).await?;
        }

        if runs(Scenario::Transactional) {
            eprintln!(
                "preloading the stream again in transactions of {} messages",
                args.transaction_messages
            );
            broker::create_topics(mock.as_ref(), &bootstrap, args.partitions, "txn").await?;
            let started = Instant::now();
            broker::preload(
                &bootstrap,
                "txn",
                Arc::clone(&stream),
                Some(args.transaction_messages),
            )
            .await?;
            let preload_secs = started.elapsed().as_secs_f64();
            // Like with like: the plain and the transactional stream in turns, each by a
            // group of its own, the same broker and Redis; the medians compared.
            let (mut plain, mut transactional) = (Vec::new(), Vec::new());
            for round in 0..TRANSACTIONAL_ROUNDS {
                for (prefix, runs) in [("bench", &mut plain), ("txn", &mut transactional)] {
                    eprintln!("daemon throughput, round {round}, {prefix} stream");
                    let group = format!("{prefix}-daemon-{round}");
                    let throughput = scenarios::daemon_throughput(
                        &target,
                        &redis,
                        prefix,
                        &group,
                        args.messages,
                    )
                    .await?;
                    scenarios::verify_written(&redis, &stream).await?;
                    scenarios::flush(&mut redis_conn).await?;
                    runs.push(throughput);
                }
            }
            report.transactional = Some(TransactionalReport::new(
                args.transaction_messages,
                preload_secs,
                &plain,
                &transactional,
                args.messages,
            ));
            if target.deletes_topics {
                broker::delete_topics(&bootstrap, "txn").await?;
            }
        }

        if runs(Scenario::Naive) {
            eprintln!("naive baseline: one awaited round trip per message");
            let sample = &stream[..stream.len().min(args.naive_messages as usize)];
            let naive_msgs_per_sec = baselines::naive(&cache, sample).await?;
            scenarios::flush(&mut redis_conn).await?;
            eprintln!("batched baseline: one pipeline of plain commands per polled batch");
            report.baselines = Some(Baselines {
                naive_msgs_per_sec,
                batched_msgs_per_sec: baselines::batched(
                    &bootstrap,
                    &redis,
                    args.fetch_wait_ms,
                    args.messages,
                )
                .await?,
            });
            scenarios::flush(&mut redis_conn).await?;
        }

        if runs(Scenario::Rebuild) && mock.is_some() {
            // It answers every lookup by time with "no such message": nothing to replay.
            eprintln!(
                "rebuild: not measured on the mock cluster, which cannot look offsets up by time"
            );
        } else if runs(Scenario::Rebuild) {
            eprintln!("rebuild: the daemon over the stream, then Redis restarted empty");
            let rebuild = scenarios::daemon_rebuild(&target, &mut redis, args.messages).await?;
            report.rebuild = Some(RebuildReport::new(&rebuild, args.messages));
            scenarios::verify_written(&redis, &stream).await?;
            // The restart broke the connection the later scenarios flush with.
            redis_conn = scenarios::connect(&redis).await?;
            scenarios::flush(&mut redis_conn).await?;
        }
    }

    for rate in args
        .rates
        .iter()
        .copied()
        .filter(|_| runs(Scenario::Latency))
    {
        eprintln!("latency at {rate} messages/s");
        let prefix = format!("lat{rate}");
        for prefix in latency::prefixes(&prefix) {
            broker::create_topics(mock.as_ref(), &bootstrap, args.partitions, &prefix).await?;
        }
        let measured = latency::latency(&target, &redis, &prefix, rate, args.latency_secs).await?;
        report.latency.push(measured);
        scenarios::flush(&mut redis_conn).await?;
    }

    if runs(Scenario::Http) {
        eprintln!(
            "HTTP under load, beside a stream of {} msg/s",
            args.http_rate
        );
        broker::create_topics(mock.as_ref(), &bootstrap, args.partitions, "http").await?;
        let load = http_load::Load {
            readers: args.http_readers,
            slow_clients: args.http_slow_clients,
            rate: args.http_rate,
            settle: std::time::Duration::from_secs(args.http_settle_secs),
        };
        report.http = Some(http_load::http_load(&target, &redis, "http", load).await?);
        scenarios::flush(&mut redis_conn).await?;
    }

    if runs(Scenario::Large) {
        eprintln!(
            "large messages: {} trend alerts of about 1 MiB",
            args.large_messages
        );
        broker::create_topics(mock.as_ref(), &bootstrap, args.partitions, "large").await?;
        let stream = Arc::new(scenarios::large_alerts(args.large_messages));
        broker::preload(&bootstrap, "large", Arc::clone(&stream), None).await?;
        let throughput = scenarios::daemon_throughput(
            &target,
            &redis,
            "large",
            "large-daemon",
            args.large_messages,
        )
        .await?;
        scenarios::verify_written(&redis, &stream).await?;
        scenarios::flush(&mut redis_conn).await?;
        report.large = Some(LargeReport::new(&throughput, &stream));
        if target.deletes_topics {
            broker::delete_topics(&bootstrap, "large").await?;
        }
    }

    report.settle();
    report.print_table();
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}
