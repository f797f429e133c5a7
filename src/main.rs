//! The `cache-layer` binary: parses the command line, loads the configuration, installs
//! telemetry and hands over to the library. OS signals are read here and nowhere else.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cache_layer::config::{self, Config};
use cache_layer::dead_letter::producer_config;
use cache_layer::telemetry;
use cache_layer::tools::{generate, produce};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Kafka-to-Redis cache stage for the Bluesky streaming pipeline.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; the environment overrides it.
    #[arg(long, short, global = true, env = "CACHE_LAYER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default): consume the topics and keep Redis up to date.
    Run,
    /// Send the lines of a file (`KEY<TAB>VALUE` or `VALUE`) to a topic.
    Produce {
        #[arg(long)]
        topic: String,
        /// A JSON-lines file; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("cache-layer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let (path, required) = match cli.config {
        Some(path) => (path, true),
        None => (config::default_path(), false),
    };
    let config = Config::load(&path, required)?;
    telemetry::init(&config.log);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone())?;
            cache_layer::run(config, shutdown).await
        }
        Command::Produce { topic, file } => {
            let producer = produce::producer(producer_config(&config))?;
            let sent = if file.as_os_str() == "-" {
                produce::produce_lines(&producer, &topic, std::io::stdin().lock()).await?
            } else {
                let reader =
                    File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
                produce::produce_lines(&producer, &topic, BufReader::new(reader)).await?
            };
            println!("sent {sent} messages to {topic}");
            Ok(())
        }
        Command::Generate {
            out,
            messages,
            malformed,
            vocabulary,
            per_window,
            seed,
        } => {
            let topics = [
                config.topics.trends.as_str(),
                config.topics.user_metrics.as_str(),
                config.topics.windows.as_str(),
            ];
            let generator = generate::GeneratorConfig {
                seed,
                vocabulary,
                malformed,
                messages_per_window: per_window,
                ..generate::GeneratorConfig::default()
            };
            let counts = generate::write_files(&out, topics, messages, generator)?;
            for (topic, n) in topics.iter().zip(counts.per_topic) {
                println!(
                    "{n:>10} messages in {}",
                    out.join(format!("{topic}.jsonl")).display()
                );
            }
            println!("{:>10} of them malformed", counts.malformed);
            Ok(())
        }
    }
}

/// The first SIGTERM or SIGINT starts a drain; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "draining; a second signal exits at once"),
            _ = int.recv() => info!(signal = "SIGINT", "draining; a second signal exits at once"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        error!("second signal: exiting without draining; unwritten messages are read again after a restart");
        std::process::exit(130);
    });
    Ok(())
}
