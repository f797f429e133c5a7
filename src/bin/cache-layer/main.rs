//! The `cache-layer` binary: parses the command line, loads the configuration, installs
//! telemetry and hands over to the library.

mod cli;
mod produce;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::error;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cache-layer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    cli::init_logging(&command, &config);
    let shutdown = CancellationToken::new();
    if matches!(command, Command::Run) {
        if let Err(e) = cache_layer::app::drain_on_signals(shutdown.clone()) {
            eprintln!("cache-layer: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    match cli::dispatch(command, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("cache-layer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
