//! Logging, installed once by `main`. `RUST_LOG`, when set, wins over `[log] level`.
//! [`reload`] changes the level and the format in place, for a SIGHUP.

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type FormatLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// What a reload changes: the filter, and the format layer with a way to build another.
struct Reloader {
    filter: reload::Handle<EnvFilter, Registry>,
    format: reload::Handle<FormatLayer, Filtered>,
    layer: Box<dyn Fn(LogFormat) -> FormatLayer + Send + Sync>,
}

static RELOADER: OnceLock<Reloader> = OnceLock::new();

/// Installs the global subscriber; logs go to stderr, in text or JSON, coloured only
/// when stderr is a terminal (never in a file, a pipe or a container's log).
pub fn init(config: &LogConfig) {
    install(config, std::io::stderr, std::io::stderr().is_terminal());
}

/// Installs the global subscriber writing to a file, without colours.
pub fn init_to(config: &LogConfig, file: std::fs::File) {
    install(config, Arc::new(file), false);
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn install<W>(config: &LogConfig, writer: W, ansi: bool)
where
    W: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    let layer = move |format: LogFormat| -> FormatLayer {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(ansi);
        match format {
            LogFormat::Text => Box::new(fmt),
            LogFormat::Json => Box::new(fmt.json().flatten_event(true)),
        }
    };
    let (filter, filter_handle) = reload::Layer::new(filter(&config.level));
    let (format, format_handle) = reload::Layer::new(layer(config.format));
    if tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok()
    {
        let _ = RELOADER.set(Reloader {
            filter: filter_handle,
            format: format_handle,
            layer: Box::new(layer),
        });
    }
}

/// Applies a reloaded `[log]`: the level (unless `RUST_LOG` is set, which still wins)
/// and the format, from the next line on.
pub(crate) fn reload(config: &LogConfig) {
    let Some(reloader) = RELOADER.get() else {
        return;
    };
    let _ = reloader.filter.reload(filter(&config.level));
    let _ = reloader.format.reload((reloader.layer)(config.format));
}
