//! Kafka for the tests: librdkafka's in-process mock cluster (a real Kafka wire-protocol
//! broker), a producer, a reader of whole topics and the group's committed offsets, and a
//! daemon runner.
//!
//! librdkafka's synchronous calls (offsets, watermarks, polling a topic) run on tokio's
//! blocking pool, and the client that reads a group's offsets is made once per group, so
//! that a test polling for its commits costs one request per poll and no new client.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_layer::config::Config;
use cache_layer::models::MessageKind;
use cache_layer::status::Status;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::generate::Generated;

pub const TRENDS: &str = "trend-alerts";
pub const USERS: &str = "user-metrics";
pub const WINDOWS: &str = "keyword-windows";
pub const DEAD_LETTER: &str = "cache-layer-dlq";
pub const GROUP: &str = "cache-layer-test";

pub struct MockKafka {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    broker: Broker,
}

/// The clients a test uses on one broker, librdkafka's mock cluster or tansu: a producer,
/// and readers of whole topics and of a group's committed offsets.
pub struct Broker {
    bootstrap: String,
    pub partitions: i32,
    producer: FutureProducer,
    /// One offsets reader per consumer group, made on first use.
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl MockKafka {
    /// One broker, the three source topics with `partitions` each, and the dead-letter topic.
    pub fn start(partitions: i32) -> Self {
        Self::start_with(partitions, &[TRENDS, USERS, WINDOWS])
    }

    /// One broker, these source topics with `partitions` each, and the dead-letter topic;
    /// the others can be created later with [`MockKafka::create_topic`].
    pub fn start_with(partitions: i32, topics: &[&str]) -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster starts");
        let kafka = Self {
            broker: Broker::new(&cluster.bootstrap_servers(), partitions),
            cluster,
        };
        for topic in topics {
            kafka.create_topic(topic);
        }
        kafka
            .cluster
            .create_topic(DEAD_LETTER, 1, 1)
            .expect("topic created");
        kafka
    }

    /// Creates a source topic with the cluster's partition count.
    pub fn create_topic(&self, topic: &str) {
        self.cluster
            .create_topic(topic, self.partitions, 1)
            .expect("topic created");
    }
}

/// The mock cluster is used through the clients of [`Broker`], as tansu is.
impl std::ops::Deref for MockKafka {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

impl Broker {
    /// Clients of the broker at `bootstrap`, whose source topics have `partitions` each.
    pub fn new(bootstrap: &str, partitions: i32) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            partitions,
            producer: producer(bootstrap, "none"),
            offset_readers: Mutex::default(),
        }
    }

    /// Produces records compressed with `codec` (`gzip`, `snappy`, `lz4`, `zstd`).
    pub async fn produce_compressed<K: AsRef<str>, P: AsRef<[u8]>>(
        &self,
        topic: &str,
        codec: &str,
        records: &[(K, P)],
    ) {
        let producer = producer(&self.bootstrap(), codec);
        send_all(&producer, topic, None, records).await;
    }

    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Produces (key, payload) records to a topic and waits for every delivery.
    pub async fn produce<K: AsRef<str>, P: AsRef<[u8]>>(&self, topic: &str, records: &[(K, P)]) {
        self.produce_to(topic, None, records).await
    }

    /// Produces records to one partition, or by key with `None`, and waits for every
    /// delivery. The mock broker keeps about 5 MB per partition: spread large records.
    pub async fn produce_to<K: AsRef<str>, P: AsRef<[u8]>>(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[(K, P)],
    ) {
        send_all(&self.producer, topic, partition, records).await;
    }

    /// Produces a generated stream, each record to its kind's topic, in stream order.
    pub async fn produce_generated(&self, stream: &[Generated]) {
        for chunk in stream.chunk_by(|a, b| a.kind == b.kind) {
            let topic = match chunk[0].kind {
                MessageKind::Trends => TRENDS,
                MessageKind::UserMetrics => USERS,
                MessageKind::Windows => WINDOWS,
            };
            let records: Vec<(&str, &str)> = chunk
                .iter()
                .map(|m| (m.key.as_str(), m.payload.as_str()))
                .collect();
            self.produce(topic, &records).await;
        }
    }

    /// The group's committed offset per (topic, partition) of the source topics; a
    /// partition without a commit is absent.
    pub async fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let reader = self.offsets_reader(group);
        let mut tpl = TopicPartitionList::new();
        for topic in [TRENDS, USERS, WINDOWS] {
            for partition in 0..self.partitions {
                tpl.add_partition(topic, partition);
            }
        }
        let committed = blocking(move || reader.committed_offsets(tpl, Duration::from_secs(10)))
            .await
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect()
    }

    /// The sum of the committed offsets: how many messages the group acknowledged.
    pub async fn committed_total(&self, group: &str) -> i64 {
        self.committed(group).await.values().sum()
    }

    /// Waits until `group` has committed exactly `total` messages, failing the test after
    /// `timeout`.
    pub async fn wait_committed(&self, group: &str, total: i64, timeout: Duration) {
        let what = format!("{total} messages committed by {group}");
        crate::wait_until(timeout, &what, || async {
            self.committed_total(group).await == total
        })
        .await;
    }

    fn offsets_reader(&self, group: &str) -> Arc<BaseConsumer> {
        let mut readers = self.offset_readers.lock().expect("not poisoned");
        let reader = readers.entry(group.to_owned()).or_insert_with(|| {
            Arc::new(
                ClientConfig::new()
                    .set("bootstrap.servers", self.bootstrap())
                    .set("group.id", group)
                    .create()
                    .expect("consumer"),
            )
        });
        Arc::clone(reader)
    }

    /// The offset after the last record of a partition.
    pub async fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("consumer");
        let topic = topic.to_owned();
        blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)))
            .await
            .expect("watermarks")
            .1
    }

    /// Reads `count` records of partition 0 of a topic from the beginning, with their
    /// headers; fewer when the topic has fewer after 20 s.
    pub async fn read(&self, topic: &str, count: usize) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut records = Vec::new();
            while records.len() < count && Instant::now() < deadline {
                if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                    records.push(Record::from(&message.expect("readable")));
                }
            }
            records
        })
        .await
    }
}

/// A producer for the tests, batches compressed with `codec`.
fn producer(bootstrap: &str, codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "60000")
        .set("compression.type", codec)
        // Room for the oversized messages some tests produce.
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer")
}

/// Sends records and waits for every delivery.
async fn send_all<K: AsRef<str>, P: AsRef<[u8]>>(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    records: &[(K, P)],
) {
    let sends = records.iter().map(|(key, payload)| {
        let mut record = FutureRecord::to(topic)
            .key(key.as_ref())
            .payload(payload.as_ref());
        record.partition = partition;
        producer.send(record, Duration::from_secs(60))
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e).expect("delivered");
    }
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call)
        .await
        .expect("the blocking call does not panic")
}

#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// The record with this key; the test fails when there is none.
pub fn record<'a>(records: &'a [Record], key: &str) -> &'a Record {
    records
        .iter()
        .find(|r| r.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no record with key {key:?} in {records:?}"))
}

impl<M: Message> From<&M> for Record {
    fn from(message: &M) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}

/// A daemon configuration for these tests: fast batches, retries and commits.
pub fn daemon_config(kafka: &MockKafka, redis_url: &str) -> Config {
    daemon_config_for(&kafka.bootstrap(), redis_url)
}

/// [`daemon_config`] for any broker.
pub fn daemon_config_for(bootstrap: &str, redis_url: &str) -> Config {
    let toml = format!(
        r#"
        [kafka]
        bootstrap_servers = "{}"
        group_id = "{GROUP}"
        commit_interval_ms = 100
        shutdown_timeout_ms = 10000
        [kafka.properties]
        "session.timeout.ms" = 6000
        "heartbeat.interval.ms" = 500
        "topic.metadata.refresh.interval.ms" = 500
        # The mock broker holds fetches for the whole wait, even when data arrives.
        "fetch.wait.max.ms" = 10
        [topics]
        dead_letter = "{DEAD_LETTER}"
        [redis]
        url = "{redis_url}"
        [http]
        listen = "127.0.0.1:0"
        api_listen = "127.0.0.1:0"
        admin_token = "test-admin-token"
        [batch]
        max_messages = 500
        max_wait_ms = 20
        retry_initial_ms = 50
        retry_max_ms = 500
        "#,
        bootstrap
    );
    Config::from_toml(&toml).expect("test config is valid")
}

/// A daemon running in this process, with its own status counters.
pub struct RunningDaemon {
    pub shutdown: CancellationToken,
    pub status: Arc<Status>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl RunningDaemon {
    pub fn spawn(config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let status = Arc::new(Status::default());
        let task = tokio::spawn(cache_layer::run_with_status(
            config,
            shutdown.clone(),
            Arc::clone(&status),
        ));
        Self {
            shutdown,
            status,
            task,
        }
    }

    /// `/readyz`: the status code and the body; `None` while nothing answers.
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let addr = self.status.http_addr()?;
        let (code, body) = crate::http::get(addr, "/readyz").await?;
        Some((code, serde_json::from_str(&body).ok()?))
    }

    /// Requests a drain and waits for the daemon to finish it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the daemon drains in time")
            .expect("the daemon task does not panic")
            .expect("the daemon exits cleanly");
    }
}
