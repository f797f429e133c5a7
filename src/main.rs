//! The `cache-layer` binary: parses the command line, loads the configuration, installs
//! telemetry and hands over to the library. OS signals are read here and nowhere else.

use std::process::ExitCode;

use cache_layer::cli::{self, Cli, Command};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

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
    if cli::is_long_running(&command) {
        if let Err(e) = spawn_signal_handler(shutdown.clone()) {
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

/// The first SIGTERM or SIGINT starts a drain; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) -> std::io::Result<()> {
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
