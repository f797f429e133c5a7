//! Logging, installed once by `main`. `RUST_LOG`, when set, wins over `[log] level`.

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; logs go to stderr, in text or JSON, coloured only
/// when stderr is a terminal (never in a file, a pipe or a container's log).
pub fn init(config: &LogConfig) {
    install(config, std::io::stderr, std::io::stderr().is_terminal());
}

/// Installs the global subscriber writing to a file, without colours.
pub fn init_to(config: &LogConfig, file: std::fs::File) {
    install(config, Mutex::new(file), false);
}

fn install<W>(config: &LogConfig, writer: W, ansi: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
