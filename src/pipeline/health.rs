//! What the daemon knows of its brokers, for the operator: every Kafka client error is
//! counted by a bounded kind and logged (each distinct error at most once a minute, not
//! once per poll); the errors that stop the consumer from fetching (no broker reachable,
//! authentication, authorization or TLS refused) make the instance unready with that
//! error as the reason; and subscribed topics that do not exist yet are watched until
//! they do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::consumer::GroupConsumer;
use crate::metrics;
use crate::status::Status;

/// How often the same error text may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// How often the subscribed topics are looked up while one is missing, and otherwise.
const TOPIC_CHECK_MISSING: Duration = Duration::from_secs(2);
const TOPIC_CHECK: Duration = Duration::from_secs(10);

/// Every `kind` label of a Kafka client error, for metrics that start at 0.
pub const KAFKA_ERROR_KINDS: [&str; 8] = [
    "all_brokers_down",
    "transport",
    "authentication",
    "authorization",
    "ssl",
    "unknown_topic",
    "timeout",
    "other",
];

/// The `kind` label of a Kafka client error. librdkafka reports a failed TLS handshake
/// or SASL exchange as a transport failure, so its text decides then.
pub(crate) fn error_kind(error: &KafkaError, reason: &str) -> &'static str {
    use RDKafkaErrorCode as Code;
    let text = format!("{error} {reason}");
    if text.contains("SSL") || text.contains("certificate") {
        return "ssl";
    }
    if text.contains("SASL") || text.contains("uthentication") {
        return "authentication";
    }
    match error.rdkafka_error_code() {
        Some(Code::AllBrokersDown) => "all_brokers_down",
        Some(Code::BrokerTransportFailure | Code::Resolve | Code::BrokerNotAvailable) => {
            "transport"
        }
        Some(
            Code::Authentication
            | Code::SaslAuthenticationFailed
            | Code::UnsupportedSASLMechanism
            | Code::IllegalSASLState,
        ) => "authentication",
        Some(
            Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed,
        ) => "authorization",
        Some(Code::SSL) => "ssl",
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition) => {
            "unknown_topic"
        }
        Some(Code::OperationTimedOut | Code::RequestTimedOut | Code::MessageTimedOut) => "timeout",
        _ => "other",
    }
}

/// Whether an error of this kind keeps the consumer from fetching until it is resolved.
fn stops_fetching(kind: &str) -> bool {
    matches!(
        kind,
        "all_brokers_down" | "authentication" | "authorization" | "ssl"
    )
}

/// Counts, logs and records the Kafka client errors of one client.
pub(crate) struct ErrorReporter {
    status: Arc<Status>,
    brokers: String,
    /// When each distinct error text was last logged.
    logged: Mutex<HashMap<String, Instant>>,
}

impl ErrorReporter {
    pub(crate) fn new(status: Arc<Status>, brokers: String) -> Self {
        Self {
            status,
            brokers,
            logged: Mutex::default(),
        }
    }

    /// One error, from librdkafka's error callback or from the consumer's queue.
    pub(crate) fn report(&self, error: &KafkaError, reason: &str) {
        let kind = error_kind(error, reason);
        metrics::kafka_error(kind);
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        // "All brokers down" follows a refused handshake: keep the handshake's reason.
        let keep_cause = kind == "all_brokers_down" && !self.status.kafka_connected();
        let stopped = stops_fetching(kind)
            && !keep_cause
            && self.status.kafka_failed(format!("{kind}: {text}"));
        if !stopped && !self.first_in_a_while(&text) {
            return;
        }
        if stops_fetching(kind) {
            error!(kind, brokers = %self.brokers, "the consumer cannot fetch: {text}; retrying, and unready meanwhile");
        } else {
            warn!(kind, brokers = %self.brokers, "Kafka client error: {text}");
        }
    }

    /// A broker answered: what stopped the consumer is over.
    pub(crate) fn recovered(&self) {
        if self.status.kafka_recovered() {
            info!(brokers = %self.brokers, "Kafka reachable again; consuming");
        }
    }

    fn first_in_a_while(&self, text: &str) -> bool {
        let mut logged = self.logged.lock().expect("not poisoned");
        let now = Instant::now();
        match logged.get(text) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                // Bounded: forget what has not recurred for a while.
                logged.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
                logged.insert(text.to_owned(), now);
                true
            }
        }
    }
}

/// Looks the subscribed topics up until `shutdown`, every 2 s while one is missing and
/// every 10 s otherwise, and records which are missing: in the status (readiness), the
/// metrics and the log. librdkafka itself picks up a topic created later at its next
/// metadata refresh (`topic.metadata.refresh.interval.ms`, 3 s unless set).
pub(crate) async fn watch_topics(
    consumer: Arc<GroupConsumer>,
    topics: Vec<String>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let mut missing: Vec<String> = Vec::new();
    loop {
        let lookup = {
            let (consumer, topics) = (Arc::clone(&consumer), topics.clone());
            tokio::task::spawn_blocking(move || missing_topics(&consumer, &topics))
        };
        if let Ok(Some(now_missing)) = lookup.await {
            for topic in &topics {
                let absent = now_missing.contains(topic);
                metrics::topic_missing(topic, absent);
                match (absent, missing.contains(topic)) {
                    (true, false) => warn!(
                        topic,
                        "subscribed topic does not exist; consuming it once it is created"
                    ),
                    (false, true) => info!(topic, "subscribed topic exists now"),
                    _ => {}
                }
            }
            status.set_missing_topics(now_missing.clone());
            missing = now_missing;
        }
        let pause = if missing.is_empty() {
            TOPIC_CHECK
        } else {
            TOPIC_CHECK_MISSING
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The topics the brokers do not know; `None` when they could not be asked.
fn missing_topics(consumer: &GroupConsumer, topics: &[String]) -> Option<Vec<String>> {
    let mut missing = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TOPIC_CHECK_MISSING)
            .ok()?;
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !known {
            missing.push(topic.clone());
        }
    }
    Some(missing)
}
