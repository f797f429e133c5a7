//! The typed configuration tree and how it is loaded, one module per section.
//!
//! Sources, lowest precedence first:
//! 1. the built-in defaults (each section's `Default`);
//! 2. the TOML file (`config/cache-layer.toml` unless `--config PATH`);
//! 3. the previous Python service's variables: `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`,
//!    `REDIS_PASSWORD`, `CACHE_DEFAULT_TTL`, plus `KAFKA_BOOTSTRAP_SERVERS`;
//! 4. `CACHE_LAYER__SECTION__KEY` for every key (`__` separates levels). Under
//!    `kafka.properties` a single `_` stands for the `.` of a librdkafka name:
//!    `CACHE_LAYER__KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password`.
//!
//! Invariants kept here, so that the rest of the code never re-checks them:
//! - an unknown key anywhere is an error naming it: a typo is never silently ignored;
//! - [`Config::validate`] has passed: every section checked its own keys (every TTL,
//!   interval and batch size is positive, the Redis URL parses, topics are distinct);
//! - secrets (`SecretString` fields and password-like Kafka properties) never appear in
//!   `Debug` output or a printed configuration, so they cannot reach a log line by
//!   accident.

mod cache;
mod http;
mod kafka;
mod log;
mod redis;
mod secret;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use self::redis::RedisConfig;
use self::redis::RedisParts;
pub(crate) use cache::{BatchConfig, CacheConfig, StatsConfig, SweepConfig};
pub use cache::{TtlFrom, Ttls};
pub use http::HttpConfig;
pub use kafka::{AutoOffsetReset, GroupProtocol};
pub(crate) use kafka::{KafkaConfig, TopicsConfig};
pub(crate) use log::LogConfig;
pub use log::LogFormat;

/// The running configuration, as the last reload (SIGHUP) left it.
pub(crate) type Settings = tokio::sync::watch::Receiver<std::sync::Arc<Config>>;

/// Where the configuration is read from when no `--config` is given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "config/cache-layer.toml";

/// Prefix of the generic environment overrides (`CACHE_LAYER__REDIS__PORT`).
pub(crate) const ENV_PREFIX: &str = "CACHE_LAYER__";

/// The previous service's variables and the key each one sets.
const LEGACY_ENV: [(&str, &str); 6] = [
    ("REDIS_HOST", "redis.host"),
    ("REDIS_PORT", "redis.port"),
    ("REDIS_DB", "redis.db"),
    ("REDIS_PASSWORD", "redis.password"),
    ("CACHE_DEFAULT_TTL", "cache.default_ttl"),
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
];

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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub batch: BatchConfig,
    pub sweep: SweepConfig,
    pub stats: StatsConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
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
        self.kafka.settle_instance_id(hostname);
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

    /// Every section's rules. Each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.redis.validate()?;
        self.cache.validate()?;
        self.batch.validate()?;
        self.sweep.validate()?;
        self.stats.validate()?;
        self.http.validate()?;
        self.log.validate()
    }
}

/// A duration that must not be zero.
fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// A size or count that must not be zero.
fn not_zero(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// A text that must not be empty or blank.
fn not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    Ok(())
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

/// The kernel's host name: a Kubernetes pod's name, a container's id.
fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The default config path, relative to the working directory.
pub fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_CONFIG_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_the_group_protocol_refuses_stops_startup_naming_it() {
        for (protocol, property) in [
            ("consumer", "session.timeout.ms"),
            ("consumer", "heartbeat.interval.ms"),
            ("consumer", "partition.assignment.strategy"),
            ("classic", "group.remote.assignor"),
        ] {
            let toml = format!(
                "[kafka]\ngroup_protocol = \"{protocol}\"\n[kafka.properties]\n\"{property}\" = \"1\"\n"
            );
            let error = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(
                error.contains(&format!("kafka.properties.{property}")),
                "{error}"
            );
            assert!(error.contains(protocol), "{error}");
        }
        let both = "[kafka]\ngroup_protocol = \"consumer\"\n[kafka.properties]\n\"group.remote.assignor\" = \"uniform\"\n";
        assert!(Config::from_toml(both).is_ok());
        let managed = "[kafka.properties]\n\"group.protocol\" = \"consumer\"\n";
        let error = Config::from_toml(managed).unwrap_err().to_string();
        assert!(error.contains("kafka.group_protocol"), "{error}");
    }

    #[test]
    fn a_reload_takes_every_reloadable_key_and_keeps_every_other() {
        let running = Config::default();
        let toml = r#"
            [kafka]
            bootstrap_servers = "elsewhere:9092"
            [redis]
            password = "new-password"
            [cache]
            default_ttl = 61
            trends_ttl = 62
            users_ttl = 63
            windows_ttl = 64
            ttl_from = "event"
            [batch]
            max_messages = 7
            max_wait_ms = 8
            max_bytes = 90000
            max_message_bytes = 9000
            max_future_skew_secs = 10
            [log]
            level = "debug"
            format = "json"
            [http]
            admin_token = "new-token"
            request_timeout_ms = 11
            max_body_bytes = 12
            max_concurrent_requests = 13
            max_response_bytes = 14000
            [sweep]
            interval_secs = 15
            [stats]
            interval_secs = 16
        "#;
        let new = Config::from_toml(toml).unwrap();
        let reload = running.reload(&new);
        let mut applied = reload.applied.clone();
        applied.sort();
        let mut all: Vec<String> = RELOADABLE_KEYS.iter().map(|k| (*k).to_owned()).collect();
        all.sort();
        assert_eq!(applied, all, "every reloadable key is seen changed");
        assert_eq!(
            reload.need_restart,
            ["kafka.bootstrap_servers", "redis.password"]
        );
        // What is applied is what the new configuration says, secrets included; the rest
        // is what runs.
        let shown = |c: &Config| serde_json::to_value(c).unwrap();
        let mut expected = shown(&new);
        expected["kafka"]["bootstrap_servers"] =
            shown(&running)["kafka"]["bootstrap_servers"].clone();
        expected["redis"]["password"] = shown(&running)["redis"]["password"].clone();
        assert_eq!(shown(&reload.config), expected);
        use secrecy::ExposeSecret;
        assert_eq!(reload.config.http.admin_token.expose_secret(), "new-token");
        assert!(reload.config.redis.password.is_none());
    }

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
    fn tls_files_with_a_cluster_need_rediss_seed_nodes() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let toml = |scheme: &str| {
            format!(
                "[redis]\ncluster = true\nnodes = [\"{scheme}://127.0.0.1:7000\"]\ntls_ca_file = {:?}\n",
                ca.path()
            )
        };
        let err = Config::from_toml(&toml("redis")).unwrap_err().to_string();
        assert!(
            err.contains("redis.tls_ca_file") && err.contains("rediss:// seed nodes"),
            "{err}"
        );
        let config = Config::from_toml(&toml("rediss")).unwrap();
        assert_eq!(config.redis.tls_ca_file.as_deref(), Some(ca.path()));
        // A URL's scheme is case-insensitive, as the seed nodes' own check reads it.
        Config::from_toml(&toml("REDISS")).unwrap();
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
    use super::kafka::{KafkaProperties, SHOWN_KAFKA_PROPERTIES};
    use super::secret::REDACTED;
    use super::*;

    /// The properties librdkafka itself marks sensitive (`_RK_SENSITIVE` in
    /// rdkafka_conf.c, librdkafka 2.12), and names that say they hold a credential.
    const CREDENTIALS: [&str; 16] = [
        "ssl.key.location",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.ca.pem",
        "ssl.keystore.password",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.assertion.private.key.file",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.kerberos.keytab",
        "ssl.certificate.pem",
        "sasl.oauthbearer.token.endpoint.url",
    ];

    #[test]
    fn every_credential_librdkafka_knows_is_masked_and_plain_settings_are_shown() {
        for name in CREDENTIALS {
            assert!(KafkaProperties::is_secret(name), "{name} is printed");
        }
        for name in SHOWN_KAFKA_PROPERTIES {
            assert!(!CREDENTIALS.contains(&name), "{name}");
        }
        let config = Config::from_toml(
            "[kafka.properties]\n\"sasl.oauthbearer.assertion.private.key.passphrase\" = \"pp-123\"\n\
             \"sasl.oauthbearer.config\" = \"principal=x secret=oauth-456\"\n\"fetch.wait.max.ms\" = 10\n",
        )
        .unwrap();
        let printed = toml::to_string(&config).unwrap() + &format!("{config:?}");
        assert!(
            !printed.contains("pp-123") && !printed.contains("oauth-456"),
            "{printed}"
        );
        assert!(
            printed.contains("\"fetch.wait.max.ms\" = \"10\""),
            "{printed}"
        );
    }

    #[test]
    fn check_config_output_masks_every_secret() {
        let config = Config::from_toml(
            "[redis]\nurl = \"redis://user:url-pw@h:1/0\"\npassword = \"part-pw\"\n\
             [http]\nadmin_token = \"tok\"\n[kafka.properties]\n\"sasl.password\" = \"kafka-pw\"\n\
             \"ssl.key.password\" = \"key-pw\"\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .unwrap();
        let printed = toml::to_string(&config).unwrap() + &serde_json::to_string(&config).unwrap();
        for secret in ["url-pw", "part-pw", "\"tok\"", "kafka-pw", "key-pw"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("SASL_SSL") && printed.contains(REDACTED));
    }
}

/// The keys a reload (SIGHUP) applies in place, for the next batch or request; any other
/// key takes a restart.
pub(crate) const RELOADABLE_KEYS: [&str; 19] = [
    "cache.default_ttl",
    "cache.trends_ttl",
    "cache.users_ttl",
    "cache.windows_ttl",
    "cache.ttl_from",
    "batch.max_messages",
    "batch.max_wait_ms",
    "batch.max_bytes",
    "batch.max_message_bytes",
    "batch.max_future_skew_secs",
    "log.level",
    "log.format",
    "http.admin_token",
    "http.request_timeout_ms",
    "http.max_body_bytes",
    "http.max_concurrent_requests",
    "http.max_response_bytes",
    "sweep.interval_secs",
    "stats.interval_secs",
];

/// What a reload makes of the running configuration and a new one.
#[derive(Debug)]
pub(crate) struct Reload {
    /// The running configuration with the new values of the reloadable keys.
    pub config: Config,
    /// The reloadable keys whose values changed.
    pub applied: Vec<String>,
    /// The keys whose values changed but take a restart; kept as they run.
    pub need_restart: Vec<String>,
}

impl Config {
    /// Takes from `new` what can change in place, keeps the rest, and names the keys of
    /// each kind that changed. Both are valid configurations.
    pub(crate) fn reload(&self, new: &Config) -> Reload {
        let mut config = self.clone();
        config.cache.default_ttl = new.cache.default_ttl;
        config.cache.trends_ttl = new.cache.trends_ttl;
        config.cache.users_ttl = new.cache.users_ttl;
        config.cache.windows_ttl = new.cache.windows_ttl;
        config.cache.ttl_from = new.cache.ttl_from;
        config.batch.max_messages = new.batch.max_messages;
        config.batch.max_wait = new.batch.max_wait;
        config.batch.max_bytes = new.batch.max_bytes;
        config.batch.max_message_bytes = new.batch.max_message_bytes;
        config.batch.max_future_skew = new.batch.max_future_skew;
        config.log = new.log.clone();
        config.http.admin_token = new.http.admin_token.clone();
        config.http.request_timeout = new.http.request_timeout;
        config.http.max_body_bytes = new.http.max_body_bytes;
        config.http.max_concurrent_requests = new.http.max_concurrent_requests;
        config.http.max_response_bytes = new.http.max_response_bytes;
        config.sweep.interval = new.sweep.interval;
        config.stats.interval = new.stats.interval;
        let (applied, need_restart) = changed_keys(self, new)
            .into_iter()
            .partition(|key| RELOADABLE_KEYS.contains(&key.as_str()));
        Reload {
            config,
            applied,
            need_restart,
        }
    }
}

/// The keys whose values differ between two configurations. Secrets print masked, so
/// they are compared by their values here.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    use secrecy::ExposeSecret;
    fn leaves(prefix: &str, value: serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match value {
            serde_json::Value::Object(map) if prefix != "kafka.properties" => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, value, out);
                }
            }
            value => out.push((prefix.to_owned(), value)),
        }
    }
    let flat = |config: &Config| {
        let mut out = Vec::new();
        leaves(
            "",
            serde_json::to_value(config).unwrap_or_default(),
            &mut out,
        );
        out.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (before, after) = (flat(old), flat(new));
    let mut changed: Vec<String> = before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect();
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    let secrets = [
        (
            "redis.url",
            secret(&old.redis.url) != secret(&new.redis.url),
        ),
        (
            "redis.password",
            secret(&old.redis.password) != secret(&new.redis.password),
        ),
        (
            "redis.sentinel_password",
            secret(&old.redis.sentinel_password) != secret(&new.redis.sentinel_password),
        ),
        (
            "http.admin_token",
            old.http.admin_token.expose_secret() != new.http.admin_token.expose_secret(),
        ),
    ];
    for (key, differs) in secrets {
        if differs && !changed.iter().any(|k| k == key) {
            changed.push(key.to_owned());
        }
    }
    changed.retain(|k| k != "kafka.properties");
    let (a, b) = (&old.kafka.properties.0, &new.kafka.properties.0);
    for name in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        if a.get(name) != b.get(name) {
            changed.push(format!("kafka.properties.{name}"));
        }
    }
    changed
}
