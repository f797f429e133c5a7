//! `[http]`: the two listeners (the operator's `/metrics` and health checks, and the read
//! API) and their limits.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds};

use super::{not_zero, positive, secret, ConfigError};

/// The most `http.max_connections` can be: far more files than a process may open.
pub(crate) const MAX_CONNECTIONS: usize = 1_000_000;

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The operator listener: `/metrics`, `/healthz` and `/readyz`, for Prometheus and
    /// the orchestrator's probes. Nothing a reader does on the API reaches it.
    pub listen: String,
    /// The read API (`/v1/...`) and the admin endpoints.
    pub api_listen: String,
    /// Bearer token of the admin endpoints; empty disables them.
    #[serde(serialize_with = "secret::redact", deserialize_with = "secret::secret")]
    pub admin_token: SecretString,
    /// A request that takes longer is answered 408 and dropped.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// A connection that has not sent a whole request head this long after it opened, or
    /// after its last answer, is closed: idle and slow (slowloris) clients free their slot.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "header_read_timeout_ms")]
    pub header_read_timeout: Duration,
    /// Larger request bodies are refused with 413 before they are read.
    pub max_body_bytes: usize,
    /// Requests to `/v1` served at once; more are shed with 503 and `Retry-After`, so
    /// that a crowd of readers cannot grow the daemon's memory without bound.
    pub max_concurrent_requests: usize,
    /// Connections open at once on the API listener; more wait in the kernel's backlog
    /// until one closes, and hold no memory or file of the daemon's meanwhile.
    pub max_connections: usize,
    /// The largest answer of the API; a larger one is refused with 400, asking for fewer
    /// entries. With `max_concurrent_requests` it bounds the memory readers can take.
    pub max_response_bytes: usize,
    /// How long `/v1/trends` answers from one shared read of the ranking: any number of
    /// concurrent readers cost one Redis read and one buffer per period.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "trends_snapshot_ms")]
    pub trends_snapshot: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            api_listen: "0.0.0.0:9465".into(),
            admin_token: SecretString::from(""),
            request_timeout: Duration::from_millis(10_000),
            header_read_timeout: Duration::from_millis(5_000),
            max_body_bytes: 16_384,
            max_concurrent_requests: 32,
            max_connections: 512,
            max_response_bytes: 1 << 20,
            trends_snapshot: Duration::from_millis(1_000),
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("http.request_timeout_ms", self.request_timeout)?;
        positive("http.header_read_timeout_ms", self.header_read_timeout)?;
        positive("http.trends_snapshot_ms", self.trends_snapshot)?;
        not_zero("http.max_body_bytes", self.max_body_bytes)?;
        not_zero("http.max_concurrent_requests", self.max_concurrent_requests)?;
        not_zero("http.max_connections", self.max_connections)?;
        if self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::invalid(
                "http.max_connections",
                format!("must be at most {MAX_CONNECTIONS}"),
            ));
        }
        not_zero("http.max_response_bytes", self.max_response_bytes)?;
        let listen = address("http.listen", &self.listen)?;
        let api = address("http.api_listen", &self.api_listen)?;
        if listen == api && listen.port() != 0 {
            return Err(ConfigError::invalid(
                "http.api_listen",
                format!(
                    "{api} is also http.listen: the API needs its own port, so that readers \
                     cannot crowd out /healthz and /metrics"
                ),
            ));
        }
        Ok(())
    }
}

fn address(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse::<SocketAddr>().map_err(|e| {
        ConfigError::invalid(
            key,
            format!("{text:?} is not an address such as 0.0.0.0:9464: {e}"),
        )
    })
}
