//! `[http]`: the listener of `/metrics`, the health checks and the API, and its limits.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds};

use super::{not_zero, positive, secret, ConfigError};

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// Bearer token of the admin endpoints; empty disables them.
    #[serde(serialize_with = "secret::redact", deserialize_with = "secret::secret")]
    pub admin_token: SecretString,
    /// A request that takes longer is answered 408 and dropped.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// Larger request bodies are refused with 413 before they are read.
    pub max_body_bytes: usize,
    /// Requests to `/v1` served at once; more are shed with 503 and `Retry-After`, so
    /// that a crowd of readers cannot grow the daemon's memory without bound. The
    /// operator endpoints (`/metrics`, `/healthz`, `/readyz`) are not counted.
    pub max_concurrent_requests: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            admin_token: SecretString::from(""),
            request_timeout: Duration::from_millis(10_000),
            max_body_bytes: 16_384,
            max_concurrent_requests: 32,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("http.request_timeout_ms", self.request_timeout)?;
        not_zero("http.max_body_bytes", self.max_body_bytes)?;
        not_zero("http.max_concurrent_requests", self.max_concurrent_requests)?;
        self.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                "http.listen",
                format!(
                    "{:?} is not an address such as 0.0.0.0:9464: {e}",
                    self.listen
                ),
            )
        })?;
        Ok(())
    }
}
