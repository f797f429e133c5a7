//! HTTP helpers: serving the router of a `CacheLayer` on a loopback port, a plain GET,
//! and reading the Prometheus text format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use cache_layer::config::Config;
use cache_layer::http::{self, AppState};
use cache_layer::status::Status;
use cache_layer::CacheLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The listeners [`serve`] started.
pub struct Served {
    /// `/metrics`, `/healthz` and `/readyz`.
    pub operator: SocketAddr,
    /// The read API and the admin endpoints.
    pub api: SocketAddr,
    pub status: Arc<Status>,
}

/// Serves the listeners of `cache`, each on 127.0.0.1:0, for the rest of the test.
pub async fn serve(cache: CacheLayer, mut config: Config) -> Served {
    config.http.listen = "127.0.0.1:0".into();
    config.http.api_listen = "127.0.0.1:0".into();
    let status = Arc::new(Status::default());
    let listeners = http::Listeners::bind(&config.http).await.unwrap();
    let (operator, api) = listeners.addrs().unwrap();
    let config = Arc::new(config);
    let state = AppState::new(cache, Arc::clone(&status), Arc::clone(&config));
    // No reload: the sender goes, and the listeners serve on as configured.
    let (_, settings) = tokio::sync::watch::channel(config);
    tokio::spawn(http::serve(
        listeners,
        state,
        settings,
        CancellationToken::new(),
    ));
    Served {
        operator,
        api,
        status,
    }
}

/// A plain HTTP/1.0 GET: the status code and the body; `None` when nothing answers.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// One sample of the text exposition: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format into its samples and its HELP lines.
pub fn parse_metrics(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut help = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_owned(), text.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.parse().expect("a numeric value"),
        });
    }
    (samples, help)
}

/// The value of the sample with this name and (a subset of) these labels; 0 if absent.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
