//! Reading the repository's deployment files, for the deploy and metrics tests, and the
//! daemon as its own process on a broker.

use std::path::{Path, PathBuf};

use cache_layer_testkit::kafka::Broker;
use cache_layer_testkit::process::DaemonProcess;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The `cache_layer_*` metric names a PromQL text mentions, with the `_bucket`, `_sum`
/// and `_count` of histograms folded onto the histogram's name.
pub fn metric_names_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("cache_layer_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|b| cache_layer::metrics::ALL.iter().any(|m| m.name == *b))
            })
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// A group session of 6 s (heartbeats every 0.5 s), so that a killed daemon's partitions
/// move within seconds.
pub const QUICK_SESSION: &[(&str, &str)] = &[
    ("CACHE_LAYER__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000"),
    (
        "CACHE_LAYER__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
        "500",
    ),
];

/// The debug-built daemon as its own process on a broker (Apache Kafka, or the mock
/// cluster over TCP), on the test's topics and group, configured through the environment:
/// batches of at most 500 messages or 20 ms, quick retries and commits.
pub fn spawn(kafka: &Broker, redis_url: &str, extra: &[(&str, &str)]) -> DaemonProcess {
    DaemonProcess::spawn(daemon(), env(kafka, redis_url, extra)).unwrap()
}

/// [`spawn`], its log written to `log` at INFO.
pub fn spawn_logging(
    kafka: &Broker,
    redis_url: &str,
    extra: &[(&str, &str)],
    log: &Path,
) -> DaemonProcess {
    let env = env(kafka, redis_url, extra);
    let dir = log.parent().expect("a directory");
    DaemonProcess::spawn_logging_to(daemon(), &["run"], dir, env, log).unwrap()
}

fn daemon() -> &'static Path {
    env!("CARGO_BIN_EXE_cache-layer").as_ref()
}

/// The environment of [`spawn`].
fn env(kafka: &Broker, redis_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let settings = [
        ("CACHE_LAYER__REDIS__URL", redis_url),
        ("CACHE_LAYER__KAFKA__COMMIT_INTERVAL_MS", "100"),
        ("CACHE_LAYER__BATCH__MAX_MESSAGES", "500"),
        ("CACHE_LAYER__BATCH__MAX_WAIT_MS", "20"),
        ("CACHE_LAYER__BATCH__RETRY_INITIAL_MS", "50"),
        ("CACHE_LAYER__BATCH__RETRY_MAX_MS", "500"),
        // The pauses, resumes and gaps, in the test's output when it fails.
        ("CACHE_LAYER__LOG__LEVEL", "info"),
    ];
    let mut env = kafka.daemon_env();
    env.extend(
        settings
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}
