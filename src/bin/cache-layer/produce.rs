//! Sending lines to a topic: `KEY<TAB>VALUE`, or just `VALUE` (no key). JSON cannot hold
//! a raw tab, so the first tab of a line always separates a key.

use std::io::BufRead;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Deliveries awaited at once; bounds the producer's memory on large files.
const IN_FLIGHT: usize = 10_000;

/// A producer for the tools, tuned for throughput.
pub fn producer(base: ClientConfig) -> Result<FutureProducer, KafkaError> {
    let mut config = base;
    config
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "60000");
    config.create()
}

/// Splits a line into its optional key and its value.
pub fn split_line(line: &str) -> (Option<&str>, &str) {
    match line.split_once('\t') {
        Some((key, value)) => (Some(key), value),
        None => (None, line),
    }
}

/// Sends every non-empty line and waits for every delivery. Returns how many were sent.
pub async fn produce_lines(
    producer: &FutureProducer,
    topic: &str,
    lines: impl BufRead,
) -> anyhow::Result<u64> {
    let mut pending = FuturesUnordered::new();
    let mut sent = 0u64;
    for line in lines.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if pending.len() >= IN_FLIGHT {
            if let Some(result) = pending.next().await {
                result?;
            }
        }
        let producer = producer.clone();
        let topic = topic.to_owned();
        pending.push(async move {
            let (key, value) = split_line(&line);
            let mut record = FutureRecord::<str, str>::to(&topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(drop)
                .map_err(|(e, _)| anyhow::anyhow!("delivery to {topic} failed: {e}"))
        });
        sent += 1;
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tab_separates_the_key() {
        assert_eq!(split_line("rust\t{\"a\":1}"), (Some("rust"), "{\"a\":1}"));
        assert_eq!(split_line("{\"a\":1}"), (None, "{\"a\":1}"));
        assert_eq!(split_line("\t{}"), (Some(""), "{}"));
    }
}
