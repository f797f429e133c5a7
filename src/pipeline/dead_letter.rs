//! The dead-letter topic: rejected messages, kept whole, with headers saying why.
//!
//! A dead-lettered record carries the original key and bytes, and these headers:
//! `cache-layer-error-reason` (a reason label such as `not_json`),
//! `cache-layer-error-detail` (the human-readable error), `cache-layer-source-topic`,
//! `cache-layer-source-partition` and `cache-layer-source-offset`.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::batch::Rejected;
use super::kafka;
use crate::config::Config;

pub const HEADER_REASON: &str = "cache-layer-error-reason";
pub const HEADER_DETAIL: &str = "cache-layer-error-detail";
pub const HEADER_TOPIC: &str = "cache-layer-source-topic";
pub const HEADER_PARTITION: &str = "cache-layer-source-partition";
pub const HEADER_OFFSET: &str = "cache-layer-source-offset";

/// How long one delivery may take before the batch write counts as failed and is retried.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct DeadLetter {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetter {
    /// The producer for `topics.dead_letter`, or `None` when it is not configured.
    pub(crate) fn new(config: &Config) -> Result<Option<Self>, KafkaError> {
        if config.topics.dead_letter.is_empty() {
            return Ok(None);
        }
        let producer = kafka::client_config(config)
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(Some(Self {
            producer,
            topic: config.topics.dead_letter.clone(),
        }))
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every rejected message and waits until all were acknowledged. Any failure
    /// fails the whole call; the caller retries it, so a record may be sent twice but is
    /// never dropped.
    pub(crate) async fn send_all(&self, rejects: &[Rejected]) -> Result<(), KafkaError> {
        try_join_all(rejects.iter().map(|rejected| self.send(rejected))).await?;
        Ok(())
    }

    async fn send(&self, rejected: &Rejected) -> Result<(), KafkaError> {
        let partition = rejected.origin.partition.to_string();
        let offset = rejected.origin.offset.to_string();
        let detail = rejected.error.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(rejected.error.reason.as_str()),
            })
            .insert(Header {
                key: HEADER_DETAIL,
                value: Some(&detail),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(&rejected.origin.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&rejected.payload)
            .headers(headers);
        if let Some(key) = &rejected.key {
            record = record.key(key.as_slice());
        }
        self.producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}
