//! The command line: the daemon (`run`, the default), the operator commands that work
//! on the configured Redis (`stats`, `sweep`, `clear`, `trends`, `trend`, `rebuild`,
//! `check-config`) or on the group's offsets (`offsets`, `offsets reset`), and
//! `produce`, which sends a file's lines to a topic. Each operator command prints
//! readable text, or JSON with `--json`.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use cache_layer::app::Loader;
use cache_layer::background::{sweep_once, SweepOutcome};
use cache_layer::cache::{lock_token, CacheLayer};
use cache_layer::config::{self, Config};
use cache_layer::kafka;
use cache_layer::pipeline::offsets::{self, Move, PartitionOffsets, ResetTo};
use cache_layer::pipeline::request_rebuild;
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
    /// Print the group's committed offset, log end, lag and the committed message's time
    /// for each partition of the source topics; `offsets reset` moves them.
    Offsets {
        #[command(subcommand)]
        reset: Option<OffsetsCommand>,
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

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Move the group's committed offsets: a dry run that prints the moves unless
    /// `--execute` is given, as `kafka-consumer-groups --reset-offsets`; refused while the
    /// group has members.
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_datetime", "by_duration", "to_offset", "shift_by"])))]
pub struct ResetArgs {
    /// To the first offset each log holds: everything is read again.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of each log: what is there is skipped.
    #[arg(long)]
    to_latest: bool,
    /// To the first message at or after this time (RFC 3339: 2026-12-01T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    to_datetime: Option<DateTime<Utc>>,
    /// To the first message at or after this long ago: -15m, -2h, -1d.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = past_duration)]
    by_duration: Option<Duration>,
    /// To this offset in every partition reset, within each log.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// By this many offsets from the committed one (negative: back), within each log; a
    /// partition without a commit moves from its log's start.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Only these source topics, or these partitions of one: `trend-alerts`,
    /// `trend-alerts:0,2` (repeatable; every source topic without it).
    #[arg(long, value_name = "TOPIC[:PARTITIONS]", value_parser = topic_partitions)]
    topic: Vec<(String, Option<Vec<i32>>)>,
    /// Commit the moves; without it the reset is a dry run that prints them.
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Print the moves without committing them (the default).
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    output: Output,
}

impl ResetArgs {
    fn to(&self) -> ResetTo {
        if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(time) = self.to_datetime {
            ResetTo::Time(time)
        } else if let Some(offset) = self.to_offset {
            ResetTo::Offset(offset)
        } else if let Some(shift) = self.shift_by {
            ResetTo::Shift(shift)
        } else {
            let ago = self.by_duration.unwrap_or_default();
            ResetTo::Time(Utc::now() - chrono::TimeDelta::from_std(ago).unwrap_or_default())
        }
    }
}

/// `TOPIC` or `TOPIC:P,P,...`, as `kafka-consumer-groups --topic` takes it.
fn topic_partitions(text: &str) -> Result<(String, Option<Vec<i32>>), String> {
    let Some((topic, partitions)) = text.split_once(':') else {
        return Ok((text.to_owned(), None));
    };
    let partitions = partitions
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<i32>()
                .map_err(|_| format!("{p:?} is not a partition number (TOPIC:0,1,2)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((topic.to_owned(), Some(partitions)))
}

/// A duration back from now, as `kafka-consumer-groups --by-duration` takes it: `-15m`
/// (the sign may be left out: a reset never goes to the future).
fn past_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.strip_prefix('-').unwrap_or(text))
        .map_err(|e| format!("{e}: a duration back from now, such as -15m or -2h"))
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
        self.loader()()
    }

    /// Loads it again, as a SIGHUP asks: the same file, the environment as it is then.
    pub fn loader(&self) -> Loader {
        let path = self.config.clone();
        Box::new(move || match &path {
            Some(path) => Config::load(path, true),
            None => Config::load(&config::default_path(), false),
        })
    }
}

/// Runs a command. `shutdown` stops the daemon, and `reload` loads its configuration
/// again at a SIGHUP; the others ignore both.
pub async fn dispatch(
    command: Command,
    config: Config,
    shutdown: CancellationToken,
    reload: Loader,
) -> anyhow::Result<()> {
    match command {
        Command::Run => cache_layer::app::run_reloading(config, shutdown, reload).await,
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
        Command::Offsets {
            reset: None,
            output,
        } => {
            let offsets = offsets::describe(&config).await?;
            print(output, &offsets, || offsets_table(&config, &offsets))
        }
        Command::Offsets {
            reset: Some(OffsetsCommand::Reset(args)),
            ..
        } => {
            let (to, only) = (args.to(), &args.topic);
            let dry_run = !args.execute;
            let moves = if dry_run {
                offsets::plan_reset(&config, to, only).await?
            } else {
                offsets::reset(&config, to, only).await?
            };
            let result = serde_json::json!({
                "group": config.kafka.group_id,
                "dry_run": dry_run,
                "moves": moves,
            });
            print(args.output, &result, || {
                moves_table(&config, &moves, dry_run)
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

/// `-` for what is not there.
fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn offsets_table(config: &Config, offsets: &[PartitionOffsets]) -> String {
    let mut text = format!(
        "group {}\n{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
        config.kafka.group_id,
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "COMMITTED-UP-TO"
    );
    for p in offsets {
        text.push_str(&format!(
            "\n{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
            p.topic,
            p.partition,
            or_dash(p.committed),
            p.log_end,
            or_dash(p.lag),
            or_dash(
                p.committed_timestamp
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            ),
        ));
    }
    text
}

fn moves_table(config: &Config, moves: &[Move], dry_run: bool) -> String {
    let mut text = format!(
        "{} group {}\n{:<24} {:>9} {:>12} {:>12}",
        if dry_run {
            "dry run, nothing committed (--execute commits): the reset would move"
        } else {
            "committed the new offsets of"
        },
        config.kafka.group_id,
        "TOPIC",
        "PARTITION",
        "FROM",
        "TO"
    );
    for m in moves {
        text.push_str(&format!(
            "\n{:<24} {:>9} {:>12} {:>12}",
            m.topic,
            m.partition,
            or_dash(m.from),
            m.to
        ));
    }
    text
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
