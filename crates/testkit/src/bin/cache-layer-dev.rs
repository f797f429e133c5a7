//! `cache-layer-dev`: the live demo, the synthetic stream generator, and Apache Kafka for
//! the tests to share. They build on the testkit (an in-process Kafka, Apache Kafka as a
//! JVM process, a throwaway redis-server, a Zipf-distributed stream), so they ship apart
//! from the production `cache-layer` binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cache_layer::config::{self, Config};
use cache_layer::telemetry;
use cache_layer_testkit::apache::{self, ApacheKafka};
use cache_layer_testkit::demo::{self, DemoOptions};
use cache_layer_testkit::generate::{self, GeneratorConfig};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// cache-layer's demo and stream generator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file (default: config/cache-layer.toml when it exists);
    /// the environment overrides it.
    #[arg(long, short, global = true, env = "CACHE_LAYER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on this machine: an in-process Kafka, Redis (the configured one, or
    /// a local redis-server), a live synthetic producer and the daemon, with a summary.
    Demo {
        /// Stop by itself after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Messages per second from the synthetic producer.
        #[arg(long, default_value_t = 2_000)]
        rate: u64,
        /// Real seconds per one-minute window.
        #[arg(long, default_value_t = 5)]
        window_secs: u64,
    },
    /// Write a synthetic Bluesky-trend stream as one `TOPIC.jsonl` file per topic.
    Generate {
        /// Where the files go.
        #[arg(long, default_value = "generated")]
        out: PathBuf,
        /// How many messages, over all topics.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Fraction of malformed messages.
        #[arg(long, default_value_t = 0.001)]
        malformed: f64,
        /// Distinct keywords.
        #[arg(long, default_value_t = 50_000)]
        vocabulary: usize,
        /// Messages per one-minute window.
        #[arg(long, default_value_t = 10_000)]
        per_window: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Fetch Apache Kafka with Maven when missing, start one node on free loopback ports,
    /// print its address, and run it until SIGTERM or Ctrl-C (`scripts/test.sh` shares
    /// it among the tests).
    Kafka {
        /// Also write the bootstrap address to this file, once the broker answers.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match &cli.config {
        Some(path) => Config::load(path, true),
        None => Config::load(&config::default_path(), false),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cache-layer-dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo {
            duration,
            rate,
            window_secs,
        } => {
            let options = DemoOptions {
                duration: duration.map(Duration::from_secs),
                rate,
                window_secs,
            };
            run_demo(config, options).await
        }
        Command::Generate {
            out,
            messages,
            malformed,
            vocabulary,
            per_window,
            seed,
        } => {
            let generator = GeneratorConfig {
                seed,
                vocabulary,
                malformed,
                messages_per_window: per_window,
                ..GeneratorConfig::default()
            };
            write_stream(&config, &out, messages, generator)
        }
        Command::Kafka { ready_file } => run_kafka(ready_file).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache-layer-dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One Apache Kafka node until a signal; dropping it stops the JVM.
async fn run_kafka(ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let kafka = ApacheKafka::start().await?;
    eprintln!("Apache Kafka {} at {}", apache::VERSION, kafka.bootstrap());
    if let Some(path) = ready_file {
        std::fs::write(&path, kafka.bootstrap())?;
    }
    let shutdown = CancellationToken::new();
    cache_layer::app::drain_on_signals(shutdown.clone())?;
    shutdown.cancelled().await;
    Ok(())
}

/// The demo logs to a file, so that its screen stays readable.
async fn run_demo(config: Config, options: DemoOptions) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join("cache-layer-demo.log");
    match std::fs::File::create(&path) {
        Ok(file) => {
            telemetry::init_to(&config.log, file);
            eprintln!("demo logs go to {}", path.display());
        }
        Err(e) => eprintln!("demo logs are off: cannot create {}: {e}", path.display()),
    }
    let shutdown = CancellationToken::new();
    cache_layer::app::drain_on_signals(shutdown.clone())?;
    let report = demo::run(config, options, shutdown).await?;
    anyhow::ensure!(
        report.daemon.acknowledged > 0,
        "the demo wrote nothing to Redis; see {}",
        path.display()
    );
    Ok(())
}

fn write_stream(
    config: &Config,
    out: &std::path::Path,
    messages: u64,
    generator: GeneratorConfig,
) -> anyhow::Result<()> {
    let topics = [
        config.topics.trends.as_str(),
        config.topics.user_metrics.as_str(),
        config.topics.windows.as_str(),
    ];
    let counts = generate::write_files(out, topics, messages, generator)?;
    for (topic, n) in topics.iter().zip(counts.per_topic) {
        println!(
            "{n:>10} messages in {}",
            out.join(format!("{topic}.jsonl")).display()
        );
    }
    println!("{:>10} of them malformed", counts.malformed);
    Ok(())
}
