//! The Kafka client side, as `cache` is the Redis side: the librdkafka configuration,
//! built in one place for every client the daemon makes (the group consumer, the
//! dead-letter producer, the operator's `produce` and `offsets`), and the kinds its
//! errors are counted and judged by.
//!
//! Every client gets the brokers, the client id and the `kafka.properties` pass-through
//! (security, timeouts, ...). The consumer adds the settings its delivery guarantee
//! depends on, which `kafka.properties` cannot change.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::config::Config;

/// librdkafka settings that differ from librdkafka's defaults, unless `kafka.properties`
/// sets them; BENCHMARKS.md has what each bought:
/// - statistics (the consumer lag, whether a broker is up) every 5 s;
/// - a prefetch queue of 2 MiB instead of 64 MiB: the batch being written is the real
///   buffer, and the daemon's memory stays bounded;
/// - a fetch back-off of 1 ms instead of 1 s once that queue is full, so that the
///   partitions are refetched as soon as the loop has taken from the queue rather than
///   sit idle after every refill; 0 spins the fetcher;
/// - metadata refreshed every 3 s instead of 5 minutes, so that a source topic created
///   after the daemon started is consumed within seconds.
pub const CONSUMER_DEFAULTS: [(&str, &str); 4] = [
    ("statistics.interval.ms", "5000"),
    ("queued.max.messages.kbytes", "2048"),
    ("fetch.queue.backoff.ms", "1"),
    ("topic.metadata.refresh.interval.ms", "3000"),
];

/// A client configuration with the brokers, the client id and the pass-through
/// properties: what a producer needs.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (name, value) in config.kafka.properties.iter() {
        client.set(name, value);
    }
    client
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("client.id", &config.kafka.client_id);
    client
}

/// The group consumer's configuration: offsets are stored by the daemon after each write
/// (`enable.auto.offset.store = false`) and committed by librdkafka every
/// `kafka.commit_interval_ms`.
pub(crate) fn consumer_config(config: &Config) -> ClientConfig {
    let mut client = client_config(config);
    client
        .set("group.id", &config.kafka.group_id)
        .set("group.protocol", config.kafka.group_protocol.as_str())
        .set("auto.offset.reset", config.kafka.auto_offset_reset.as_str())
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            config.kafka.commit_interval.as_millis().to_string(),
        )
        .set("enable.partition.eof", "false");
    if let Some(id) = &config.kafka.group_instance_id {
        client.set("group.instance.id", id);
    }
    for (name, value) in CONSUMER_DEFAULTS {
        if !config.kafka.properties.0.contains_key(name) {
            client.set(name, value);
        }
    }
    client
}

/// The group's committed offsets of `partitions`, as `Consumer::committed_offsets`,
/// asked again while the group's coordinator is not ready, until `timeout` has passed.
/// A broker answers so while it elects or loads the coordinator: on a group's first
/// request to a new cluster, which creates `__consumer_offsets`, and after a leader
/// moves. librdkafka returns those answers rather than waiting them out.
pub(crate) fn committed_offsets<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    partitions: &TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<TopicPartitionList> {
    use RDKafkaErrorCode as Code;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.committed_offsets(partitions.clone(), left) {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        Code::NotCoordinator
                            | Code::CoordinatorLoadInProgress
                            | Code::CoordinatorNotAvailable
                    )
                ) && left > pause =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            committed => return committed,
        }
    }
}

/// What a Kafka client error is, for the operator: the `kind` label it is counted by,
/// and whether it keeps the consumer from fetching until it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KafkaErrorKind {
    AllBrokersDown,
    Transport,
    Authentication,
    Authorization,
    Ssl,
    UnknownTopic,
    Timeout,
    Other,
}

impl KafkaErrorKind {
    /// Every kind, for metrics that start at 0.
    pub(crate) const ALL: [Self; 8] = [
        Self::AllBrokersDown,
        Self::Transport,
        Self::Authentication,
        Self::Authorization,
        Self::Ssl,
        Self::UnknownTopic,
        Self::Timeout,
        Self::Other,
    ];

    /// The kind of a client error. librdkafka reports a failed TLS handshake or SASL
    /// exchange as a transport failure, so its text decides then.
    pub(crate) fn of(error: &KafkaError, reason: &str) -> Self {
        use RDKafkaErrorCode as Code;
        let text = format!("{error} {reason}");
        if text.contains("SSL") || text.contains("certificate") {
            return Self::Ssl;
        }
        if text.contains("SASL") || text.contains("uthentication") {
            return Self::Authentication;
        }
        match error.rdkafka_error_code() {
            Some(Code::AllBrokersDown) => Self::AllBrokersDown,
            Some(Code::BrokerTransportFailure | Code::Resolve | Code::BrokerNotAvailable) => {
                Self::Transport
            }
            Some(
                Code::Authentication
                | Code::SaslAuthenticationFailed
                | Code::UnsupportedSASLMechanism
                | Code::IllegalSASLState,
            ) => Self::Authentication,
            Some(
                Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::ClusterAuthorizationFailed,
            ) => Self::Authorization,
            Some(Code::SSL) => Self::Ssl,
            Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition) => {
                Self::UnknownTopic
            }
            Some(Code::OperationTimedOut | Code::RequestTimedOut | Code::MessageTimedOut) => {
                Self::Timeout
            }
            _ => Self::Other,
        }
    }

    /// The `kind` label of `cache_layer_kafka_errors_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::AllBrokersDown => "all_brokers_down",
            Self::Transport => "transport",
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::Ssl => "ssl",
            Self::UnknownTopic => "unknown_topic",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// Whether an error of this kind keeps the consumer from fetching until it is
    /// resolved: no broker reachable, or the brokers refusing who the daemon is.
    pub(crate) fn stops_fetching(self) -> bool {
        matches!(
            self,
            Self::AllBrokersDown | Self::Authentication | Self::Authorization | Self::Ssl
        )
    }
}

impl std::fmt::Display for KafkaErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
