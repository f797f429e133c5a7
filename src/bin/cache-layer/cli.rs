//! The command line: the daemon (`run`, the default), the operator commands that work
//! on the configured Redis (`stats`, `sweep`, `clear`, `trends`, `trend`, `rebuild`,
//! `check-config`), and `produce`, which sends a file's lines to a topic. Each operator
//! command prints readable text, or JSON with `--json`.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use cache_layer::background::{sweep_once, SweepOutcome};
use cache_layer::cache::{lock_token, CacheLayer};
use cache_layer::config::{self, Config};
use cache_layer::pipeline::{kafka, request_rebuild};
use cache_layer::telemetry;

use crate::produce;

/// Kafka-to-Redis cache stage for the Bluesky streaming pipeline.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The TOML configuration file (default: config/cache-layer.toml when it exists);
    /// the environment overrides it.
    #[arg(long, short, global = true, env = "CACHE_LAYER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default): consume the topics and keep Redis up to date.
    Run,
    /// Print the cache statistics: keys per category, memory, clients, hit ratio.
    Stats(Output),
    /// Run one sweep now (taking the sweep lock) and print what it removed.
    Sweep(Output),
    /// Delete the keys matching PATTERN; it must start with a cache namespace.
    Clear {
        pattern: String,
        #[command(flatten)]
        output: Output,
    },
    /// Print the current trend ranking.
    Trends {
        #[arg(long, default_value_t = 10)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Print one trend's details (the keyword is normalised as on write).
    Trend {
        keyword: String,
        #[command(flatten)]
        output: Output,
    },
    /// Ask the running instances to rebuild the cache from Kafka: each replays its
    /// partitions from SINCE ago (for example after a manual FLUSHDB).
    Rebuild {
        /// How far back to replay, by Kafka message timestamp: `15m`, `2h`, `1d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Duration,
        #[command(flatten)]
        output: Output,
    },
    /// Validate the configuration and print it, secrets masked; exits 1 when invalid.
    CheckConfig(Output),
    /// Print a shell completion script: `cache-layer completions bash > /etc/bash_completion.d/cache-layer`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `cache-layer man > cache-layer.1`.
    Man,
    /// Send the lines of a file (`KEY<TAB>VALUE` or `VALUE`) to a topic.
    Produce {
        #[arg(long)]
        topic: String,
        /// A JSON-lines file; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Loads the configuration the command line points at.
    pub fn load_config(&self) -> Result<Config, config::ConfigError> {
        match &self.config {
            Some(path) => Config::load(path, true),
            None => Config::load(&config::default_path(), false),
        }
    }
}

/// Runs a command. `shutdown` stops the daemon; the others ignore it.
pub async fn dispatch(
    command: Command,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Run => cache_layer::run(config, shutdown).await,
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "cache-layer", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Stats(output) => {
            let stats = connect(&config).await?.get_cache_stats().await?;
            print(output, &stats, || {
                format!(
                    "keys         {} in the database\n  trends     {}\n  users      {}\n  windows    {}\n\
                     memory       {} ({} bytes)\nclients      {}\nhits/misses  {}/{} (hit ratio {:.3})",
                    stats.total_keys,
                    stats.trends_keys,
                    stats.users_keys,
                    stats.windows_keys,
                    stats.server.used_memory_human,
                    stats.server.used_memory,
                    stats.server.connected_clients,
                    stats.server.keyspace_hits,
                    stats.server.keyspace_misses,
                    stats.server.hit_ratio
                )
            })
        }
        Command::Sweep(output) => {
            let cache = connect(&config).await?;
            let outcome = sweep_once(
                &cache,
                config.cache.active_user_window,
                config.sweep.interval,
                &lock_token(),
            )
            .await?;
            print(output, &outcome, || match outcome {
                SweepOutcome::Skipped => "skipped: another instance holds the sweep lock".into(),
                SweepOutcome::Swept(r) => format!(
                    "removed: {} trends, {} users, {} windows; keys without TTL deleted: {}",
                    r.trends_removed,
                    r.users_removed,
                    r.windows_removed,
                    r.trends_without_ttl + r.users_without_ttl + r.windows_without_ttl
                ),
            })
        }
        Command::Clear { pattern, output } => {
            let deleted = connect(&config)
                .await?
                .clear_cache_pattern(&pattern)
                .await?;
            let result = serde_json::json!({ "pattern": pattern, "deleted": deleted });
            print(output, &result, || {
                format!("deleted {deleted} keys matching {pattern:?}")
            })
        }
        Command::Trends { limit, output } => {
            let trends = connect(&config).await?.get_trending_keywords(limit).await?;
            print(output, &trends, || {
                if trends.is_empty() {
                    return "no trends cached".into();
                }
                trends
                    .iter()
                    .map(|t| {
                        format!(
                            "#{:<4} {:<32} frequency {:>8}  growth {:>6.2}  window end {}",
                            t.alert.rank,
                            t.alert.keyword,
                            t.alert.frequency,
                            t.alert.growth_rate,
                            t.alert.window_end
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Trend { keyword, output } => {
            let alert = connect(&config).await?.get_trend_details(&keyword).await?;
            let alert = alert.with_context(|| format!("trend {keyword:?} is not in the cache"))?;
            print(output, &alert, || {
                serde_json::to_string_pretty(&alert).unwrap_or_default()
            })
        }
        Command::Rebuild { since, output } => {
            let cache = connect(&config).await?;
            let partitions = request_rebuild(&config, &cache, since).await?;
            let since = humantime::format_duration(since).to_string();
            let result = serde_json::json!({ "partitions": partitions, "since": since });
            print(output, &result, || {
                format!("requested the rebuild of {partitions} partitions from {since} ago; /readyz shows its progress")
            })
        }
        Command::CheckConfig(output) => print(output, &config, || {
            format!(
                "# the configuration is valid; effective values, secrets masked:\n{}",
                toml::to_string_pretty(&config).unwrap_or_default()
            )
        }),
        Command::Produce { topic, file } => {
            let producer = produce::producer(kafka::client_config(&config))?;
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
    }
}

/// Installs logging for a command: the daemon logs to stderr; the operator commands only
/// print their result, unless `RUST_LOG` asks for more.
pub fn init_logging(command: &Command, config: &Config) {
    match command {
        Command::Run => telemetry::init(&config.log),
        _ if std::env::var_os("RUST_LOG").is_some() => telemetry::init(&config.log),
        _ => {}
    }
}

async fn connect(config: &Config) -> anyhow::Result<CacheLayer> {
    CacheLayer::connect(&config.redis)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis.endpoint()))
}

fn print<T: Serialize>(
    output: Output,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if output.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}
