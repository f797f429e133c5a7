//! `[kafka]` and `[topics]`: the brokers, the consumer group, the librdkafka
//! pass-through properties, and the topics read and written.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::{serde_as, DurationMilliSeconds};

use super::secret::REDACTED;
use super::{not_empty, positive, ConfigError};

#[serde_as]
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// librdkafka's `group.instance.id` (KIP-345 static membership): a member that comes
    /// back under the same id within `session.timeout.ms` gets its partitions back
    /// without a rebalance. `${HOSTNAME}` in it is replaced by the host name (a pod's
    /// name), when the configuration is loaded.
    pub group_instance_id: Option<String>,
    /// The group protocol (librdkafka's `group.protocol`): `classic`, or `consumer`
    /// (KIP-848, Kafka 4.0 and later), under which the broker assigns the partitions and
    /// sets the session and heartbeat times.
    pub group_protocol: GroupProtocol,
    pub client_id: String,
    pub auto_offset_reset: AutoOffsetReset,
    /// How often stored offsets are committed (librdkafka's `auto.commit.interval.ms`).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "commit_interval_ms")]
    pub commit_interval: Duration,
    /// How long a SIGTERM drain may take: finish the batch in progress, write it, commit.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    #[serde(rename = "shutdown_timeout_ms")]
    pub shutdown_timeout: Duration,
    /// Raw librdkafka properties, passed through as they are.
    pub properties: KafkaProperties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "cache-layer".into(),
            group_instance_id: None,
            group_protocol: GroupProtocol::default(),
            client_id: "cache-layer".into(),
            auto_offset_reset: AutoOffsetReset::default(),
            commit_interval: Duration::from_millis(1_000),
            shutdown_timeout: Duration::from_millis(10_000),
            properties: KafkaProperties::default(),
        }
    }
}

impl KafkaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (name, instead) in MANAGED_KAFKA_PROPERTIES {
            if self.properties.0.contains_key(name) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.{name}"),
                    format!("is set by cache-layer itself; {instead}"),
                ));
            }
        }
        for (name, why) in self.group_protocol.refused_properties() {
            if self.properties.0.contains_key(*name) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.{name}"),
                    format!(
                        "is not taken with kafka.group_protocol = \"{}\": {why}",
                        self.group_protocol.as_str()
                    ),
                ));
            }
        }
        positive("kafka.commit_interval_ms", self.commit_interval)?;
        positive("kafka.shutdown_timeout_ms", self.shutdown_timeout)?;
        not_empty("kafka.bootstrap_servers", &self.bootstrap_servers)?;
        not_empty("kafka.group_id", &self.group_id)?;
        not_empty("kafka.client_id", &self.client_id)?;
        if let Some(id) = &self.group_instance_id {
            valid_instance_id(id)?;
        }
        Ok(())
    }

    /// Replaces `${HOSTNAME}` in `kafka.group_instance_id` by `hostname`.
    pub(super) fn settle_instance_id(&mut self, hostname: impl FnOnce() -> String) {
        if let Some(id) = &mut self.group_instance_id {
            if id.contains(HOSTNAME) {
                *id = id.replace(HOSTNAME, &hostname());
            }
        }
    }
}

/// What `kafka.group_instance_id` may say of the host it runs on.
const HOSTNAME: &str = "${HOSTNAME}";

/// The rules Kafka's brokers apply to a `group.instance.id` (those of a topic name): at
/// most 249 characters of `[a-zA-Z0-9._-]`. A broker refuses any other id at every join,
/// so it is refused here first, by its key.
fn valid_instance_id(id: &str) -> Result<(), ConfigError> {
    const KEY: &str = "kafka.group_instance_id";
    if id.contains("${") {
        return Err(ConfigError::invalid(
            KEY,
            format!("= {id:?}: only {HOSTNAME} is replaced"),
        ));
    }
    not_empty(KEY, id)?;
    if id.len() > 249 {
        return Err(ConfigError::invalid(KEY, "must be at most 249 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ConfigError::invalid(
            KEY,
            format!("must hold only ASCII letters, digits, '.', '_' and '-', not {c:?}"),
        ));
    }
    Ok(())
}

/// librdkafka properties that cache-layer sets itself, because its delivery guarantee
/// depends on them, and what to use instead. Setting one under `kafka.properties` is a
/// configuration error that names both.
pub(crate) const MANAGED_KAFKA_PROPERTIES: [(&str, &str); 10] = [
    ("bootstrap.servers", "use kafka.bootstrap_servers"),
    ("group.id", "use kafka.group_id"),
    ("group.protocol", "use kafka.group_protocol"),
    ("group.instance.id", "use kafka.group_instance_id"),
    ("client.id", "use kafka.client_id"),
    ("auto.offset.reset", "use kafka.auto_offset_reset"),
    (
        "enable.auto.commit",
        "stored offsets are committed every kafka.commit_interval_ms",
    ),
    (
        "enable.auto.offset.store",
        "an offset is stored only after its batch was written",
    ),
    ("auto.commit.interval.ms", "use kafka.commit_interval_ms"),
    (
        "enable.partition.eof",
        "the end of a partition is not an event for cache-layer",
    ),
];

/// librdkafka's `auto.offset.reset`, for a group without a committed offset.
/// The consumer group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The classic protocol: the members assign, each rebalance is a round of joins.
    #[default]
    Classic,
    /// KIP-848: the broker assigns, and a member's change moves only its partitions.
    Consumer,
}

impl GroupProtocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }

    /// The librdkafka properties this protocol does not take, and why: librdkafka
    /// refuses them beside it, so the configuration names them first.
    fn refused_properties(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Classic => &[(
                "group.remote.assignor",
                "it chooses the broker's assignor of the consumer protocol",
            )],
            Self::Consumer => &[
                (
                    "session.timeout.ms",
                    "the broker sets it (group.consumer.session.timeout.ms)",
                ),
                (
                    "heartbeat.interval.ms",
                    "the broker sets it (group.consumer.heartbeat.interval.ms)",
                ),
                (
                    "partition.assignment.strategy",
                    "the broker assigns; choose its assignor with group.remote.assignor",
                ),
                ("group.protocol.type", "it belongs to the classic protocol"),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    #[default]
    Earliest,
    Latest,
    Error,
}

impl AutoOffsetReset {
    pub(crate) fn as_str(self) -> &'static str {
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
/// Numbers and booleans are passed as their text, as librdkafka expects. Printed (by
/// `Debug`, `check-config`), every value but those of [`SHOWN_KAFKA_PROPERTIES`] is masked.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

/// The librdkafka properties printed as they are. Every other one is masked: librdkafka
/// has some 200 properties, marks a dozen as credentials (and adds more with new
/// releases), and a name such as `sasl.oauthbearer.config` does not say that it holds
/// one. So masking is the default, and showing the exception.
pub(crate) const SHOWN_KAFKA_PROPERTIES: [&str; 39] = [
    "allow.auto.create.topics",
    "api.version.request",
    "broker.address.family",
    "check.crcs",
    "client.rack",
    "compression.codec",
    "compression.type",
    "connections.max.idle.ms",
    "debug",
    "enable.ssl.certificate.verification",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "heartbeat.interval.ms",
    "isolation.level",
    "linger.ms",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "message.max.bytes",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "receive.message.max.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "sasl.kerberos.service.name",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.oauthbearer.method",
    "security.protocol",
    "session.timeout.ms",
    "socket.keepalive.enable",
    "socket.timeout.ms",
    "ssl.ca.location",
    "ssl.certificate.location",
    "statistics.interval.ms",
];

impl KafkaProperties {
    /// Whether a property is masked when printed: all but [`SHOWN_KAFKA_PROPERTIES`].
    pub(crate) fn is_secret(name: &str) -> bool {
        !SHOWN_KAFKA_PROPERTIES.contains(&name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Each property with its value, or [`REDACTED`] for a credential.
    fn shown(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter()
            .map(|(k, v)| (k, if Self::is_secret(k) { REDACTED } else { v }))
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.shown())
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
                let value = match node {
                    Node::Text(s) => s,
                    Node::Int(i) => i.to_string(),
                    Node::Float(x) => x.to_string(),
                    Node::Bool(b) => b.to_string(),
                    Node::Table(inner) => {
                        flatten(&name, inner, out);
                        continue;
                    }
                };
                out.insert(name, value);
            }
        }
        let table = BTreeMap::<String, Node>::deserialize(deserializer)?;
        let mut out = BTreeMap::new();
        flatten("", table, &mut out);
        Ok(Self(out))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    pub trends: String,
    pub user_metrics: String,
    pub windows: String,
    /// Empty: no dead-letter topic; rejected messages are then only counted and logged.
    pub dead_letter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            trends: "trend-alerts".into(),
            user_metrics: "user-metrics".into(),
            windows: "keyword-windows".into(),
            dead_letter: String::new(),
        }
    }
}

impl TopicsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        not_empty("topics.trends", &self.trends)?;
        not_empty("topics.user_metrics", &self.user_metrics)?;
        not_empty("topics.windows", &self.windows)?;
        let sources = [&self.trends, &self.user_metrics, &self.windows];
        if sources[0] == sources[1] || sources[0] == sources[2] || sources[1] == sources[2] {
            return Err(ConfigError::invalid(
                "topics",
                "the three source topics must differ",
            ));
        }
        if sources.contains(&&self.dead_letter) {
            return Err(ConfigError::invalid(
                "topics.dead_letter",
                "must not be one of the source topics",
            ));
        }
        Ok(())
    }
}
