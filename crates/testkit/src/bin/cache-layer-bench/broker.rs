//! The Kafka side of the benchmark: topics, the preloaded stream, and the group offsets
//! that say how far a daemon got. librdkafka's synchronous calls run on tokio's blocking
//! pool, so that they never stall the runtime that times the daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use cache_layer::kafka::CONSUMER_DEFAULTS;
use cache_layer::models::MessageKind;
use cache_layer_testkit::generate::Generated;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The source topics (their names under a prefix) and the kind each carries.
pub const TOPICS: [(&str, MessageKind); 3] = [
    ("trend-alerts", MessageKind::Trends),
    ("user-metrics", MessageKind::UserMetrics),
    ("keyword-windows", MessageKind::Windows),
];

pub type Mock = MockCluster<'static, DefaultProducerContext>;

pub fn topic_name(prefix: &str, topic: &str) -> String {
    format!("{prefix}-{topic}")
}

/// The source topics' names under `prefix`, for a subscription.
pub fn topic_names(prefix: &str) -> Vec<String> {
    TOPICS.iter().map(|(t, _)| topic_name(prefix, t)).collect()
}

/// The name of each kind's topic under `prefix`.
pub fn topics_by_kind(prefix: &str) -> HashMap<MessageKind, String> {
    TOPICS
        .iter()
        .map(|(t, k)| (*k, topic_name(prefix, t)))
        .collect()
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(call).await?
}

/// Creates the source topics and the dead-letter topic under `prefix`: through the mock
/// cluster's own API, or the Kafka admin API of an external broker.
pub async fn create_topics(
    mock: Option<&Mock>,
    bootstrap: &str,
    partitions: i32,
    prefix: &str,
) -> anyhow::Result<()> {
    let names: Vec<String> = TOPICS
        .iter()
        .map(|(t, _)| topic_name(prefix, t))
        .chain([topic_name(prefix, "dlq")])
        .collect();
    if let Some(mock) = mock {
        for name in &names {
            mock.create_topic(name, partitions, 1)?;
        }
        return Ok(());
    }
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        if let Err((topic, code)) = result {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                bail!("cannot create {topic}: {code}");
            }
        }
    }
    // The controller answers once the topics exist; the broker serves them once its
    // metadata has every partition's leader, which a loaded broker takes a moment for.
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &names {
            loop {
                let metadata = client.fetch_metadata(Some(name), Duration::from_secs(5))?;
                let led = metadata.topics().iter().any(|t| {
                    t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                });
                if led {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the broker does not serve {name} yet"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    })
    .await
}

/// Deletes the topics under `prefix`, once a scenario is done with them, so that the
/// next one starts on a broker holding no more than this one did (a broker's page cache
/// and, for a memory-backed stand-in, its heap grow with what it holds). What the broker
/// does not delete is only reported.
pub async fn delete_topics(bootstrap: &str, prefix: &str) -> anyhow::Result<()> {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let names: Vec<String> = topic_names(prefix)
        .into_iter()
        .chain([topic_name(prefix, "dlq")])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.delete_topics(&names, &options).await {
        Ok(results) => {
            for (topic, code) in results.into_iter().filter_map(Result::err) {
                eprintln!("cannot delete {topic}: {code}; the broker keeps it");
            }
        }
        Err(e) => eprintln!("cannot delete the topics under {prefix}: {e}; the broker keeps them"),
    }
    Ok(())
}

/// A plain consumer with the daemon's fetch settings: its `fetch.wait.max.ms` and the
/// prefetch defaults it sets (`CONSUMER_DEFAULTS`), so that a ceiling or a baseline
/// fetches as the daemon does. Offsets are not committed.
pub fn raw_consumer_config(bootstrap: &str, group: &str, fetch_wait_ms: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    for (name, value) in CONSUMER_DEFAULTS {
        if name != "statistics.interval.ms" {
            config.set(name, value);
        }
    }
    config
}

fn bulk_producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        // The large scenario's messages of about 1 MiB, over librdkafka's default.
        .set("message.max.bytes", "1048576");
    config
}

/// Counts failed deliveries, which a plain `BaseProducer` would drop silently.
#[derive(Default)]
struct DeliveryCheck {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryCheck {}

impl rdkafka::producer::ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Produces the whole stream and waits for every delivery; any failed delivery fails it.
/// With `per_transaction`, as an exactly-once upstream writes: in transactions of that
/// many messages, each committed, so that each leaves a marker in every partition it
/// wrote.
pub async fn preload(
    bootstrap: &str,
    prefix: &str,
    stream: Arc<Vec<Generated>>,
    per_transaction: Option<usize>,
) -> anyhow::Result<()> {
    let mut config = bulk_producer_config(bootstrap);
    if per_transaction.is_some() {
        config
            .set("transactional.id", format!("{prefix}-upstream"))
            // At least the deliveries' timeout, as librdkafka requires.
            .set("transaction.timeout.ms", "120000");
    }
    let producer: BaseProducer<DeliveryCheck> =
        config.create_with_context(DeliveryCheck::default())?;
    let topics = topics_by_kind(prefix);
    blocking(move || {
        let timeout = Duration::from_secs(120);
        let chunk = per_transaction.unwrap_or(stream.len()).max(1);
        if per_transaction.is_some() {
            producer.init_transactions(timeout)?;
        }
        for messages in stream.chunks(chunk) {
            if per_transaction.is_some() {
                producer.begin_transaction()?;
            }
            for message in messages {
                let mut record = BaseRecord::to(&topics[&message.kind])
                    .key(&message.key)
                    .payload(&message.payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((e, back))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(10));
                            record = back;
                        }
                        Err((e, _)) => bail!("produce failed: {e}"),
                    }
                }
            }
            if per_transaction.is_some() {
                producer.commit_transaction(timeout)?;
            }
        }
        producer.flush(Duration::from_secs(300))?;
        let context = producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        let first = context.first_error.lock().expect("not poisoned").clone();
        ensure!(
            failed == 0,
            "{failed} deliveries failed, the first with: {}",
            first.unwrap_or_default()
        );
        Ok(())
    })
    .await
}

/// Refuses to go on when the broker does not hold every preloaded message (the mock
/// cluster silently drops the oldest beyond about 5 MB per partition).
pub async fn verify_present(
    bootstrap: &str,
    prefix: &str,
    partitions: i32,
    stream: &[Generated],
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let expected: Vec<(String, i64)> = TOPICS
        .iter()
        .map(|(topic, kind)| {
            let count = stream.iter().filter(|m| m.kind == *kind).count() as i64;
            (topic_name(prefix, topic), count)
        })
        .collect();
    blocking(move || {
        for (topic, expected) in expected {
            let mut held = 0;
            let mut marks = Vec::new();
            for partition in 0..partitions {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                held += high - low;
                marks.push(format!("{partition}:{low}..{high}"));
            }
            ensure!(
                held == expected,
                "the broker holds {held} of the {expected} messages produced to {topic} (watermarks {}): it dropped some \
                 (librdkafka's mock cluster keeps about 5 MB per partition). Use fewer --messages, \
                 more --partitions, or Apache Kafka (the default broker).",
                marks.join(" ")
            );
        }
        Ok(())
    })
    .await
}

/// How many partitions the first source topic under `prefix` has.
pub async fn partition_count(bootstrap: &str, prefix: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topic = topic_name(prefix, TOPICS[0].0);
    blocking(move || {
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32))
    })
    .await
}

/// Reads a group's committed offsets. Made once, so that polling it costs one request
/// and not a new librdkafka client (which would slow the measured daemon).
pub struct OffsetsReader {
    consumer: Arc<BaseConsumer>,
    partitions: TopicPartitionList,
}

impl OffsetsReader {
    pub fn new(
        bootstrap: &str,
        group: &str,
        prefix: &str,
        partitions: i32,
    ) -> anyhow::Result<Self> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for (topic, _) in TOPICS {
            for partition in 0..partitions {
                tpl.add_partition(&topic_name(prefix, topic), partition);
            }
        }
        Ok(Self {
            consumer: Arc::new(consumer),
            partitions: tpl,
        })
    }

    /// The sum of the source topics' log ends (their last stable offsets): what the
    /// group's commits add up to once it has taken everything, transaction markers
    /// included.
    pub async fn log_end(&self) -> anyhow::Result<i64> {
        let consumer = Arc::clone(&self.consumer);
        let tpl = self.partitions.clone();
        blocking(move || {
            let mut end = 0;
            for e in tpl.elements() {
                end += consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?
                    .1;
            }
            Ok(end)
        })
        .await
    }

    /// The sum of the group's committed offsets over the source topics.
    pub async fn committed(&self) -> anyhow::Result<i64> {
        let consumer = Arc::clone(&self.consumer);
        let tpl = self.partitions.clone();
        let offsets =
            blocking(move || Ok(consumer.committed_offsets(tpl, Duration::from_secs(10))?)).await?;
        Ok(offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum())
    }
}
