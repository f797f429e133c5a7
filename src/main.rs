//! The `cache-layer` binary: parses the command line, loads the configuration, installs
//! telemetry and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cache_layer::config::{self, Config};
use cache_layer::{telemetry, CacheLayer};
use clap::Parser;

/// Kafka-to-Redis cache stage for the Bluesky streaming pipeline.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML configuration file; the environment overrides it.
    #[arg(long, short, global = true, env = "CACHE_LAYER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache-layer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (path, required) = match cli.config {
        Some(path) => (path, true),
        None => (config::default_path(), false),
    };
    let config = Config::load(&path, required)?;
    telemetry::init(&config.log);
    let url = config.redis.connection_url()?;
    let cache = CacheLayer::connect(&config.redis).await.with_context(|| {
        format!(
            "cannot reach Redis at {}:{}",
            url.host_str().unwrap_or("?"),
            url.port().unwrap_or(6379)
        )
    })?;
    cache.health_check().await?;
    let stats = cache.get_cache_stats().await?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}
