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
    if !matches!(command, Command::Run) {
        end_quietly_on_a_closed_stdout();
    }
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

/// A command that prints ends quietly when its reader goes away (`cache-layer
/// check-config | head -3`), with the conventional status of a process killed by SIGPIPE,
/// as other Unix tools do. Rust ignores SIGPIPE by default, which turns the closed pipe
/// into a panic in `println!`. The daemon keeps ignoring it: its logs go to stderr, and a
/// log reader that restarts must not stop it.
fn end_quietly_on_a_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the default disposition installs no handler, so no async-signal-safety
    // rule applies; `sigaction` changes the process-wide disposition atomically.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("cache-layer: cannot restore SIGPIPE: {e}");
    }
}
