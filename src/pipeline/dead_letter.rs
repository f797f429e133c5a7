//! The dead-letter topic: rejected and refused messages, kept whole, with headers saying
//! why.
//!
//! A dead-lettered record carries the original key and bytes, and these headers:
//! `cache-layer-error-reason` (a reason label such as `not_json` or `redis_refused`),
//! `cache-layer-error-detail` (the human-readable error), `cache-layer-source-topic`,
//! `cache-layer-source-partition` and `cache-layer-source-offset`.
//!
//! A dead letter can always be produced. The producer is sized for the largest message
//! the daemon accepts (`batch.max_message_bytes`) plus the headers. When the broker still
//! refuses a record for its size (its own `max.message.bytes`), a copy truncated to
//! [`TRUNCATED_BYTES`] is sent instead, with `cache-layer-original-bytes` and
//! `cache-layer-truncated-to` headers. A record that cannot be produced even so, or that
//! the broker refuses for any other reason of its own, is counted, logged at ERROR and
//! skipped: one record never stalls the stage. Failures of the topic itself (a broker
//! down, a missing topic) are errors, and the caller retries.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, warn};

use super::batch::Rejected;
use crate::config::Config;
use crate::events;
use crate::kafka;

pub const HEADER_REASON: &str = "cache-layer-error-reason";
pub const HEADER_DETAIL: &str = "cache-layer-error-detail";
pub const HEADER_TOPIC: &str = "cache-layer-source-topic";
pub const HEADER_PARTITION: &str = "cache-layer-source-partition";
pub const HEADER_OFFSET: &str = "cache-layer-source-offset";
pub const HEADER_ORIGINAL_BYTES: &str = "cache-layer-original-bytes";
pub const HEADER_TRUNCATED_TO: &str = "cache-layer-truncated-to";

/// How much of a payload a truncated dead letter keeps.
pub const TRUNCATED_BYTES: usize = 64 * 1024;

/// Room for the headers and the record's framing above the largest accepted payload.
const HEADERS_ROOM: usize = 64 * 1024;

/// How long one delivery may take before the batch write counts as failed and is retried.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct DeadLetter {
    producer: FutureProducer,
    topic: String,
}

/// What became of one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not delivered yet; the next attempt sends it.
    Pending,
    Delivered,
    Truncated,
    /// The broker refuses it even truncated: counted and logged, not retried.
    Dropped,
}

impl DeadLetter {
    /// The producer for `topics.dead_letter`, or `None` when it is not configured.
    pub(crate) fn new(config: &Config) -> Result<Option<Self>, KafkaError> {
        if config.topics.dead_letter.is_empty() {
            return Ok(None);
        }
        let mut client = kafka::client_config(config);
        client.set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
        if !config.kafka.properties.0.contains_key("message.max.bytes") {
            let largest = config.batch.max_message_bytes + HEADERS_ROOM;
            client.set("message.max.bytes", largest.to_string());
        }
        Ok(Some(Self {
            producer: client.create()?,
            topic: config.topics.dead_letter.clone(),
        }))
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every dead letter whose fate is still pending, concurrently, and records
    /// each one's fate. Fails when the topic itself cannot take records: the caller
    /// retries, and then sends only what is still pending, so a record may be sent twice
    /// but is never dropped for a failure that can pass.
    pub(crate) async fn send_all(
        &self,
        letters: &[Rejected],
        fates: &mut [Fate],
    ) -> Result<(), KafkaError> {
        let pending = letters
            .iter()
            .zip(fates.iter_mut())
            .filter(|(_, fate)| **fate == Fate::Pending);
        let sends = pending.map(|(letter, fate)| async move {
            let sent = self.send(letter).await;
            if let Ok(done) = &sent {
                *fate = *done;
            }
            sent
        });
        join_all(sends)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// Sends one dead letter: whole, else truncated, else nothing (see the module docs).
    async fn send(&self, letter: &Rejected) -> Result<Fate, KafkaError> {
        let mut refusal = None;
        for (truncate_to, fate) in [
            (None, Fate::Delivered),
            (Some(TRUNCATED_BYTES), Fate::Truncated),
        ] {
            match self.produce(letter, truncate_to).await {
                Ok(()) => {
                    if fate == Fate::Truncated {
                        events::dead_letter_truncated(&letter.origin.topic);
                        log_refusal(letter, refusal.as_ref(), "sent it truncated");
                    }
                    return Ok(fate);
                }
                Err(e) if refuses_the_record(&e) => refusal = Some(e),
                Err(e) => return Err(e),
            }
        }
        events::dead_letter_dropped(&letter.origin.topic);
        log_refusal(letter, refusal.as_ref(), "skipped it, even truncated");
        Ok(Fate::Dropped)
    }

    /// Produces a dead letter, its payload cut to `truncate_to` bytes if given.
    async fn produce(
        &self,
        letter: &Rejected,
        truncate_to: Option<usize>,
    ) -> Result<(), KafkaError> {
        let partition = letter.origin.partition.to_string();
        let offset = letter.origin.offset.to_string();
        let detail = letter.error.to_string();
        let original_bytes = letter.payload.len().to_string();
        let mut headers = OwnedHeaders::new()
            .insert(header(HEADER_REASON, letter.error.reason.as_str()))
            .insert(header(HEADER_DETAIL, &detail))
            .insert(header(HEADER_TOPIC, &letter.origin.topic))
            .insert(header(HEADER_PARTITION, &partition))
            .insert(header(HEADER_OFFSET, &offset));
        let mut payload = letter.payload.as_slice();
        if let Some(limit) = truncate_to.filter(|limit| *limit < payload.len()) {
            payload = &payload[..limit];
            headers = headers
                .insert(header(HEADER_ORIGINAL_BYTES, &original_bytes))
                .insert(header(HEADER_TRUNCATED_TO, &limit.to_string()));
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        self.producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

/// WARN for a dead letter sent truncated, ERROR for one skipped.
fn log_refusal(letter: &Rejected, error: Option<&KafkaError>, outcome: &str) {
    let error = error.map(ToString::to_string).unwrap_or_default();
    let (topic, partition, offset) = (
        &letter.origin.topic,
        letter.origin.partition,
        letter.origin.offset,
    );
    let bytes = letter.payload.len();
    if outcome.starts_with("sent") {
        warn!(
            topic,
            partition,
            offset,
            bytes,
            error,
            "the dead-letter topic refuses the record whole; {outcome}"
        );
    } else {
        error!(
            topic,
            partition, offset, bytes, error, "the dead-letter topic refuses the record; {outcome}"
        );
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Whether the broker (or librdkafka, before sending) refuses this record for what it
/// is, so that sending it again cannot help.
fn refuses_the_record(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}
