//! The `cache-layer` binary: parses the command line, loads the configuration, installs
//! telemetry and hands over to the library.

mod cli;
mod produce;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use cache_layer::config::HttpConfig;

use cli::{Cli, Command};

/// jemalloc, as Vector and TiKV use it; BENCHMARKS.md has the measurements. glibc's
/// malloc kept the memory of a crowd of HTTP readers long after they left, where
/// jemalloc's background thread returns pages unused for a second to the system; and one
/// arena rather than one per thread and core keeps librdkafka's buffers, allocated on its
/// threads and freed on the daemon's, from fragmenting the heap.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The allocator's settings, read by jemalloc at start (`_RJEM_MALLOC_CONF` still wins).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

/// How long the exit waits for Kafka calls still blocking a thread of the runtime.
const EXIT_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cache-layer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // The drain kept to kafka.shutdown_timeout_ms. A Kafka call still blocking one of
    // the runtime's threads (a commit or a lookup that a hung broker never answers) is
    // left behind: dropping the runtime would wait for it without a bound.
    runtime.shutdown_timeout(EXIT_GRACE);
    code
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cache-layer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reload = cli.loader();
    let command = cli.command.unwrap_or(Command::Run);
    if !matches!(command, Command::Run) {
        end_quietly_on_a_closed_stdout();
    }
    cli::init_logging(&command, &config);
    let shutdown = CancellationToken::new();
    if matches!(command, Command::Run) {
        raise_open_files_limit(&config.http);
        if let Err(e) = cache_layer::app::drain_on_signals(shutdown.clone()) {
            eprintln!("cache-layer: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    match cli::dispatch(command, config, shutdown, reload).await {
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

/// Files the daemon needs besides its API connections: the operator listener's, Kafka's
/// and Redis's sockets, its logs.
const FILES_BESIDES_API: u64 = 256;

/// Raises the soft limit on open files (commonly from 1,024 to 524,288), so that
/// `http.max_connections` clients never take the files that `/healthz` and the pipeline
/// need. Warns, naming the key, when the limit is too low for it all the same.
fn raise_open_files_limit(http: &HttpConfig) {
    let limit = match cache_layer::app::raise_open_files_limit() {
        Ok((before, now)) => {
            if now > before {
                info!(from = before, to = now, "raised the limit on open files");
            }
            now
        }
        Err(e) => {
            warn!(error = %e, "cannot raise the limit on open files");
            return;
        }
    };
    let needed = http.max_connections as u64 + FILES_BESIDES_API;
    if limit < needed {
        warn!(
            limit,
            needed,
            "http.max_connections = {} leaves too few of the process's open files for the \
             rest of the daemon: lower it, or raise the hard limit (ulimit -Hn)",
            http.max_connections
        );
    }
}
