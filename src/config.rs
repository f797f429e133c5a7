//! The typed configuration tree and how it is loaded.
//!
//! Sources, lowest precedence first:
//! 1. the built-in defaults (the named `default_*` functions below);
//! 2. the TOML file (`config/cache-layer.toml` unless `--config PATH`);
//! 3. the previous Python service's variables: `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`,
//!    `REDIS_PASSWORD`, `CACHE_DEFAULT_TTL`, plus `KAFKA_BOOTSTRAP_SERVERS`;
//! 4. `CACHE_LAYER__SECTION__KEY` for every key (`__` separates levels). Under
//!    `kafka.properties` a single `_` stands for the `.` of a librdkafka name:
//!    `CACHE_LAYER__KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password`.
//!
//! Invariants kept here, so that the rest of the code never re-checks them:
//! - an unknown key anywhere is an error naming it: a typo is never silently ignored;
//! - [`Config::validate`] has passed: every TTL, interval and batch size is positive, the
//!   Redis URL parses, topics are distinct;
//! - secrets ([`SecretString`] fields and password-like Kafka properties) never appear in
//!   `Debug` output, so they cannot reach a log line by accident.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::{serde_as, DurationMilliSeconds, DurationSeconds};

/// Where the configuration is read from when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/cache-layer.toml";

/// Prefix of the generic environment overrides (`CACHE_LAYER__REDIS__PORT`).
pub const ENV_PREFIX: &str = "CACHE_LAYER__";

/// The previous service's variables and the key each one sets.
const LEGACY_ENV: [(&str, &str); 6] = [
    ("REDIS_HOST", "redis.host"),
    ("REDIS_PORT", "redis.port"),
    ("REDIS_DB", "redis.db"),
    ("REDIS_PASSWORD", "redis.password"),
    ("CACHE_DEFAULT_TTL", "cache.default_ttl"),
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
];

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

fn redact<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    if secret.expose_secret().is_empty() {
        s.serialize_str("")
    } else {
        s.serialize_str(REDACTED)
    }
}

fn redact_option<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => redact(secret, s),
        None => s.serialize_none(),
    }
}

/// A URL with its password masked; an unparsable one is masked whole.
fn redact_url<S: Serializer>(url: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    let Some(url) = url else {
        return s.serialize_none();
    };
    match url::Url::parse(url.expose_secret()) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(REDACTED));
            }
            s.serialize_str(parsed.as_str())
        }
        Err(_) => s.serialize_str(REDACTED),
    }
}

/// Why the configuration could not be used. Both variants name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("invalid configuration: `{key}` {message}")]
    Invalid { key: String, message: String },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        Self::Load(e)
    }
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration of one cache-layer process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub sweep: SweepConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_bootstrap_servers")]
    pub bootstrap_servers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,
    /// How often stored offsets are committed (librdkafka's `auto.commit.interval.ms`).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_commit_interval", rename = "commit_interval_ms")]
    pub commit_interval: Duration,
    /// How long a SIGTERM drain may take: finish the batch in progress, write it, commit.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_shutdown_timeout", rename = "shutdown_timeout_ms")]
    pub shutdown_timeout: Duration,
    /// Raw librdkafka properties, passed through as they are.
    #[serde(default)]
    pub properties: KafkaProperties,
}

/// librdkafka properties that cache-layer sets itself, because its delivery guarantee
/// depends on them. Setting one under `kafka.properties` is a configuration error.
pub const MANAGED_KAFKA_PROPERTIES: [&str; 8] = [
    "bootstrap.servers",
    "group.id",
    "client.id",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "enable.partition.eof",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap_servers(),
            group_id: default_group_id(),
            client_id: default_client_id(),
            auto_offset_reset: AutoOffsetReset::default(),
            commit_interval: default_commit_interval(),
            shutdown_timeout: default_shutdown_timeout(),
            properties: KafkaProperties::default(),
        }
    }
}

fn default_bootstrap_servers() -> String {
    "127.0.0.1:9092".into()
}
fn default_group_id() -> String {
    "cache-layer".into()
}
fn default_client_id() -> String {
    "cache-layer".into()
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(1_000)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_millis(10_000)
}

/// librdkafka's `auto.offset.reset`, for a group without a committed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    #[default]
    Earliest,
    Latest,
    Error,
}

impl AutoOffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
            Self::Error => "error",
        }
    }
}

/// librdkafka properties by their dotted names.
///
/// TOML may write them quoted (`"security.protocol" = "SSL"`) or as dotted keys
/// (`security.protocol = "SSL"`, which TOML nests); both are flattened back to the dotted name.
/// Numbers and booleans are passed as their text, as librdkafka expects.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    /// Whether a property holds a credential and must be masked when printed.
    pub fn is_secret(name: &str) -> bool {
        name.contains("password") || name.contains("secret") || name.ends_with(".pem")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if Self::is_secret(k) { REDACTED } else { v };
                (k, shown)
            }))
            .finish()
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| {
            let shown = if Self::is_secret(k) {
                REDACTED
            } else {
                v.as_str()
            };
            (k, shown)
        }))
    }
}

impl<'de> Deserialize<'de> for KafkaProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Node {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
            Table(BTreeMap<String, Node>),
        }
        fn flatten(
            prefix: &str,
            table: BTreeMap<String, Node>,
            out: &mut BTreeMap<String, String>,
        ) {
            for (key, node) in table {
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                match node {
                    Node::Text(s) => {
                        out.insert(name, s);
                    }
                    Node::Int(i) => {
                        out.insert(name, i.to_string());
                    }
                    Node::Float(x) => {
                        out.insert(name, x.to_string());
                    }
                    Node::Bool(b) => {
                        out.insert(name, b.to_string());
                    }
                    Node::Table(inner) => flatten(&name, inner, out),
                }
            }
        }
        let table = BTreeMap::<String, Node>::deserialize(deserializer)?;
        let mut out = BTreeMap::new();
        flatten("", table, &mut out);
        Ok(Self(out))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    #[serde(default = "default_trends_topic")]
    pub trends: String,
    #[serde(default = "default_user_metrics_topic")]
    pub user_metrics: String,
    #[serde(default = "default_windows_topic")]
    pub windows: String,
    /// Empty: no dead-letter topic; rejected messages are then only counted and logged.
    #[serde(default)]
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            trends: default_trends_topic(),
            user_metrics: default_user_metrics_topic(),
            windows: default_windows_topic(),
            dead_letter: String::new(),
        }
    }
}

fn default_trends_topic() -> String {
    "trend-alerts".into()
}
fn default_user_metrics_topic() -> String {
    "user-metrics".into()
}
fn default_windows_topic() -> String {
    "keyword-windows".into()
}

/// How to reach Redis.
///
/// `url` wins over the parts when both are in the file. The environment wins over the file,
/// URL included: `REDIS_PORT=6380` changes the port of a URL given in the file. After
/// [`Config::load`] has run, [`RedisConfig::connection_url`] is the one effective address.
#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`; a secret because it may carry a password.
    #[serde(default, serialize_with = "redact_url")]
    pub url: Option<SecretString>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub db: Option<u32>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, serialize_with = "redact_option")]
    pub password: Option<SecretString>,
    /// Talk to a Redis Cluster: keys go to the master of their hash slot.
    #[serde(default)]
    pub cluster: bool,
    /// With `cluster`: seed nodes (`redis://host:port`); empty means the URL (or parts).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Replicas that must have a batch before it counts as written (Redis `WAIT`); 0
    /// trusts the primary alone. With 1, a failover cannot lose an acknowledged batch.
    #[serde(default)]
    pub wait_replicas: u32,
    /// How long `WAIT` may take; fewer replicas by then fail the write, which is retried.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_wait_timeout", rename = "wait_timeout_ms")]
    pub wait_timeout: Duration,
    /// Prepended to every key this service writes, e.g. `"bsky:"`.
    #[serde(default)]
    pub key_prefix: String,
    /// With `rediss://`: the CA certificate (PEM) that signed the server's; without it
    /// the system's trust store is used.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: a client certificate and its key (PEM), for servers that
    /// require client authentication (`tls-auth-clients yes`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_connect_timeout", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_response_timeout", rename = "response_timeout_ms")]
    pub response_timeout: Duration,
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
            wait_timeout: default_wait_timeout(),
            key_prefix: String::new(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
        }
    }
}

fn default_wait_timeout() -> Duration {
    Duration::from_millis(1_000)
}
fn default_connect_timeout() -> Duration {
    Duration::from_millis(2_000)
}
fn default_response_timeout() -> Duration {
    Duration::from_millis(5_000)
}

/// The Redis parts that the environment may set, applied over a URL from the file.
#[derive(Debug, Default, Deserialize)]
struct RedisParts {
    host: Option<String>,
    port: Option<u16>,
    db: Option<u32>,
    username: Option<String>,
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

    /// `host:port/db` of the effective URL: safe to log, it carries no credentials.
    pub fn endpoint(&self) -> String {
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
    fn settle_parts(&mut self, env: RedisParts) {
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

/// Cache lifetimes. Every key the service writes carries one of these TTLs.
#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(default = "default_ttl")]
    pub default_ttl: Duration,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default)]
    pub trends_ttl: Option<Duration>,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default)]
    pub users_ttl: Option<Duration>,
    #[serde_as(as = "Option<DurationSeconds<u64>>")]
    #[serde(default)]
    pub windows_ttl: Option<Duration>,
    /// How long a user stays in `users:active` after it was last seen.
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(default = "default_active_user_window")]
    pub active_user_window: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            default_ttl: default_ttl(),
            trends_ttl: None,
            users_ttl: None,
            windows_ttl: None,
            active_user_window: default_active_user_window(),
        }
    }
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_active_user_window() -> Duration {
    Duration::from_secs(900)
}

/// The TTL of each key category, with `default_ttl` filled in where none was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    pub trends: Duration,
    pub users: Duration,
    pub windows: Duration,
}

impl CacheConfig {
    pub fn ttls(&self) -> Ttls {
        Ttls {
            trends: self.trends_ttl.unwrap_or(self.default_ttl),
            users: self.users_ttl.unwrap_or(self.default_ttl),
            windows: self.windows_ttl.unwrap_or(self.default_ttl),
        }
    }
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is written when it holds this many messages...
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// ...or this long after its first message arrived, whichever comes first.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_max_wait", rename = "max_wait_ms")]
    pub max_wait: Duration,
    /// A message larger than this is rejected as `too_large` and dead-lettered.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// First delay before a failed batch write is retried; it doubles per attempt.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_retry_initial", rename = "retry_initial_ms")]
    pub retry_initial: Duration,
    /// The longest delay between two attempts (before jitter).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_retry_max", rename = "retry_max_ms")]
    pub retry_max: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
            max_wait: default_max_wait(),
            max_message_bytes: default_max_message_bytes(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }
}

fn default_max_message_bytes() -> usize {
    1_048_576
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_retry_max() -> Duration {
    Duration::from_millis(10_000)
}

fn default_max_messages() -> usize {
    5_000
}
fn default_max_wait() -> Duration {
    Duration::from_millis(50)
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(default = "default_sweep_interval", rename = "interval_secs")]
    pub interval: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: default_sweep_interval(),
        }
    }
}

fn default_sweep_interval() -> Duration {
    Duration::from_secs(60)
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde_as(as = "DurationSeconds<u64>")]
    #[serde(default = "default_stats_interval", rename = "interval_secs")]
    pub interval: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            interval: default_stats_interval(),
        }
    }
}

fn default_stats_interval() -> Duration {
    Duration::from_secs(15)
}

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Bearer token of the admin endpoints; empty disables them.
    #[serde(default = "empty_secret", serialize_with = "redact")]
    pub admin_token: SecretString,
    /// A request that takes longer is answered 408 and dropped.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(default = "default_request_timeout", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// Larger request bodies are refused with 413 before they are read.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_token: empty_secret(),
            request_timeout: default_request_timeout(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_millis(10_000)
}
fn default_max_body_bytes() -> usize {
    16_384
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}
fn empty_secret() -> SecretString {
    SecretString::from("")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `cache_layer=debug,info`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Loads the file (if it exists, or fails when `required`), applies the environment,
    /// and validates the result.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        if required && !path.is_file() {
            return Err(ConfigError::invalid(
                "--config",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let mut file = Figment::new();
        if path.is_file() {
            file = file.merge(Toml::file_exact(path));
        }
        let env = Figment::new().merge(legacy_env()).merge(generic_env());
        let config: Config = file.merge(env.clone()).extract().map_err(Box::new)?;
        let env_parts: RedisParts = env.extract_inner("redis").unwrap_or_default();
        config.settled(env_parts)
    }

    fn settled(mut self, env_parts: RedisParts) -> Result<Self, ConfigError> {
        self.redis.settle_parts(env_parts);
        self.validate()?;
        Ok(self)
    }

    /// Parses a TOML document alone, without the environment: for tests and tools.
    pub fn from_toml(toml: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        config.settled(RedisParts::default())
    }

    /// The cross-field rules. Each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("cache.default_ttl", Some(self.cache.default_ttl)),
            ("cache.trends_ttl", self.cache.trends_ttl),
            ("cache.users_ttl", self.cache.users_ttl),
            ("cache.windows_ttl", self.cache.windows_ttl),
            (
                "cache.active_user_window",
                Some(self.cache.active_user_window),
            ),
            ("batch.max_wait_ms", Some(self.batch.max_wait)),
            ("batch.retry_initial_ms", Some(self.batch.retry_initial)),
            ("batch.retry_max_ms", Some(self.batch.retry_max)),
            ("kafka.commit_interval_ms", Some(self.kafka.commit_interval)),
            (
                "kafka.shutdown_timeout_ms",
                Some(self.kafka.shutdown_timeout),
            ),
            ("sweep.interval_secs", Some(self.sweep.interval)),
            ("stats.interval_secs", Some(self.stats.interval)),
            ("redis.connect_timeout_ms", Some(self.redis.connect_timeout)),
            (
                "redis.response_timeout_ms",
                Some(self.redis.response_timeout),
            ),
        ];
        for (key, value) in positive {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if self.batch.max_messages == 0 {
            return Err(ConfigError::invalid(
                "batch.max_messages",
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("kafka.bootstrap_servers", &self.kafka.bootstrap_servers),
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.client_id", &self.kafka.client_id),
            ("topics.trends", &self.topics.trends),
            ("topics.user_metrics", &self.topics.user_metrics),
            ("topics.windows", &self.topics.windows),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        let sources = [
            &self.topics.trends,
            &self.topics.user_metrics,
            &self.topics.windows,
        ];
        if sources[0] == sources[1] || sources[0] == sources[2] || sources[1] == sources[2] {
            return Err(ConfigError::invalid(
                "topics",
                "the three source topics must differ",
            ));
        }
        if sources.contains(&&self.topics.dead_letter) {
            return Err(ConfigError::invalid(
                "topics.dead_letter",
                "must not be one of the source topics",
            ));
        }
        if self
            .redis
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must not contain whitespace or control characters",
            ));
        }
        let url = self.redis.connection_url()?;
        let tls_files = [
            ("redis.tls_ca_file", &self.redis.tls_ca_file),
            ("redis.tls_cert_file", &self.redis.tls_cert_file),
            ("redis.tls_key_file", &self.redis.tls_key_file),
        ];
        for (key, file) in tls_files {
            if let Some(file) = file {
                if url.scheme() != "rediss" {
                    return Err(ConfigError::invalid(key, "needs a rediss:// URL"));
                }
                if !file.is_file() {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{} is not a readable file", file.display()),
                    ));
                }
            }
        }
        if !self.redis.nodes.is_empty() && !self.redis.cluster {
            return Err(ConfigError::invalid(
                "redis.nodes",
                "is only used with redis.cluster = true",
            ));
        }
        for node in &self.redis.nodes {
            match url::Url::parse(node) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "redis.nodes",
                        format!("{node:?} is not a redis://host:port URL"),
                    ))
                }
            }
        }
        if self.redis.cluster
            && (self.redis.tls_ca_file.is_some() || self.redis.tls_cert_file.is_some())
        {
            return Err(ConfigError::invalid(
                "redis.cluster",
                "does not take redis.tls_* files yet; use rediss:// seed nodes with the system's trust store",
            ));
        }
        if self.redis.tls_cert_file.is_some() != self.redis.tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "redis.tls_cert_file",
                "and redis.tls_key_file go together: set both or neither",
            ));
        }
        self.http.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                "http.listen",
                format!(
                    "{:?} is not an address such as 0.0.0.0:9464: {e}",
                    self.http.listen
                ),
            )
        })?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::invalid(
                "log.level",
                format!("{:?} is not a filter: {e}", self.log.level),
            )
        })?;
        Ok(())
    }
}

/// The previous service's variables, mapped onto their keys.
fn legacy_env() -> Env {
    let names: Vec<&str> = LEGACY_ENV.iter().map(|(name, _)| *name).collect();
    Env::raw().only(&names).map(|name| {
        LEGACY_ENV
            .iter()
            .find(|(legacy, _)| name == *legacy)
            .map(|(_, key)| (*key).into())
            .unwrap_or_else(|| name.into())
    })
}

/// `CACHE_LAYER__SECTION__KEY`; under `kafka.properties`, `_` becomes `.`.
fn generic_env() -> Env {
    Env::prefixed(ENV_PREFIX).map(|name| {
        let key = name.as_str().to_ascii_lowercase().replace("__", ".");
        match key.strip_prefix("kafka.properties.") {
            Some(property) => format!("kafka.properties.{}", property.replace('_', ".")).into(),
            None => key.into(),
        }
    })
}

/// The default config path, relative to the working directory.
pub fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ttls_inherit_default_ttl() {
        let config = Config::from_toml("[cache]\ndefault_ttl = 120\nusers_ttl = 30\n").unwrap();
        let ttls = config.cache.ttls();
        assert_eq!(ttls.trends, Duration::from_secs(120));
        assert_eq!(ttls.users, Duration::from_secs(30));
        assert_eq!(ttls.windows, Duration::from_secs(120));
    }

    #[test]
    fn kafka_properties_flatten_dotted_and_quoted_keys() {
        let config = Config::from_toml(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\nsasl.mechanism = \"PLAIN\"\n\
             sasl.password = \"hunter2\"\n\"session.timeout.ms\" = 6000\n",
        )
        .unwrap();
        let props: Vec<_> = config.kafka.properties.iter().collect();
        assert_eq!(
            props,
            [
                ("sasl.mechanism", "PLAIN"),
                ("sasl.password", "hunter2"),
                ("security.protocol", "SASL_SSL"),
                ("session.timeout.ms", "6000"),
            ]
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn url_wins_over_file_parts() {
        let config = Config::from_toml(
            "[redis]\nurl = \"redis://cache:7000/2\"\nhost = \"ignored\"\nport = 1\n",
        )
        .unwrap();
        let url = config.redis.connection_url().unwrap();
        assert_eq!(url.as_str(), "redis://cache:7000/2");
    }

    #[test]
    fn zero_batch_size_is_rejected_by_name() {
        let err = Config::from_toml("[batch]\nmax_messages = 0\n").unwrap_err();
        assert!(err.to_string().contains("batch.max_messages"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config::from_toml(
            "[redis]\nurl = \"redis://:s3cret@h:1/0\"\npassword = \"pw-xyz\"\n[http]\nadmin_token = \"tok-abc\"\n",
        )
        .unwrap();
        let debug = format!("{config:?}");
        for secret in ["s3cret", "pw-xyz", "tok-abc"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }
}

#[cfg(test)]
mod printing {
    use super::*;

    #[test]
    fn check_config_output_masks_every_secret() {
        let config = Config::from_toml(
            "[redis]\nurl = \"redis://user:url-pw@h:1/0\"\npassword = \"part-pw\"\n\
             [http]\nadmin_token = \"tok\"\n[kafka.properties]\n\"sasl.password\" = \"kafka-pw\"\n\
             \"ssl.key.password\" = \"key-pw\"\n\"sasl.username\" = \"visible-user\"\n",
        )
        .unwrap();
        let printed = toml::to_string(&config).unwrap() + &serde_json::to_string(&config).unwrap();
        for secret in ["url-pw", "part-pw", "\"tok\"", "kafka-pw", "key-pw"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("visible-user") && printed.contains(REDACTED));
    }
}
