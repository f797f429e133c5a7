//! What the daemon knows of its brokers' errors, for the operator: every Kafka client
//! error is counted by its [`KafkaErrorKind`] and logged (each distinct error at most
//! once a minute, not once per poll); the errors that stop the consumer from fetching
//! (no broker reachable, authentication, authorization or TLS refused) make the
//! instance unready with that error as the reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use tracing::{error, info, warn};

use crate::events;
use crate::kafka::KafkaErrorKind;
use crate::status::Status;

/// How often the same error text may be logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts, logs and records the Kafka client errors of one client.
pub(crate) struct ErrorReporter {
    status: Arc<Status>,
    brokers: String,
    /// When each distinct error text was last logged.
    logged: Mutex<HashMap<String, Instant>>,
}

impl ErrorReporter {
    pub(super) fn new(status: Arc<Status>, brokers: String) -> Self {
        Self {
            status,
            brokers,
            logged: Mutex::default(),
        }
    }

    /// One error, from librdkafka's error callback or from the consumer's queue.
    pub(crate) fn report(&self, error: &KafkaError, reason: &str) {
        let kind = KafkaErrorKind::of(error, reason);
        events::kafka_error(kind);
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        // "All brokers down" follows a refused handshake: keep the handshake's reason.
        let keep_cause = kind == KafkaErrorKind::AllBrokersDown && !self.status.kafka_connected();
        let stopped = kind.stops_fetching()
            && !keep_cause
            && self.status.kafka_failed(format!("{kind}: {text}"));
        if !stopped && !self.first_in_a_while(&text) {
            return;
        }
        if kind.stops_fetching() {
            error!(%kind, brokers = %self.brokers, "the consumer cannot fetch: {text}; retrying, and unready meanwhile");
        } else {
            warn!(%kind, brokers = %self.brokers, "Kafka client error: {text}");
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
