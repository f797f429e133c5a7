//! `[redis]`: how to reach Redis (one server or a cluster, plain or TLS), how long to
//! wait for it, and the key prefix.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DurationMilliSeconds};

use super::{positive, secret, ConfigError};

/// How to reach Redis.
///
/// `url` wins over the parts when both are in the file. The environment wins over the file,
/// URL included: `REDIS_PORT=6380` changes the port of a URL given in the file. After
/// [`crate::config::Config::load`] has run, [`RedisConfig::connection_url`] is the one effective address.
#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`; a secret because it may carry a password.
    #[serde(
        serialize_with = "secret::redact_url",
        deserialize_with = "secret::secret_option"
    )]
    pub url: Option<SecretString>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub db: Option<u32>,
    pub username: Option<String>,
    #[serde(
        serialize_with = "secret::redact_option",
        deserialize_with = "secret::secret_option"
    )]
    pub password: Option<SecretString>,
    /// Talk to a Redis Cluster: keys go to the master of their hash slot.
    pub cluster: bool,
    /// With `cluster`: seed nodes (`redis://host:port`); empty means the URL (or parts).
    pub nodes: Vec<String>,
    /// Replicas that must have a batch before it counts as written (Redis `WAIT`); 0
    /// trusts the primary alone. With 1, a failover cannot lose an acknowledged batch.
    pub wait_replicas: u32,
    /// How long `WAIT` may take; fewer replicas by then fail the write, which is retried.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "wait_timeout_ms")]
    pub wait_timeout: Duration,
    /// Prepended to every key this service writes, e.g. `"bsky:"`.
    pub key_prefix: String,
    /// With `rediss://`: the CA certificate (PEM) that signed the server's; without it
    /// the system's trust store is used.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: a client certificate and its key (PEM), for servers that
    /// require client authentication (`tls-auth-clients yes`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "response_timeout_ms")]
    pub response_timeout: Duration,
    /// Sentinel: the name of the master the sentinels watch; empty means no Sentinel.
    pub sentinel_master: String,
    /// With `sentinel_master`: the sentinels (`redis://host:port`, or `rediss://`).
    pub sentinel_nodes: Vec<String>,
    /// The sentinels' own credentials; `username` and `password` stay the data nodes'.
    pub sentinel_username: Option<String>,
    #[serde(
        serialize_with = "secret::redact_option",
        deserialize_with = "secret::secret_option"
    )]
    pub sentinel_password: Option<SecretString>,
    /// Consuming pauses while Redis's `used_memory / maxmemory` is at or above this (for
    /// example 0.95), and resumes below it; unset, it never pauses for memory.
    pub pause_above_memory_ratio: Option<f64>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            host: None,
            port: None,
            db: None,
            username: None,
            password: None,
            cluster: false,
            nodes: Vec::new(),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(1_000),
            key_prefix: String::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            connect_timeout: Duration::from_millis(2_000),
            response_timeout: Duration::from_millis(5_000),
            sentinel_master: String::new(),
            sentinel_nodes: Vec::new(),
            sentinel_username: None,
            sentinel_password: None,
            pause_above_memory_ratio: None,
        }
    }
}

/// Checks that every node of the list `key` is a `redis://` or `rediss://` URL with a host.
fn node_urls(key: &str, nodes: &[String]) -> Result<(), ConfigError> {
    for node in nodes {
        match url::Url::parse(node) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {}
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    format!("{node:?} is not a redis://host:port URL"),
                ))
            }
        }
    }
    Ok(())
}

/// The Redis parts that the environment may set, applied over a URL from the file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RedisParts {
    host: Option<String>,
    port: Option<u16>,
    db: Option<u32>,
    username: Option<String>,
    #[serde(default, deserialize_with = "secret::secret_option")]
    password: Option<SecretString>,
}

impl RedisConfig {
    /// A config that points at one Redis URL with every other setting at its default.
    pub fn from_url(url: &str) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("redis.connect_timeout_ms", self.connect_timeout)?;
        positive("redis.response_timeout_ms", self.response_timeout)?;
        if let Some(ratio) = self.pause_above_memory_ratio {
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(ConfigError::invalid(
                    "redis.pause_above_memory_ratio",
                    format!("is {ratio}: it must be above 0 and at most 1 (for example 0.95), or unset to never pause"),
                ));
            }
        }
        if self
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must not contain whitespace or control characters",
            ));
        }
        self.validate_sentinel()?;
        let url = self.connection_url()?;
        // A cluster is reached through its seed nodes, when they are listed; a master
        // behind Sentinel through the sentinels.
        let (addresses, plaintext) = if self.sentinel() {
            (
                "rediss:// sentinels (redis.sentinel_nodes)",
                !self.sentinel_tls(),
            )
        } else if self.cluster && !self.nodes.is_empty() {
            (
                "rediss:// seed nodes (redis.nodes)",
                self.nodes
                    .iter()
                    .any(|n| url::Url::parse(n).map_or(true, |u| u.scheme() != "rediss")),
            )
        } else {
            ("a rediss:// URL", url.scheme() != "rediss")
        };
        let tls_files = [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ];
        for (key, file) in tls_files {
            if let Some(file) = file {
                if plaintext {
                    return Err(ConfigError::invalid(key, format!("needs {addresses}")));
                }
                if !file.is_file() {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{} is not a readable file", file.display()),
                    ));
                }
            }
        }
        if !self.nodes.is_empty() && !self.cluster {
            return Err(ConfigError::invalid(
                "redis.nodes",
                "is only used with redis.cluster = true",
            ));
        }
        node_urls("redis.nodes", &self.nodes)?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "redis.tls_cert_file",
                "and redis.tls_key_file go together: set both or neither",
            ));
        }
        Ok(())
    }

    /// Whether the master is found through Sentinel.
    pub(crate) fn sentinel(&self) -> bool {
        !self.sentinel_master.is_empty()
    }

    /// Whether every sentinel is reached over TLS (`rediss://`, in any case); the data
    /// nodes then are too.
    pub(crate) fn sentinel_tls(&self) -> bool {
        self.sentinel_nodes
            .iter()
            .all(|n| url::Url::parse(n).is_ok_and(|u| u.scheme() == "rediss"))
    }

    fn validate_sentinel(&self) -> Result<(), ConfigError> {
        if !self.sentinel() {
            return match self.sentinel_nodes.is_empty() {
                true => Ok(()),
                false => Err(ConfigError::invalid(
                    "redis.sentinel_nodes",
                    "is only used with redis.sentinel_master",
                )),
            };
        }
        if self.cluster {
            return Err(ConfigError::invalid(
                "redis.sentinel_master",
                "cannot go with redis.cluster = true: a cluster finds its masters itself",
            ));
        }
        if self.url.is_some() {
            return Err(ConfigError::invalid(
                "redis.sentinel_master",
                "cannot go with redis.url: the sentinels name the master; set redis.db, redis.username and redis.password for it",
            ));
        }
        if self.sentinel_nodes.is_empty() {
            return Err(ConfigError::invalid(
                "redis.sentinel_nodes",
                "needs at least one sentinel (redis://host:port) with redis.sentinel_master",
            ));
        }
        node_urls("redis.sentinel_nodes", &self.sentinel_nodes)
    }

    /// `host:port/db` of the effective URL: safe to log, it carries no credentials.
    pub fn endpoint(&self) -> String {
        if self.sentinel() {
            let sentinels: Vec<_> = self
                .sentinel_nodes
                .iter()
                .filter_map(|n| url::Url::parse(n).ok())
                .map(|u| {
                    format!(
                        "{}:{}",
                        u.host_str().unwrap_or_default(),
                        u.port().unwrap_or(26379)
                    )
                })
                .collect();
            return format!(
                "master {} of sentinels {}/{}",
                self.sentinel_master,
                sentinels.join(","),
                self.db.unwrap_or(0)
            );
        }
        match self.connection_url() {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or_default(),
                url.port().unwrap_or(6379),
                url.path()
            ),
            Err(_) => "(invalid URL)".into(),
        }
    }

    /// The effective connection URL, password included: hand it to the client only.
    pub fn connection_url(&self) -> Result<url::Url, ConfigError> {
        let mut url = match &self.url {
            Some(url) => url::Url::parse(url.expose_secret())
                .map_err(|e| ConfigError::invalid("redis.url", format!("does not parse: {e}")))?,
            None => url::Url::parse("redis://127.0.0.1:6379/0").expect("static URL parses"),
        };
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(ConfigError::invalid(
                "redis.url",
                format!("must use redis:// or rediss://, not {}://", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid("redis.url", "has no host"));
        }
        // Without a URL the parts describe the server; with one they were only set by the
        // environment (see `Config::load`), which wins.
        self.apply_parts(&mut url)?;
        Ok(url)
    }

    fn apply_parts(&self, url: &mut url::Url) -> Result<(), ConfigError> {
        if let Some(host) = &self.host {
            url.set_host(Some(host))
                .map_err(|e| ConfigError::invalid("redis.host", format!("{host:?}: {e}")))?;
        }
        if let Some(port) = self.port {
            url.set_port(Some(port))
                .map_err(|()| ConfigError::invalid("redis.port", "cannot be set on this URL"))?;
        }
        if let Some(db) = self.db {
            url.set_path(&format!("/{db}"));
        }
        if let Some(username) = &self.username {
            url.set_username(username)
                .map_err(|()| ConfigError::invalid("redis.username", "cannot be set"))?;
        }
        if let Some(password) = &self.password {
            url.set_password(Some(password.expose_secret()))
                .map_err(|()| ConfigError::invalid("redis.password", "cannot be set"))?;
        }
        Ok(())
    }

    /// Settles the parts against the URL: a URL from the file wins over the file's parts,
    /// and the environment's parts win over both. Afterwards the parts beside a URL are
    /// exactly the environment's, which `connection_url` applies over it.
    pub(super) fn settle_parts(&mut self, env: RedisParts) {
        if self.url.is_none() {
            return; // figment already merged the environment's parts over the file's
        }
        self.host = env.host;
        self.port = env.port;
        self.db = env.db;
        self.username = env.username;
        self.password = env.password;
    }
}
