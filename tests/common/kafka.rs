//! Kafka for the tests: librdkafka's in-process mock cluster (a real Kafka wire-protocol
//! broker), a producer, a reader of whole topics and the group's committed offsets, and a
//! daemon runner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_layer::config::Config;
use cache_layer::status::Status;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TRENDS: &str = "trend-alerts";
pub const USERS: &str = "user-metrics";
pub const WINDOWS: &str = "keyword-windows";
pub const DEAD_LETTER: &str = "cache-layer-dlq";
pub const GROUP: &str = "cache-layer-test";

pub struct MockKafka {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub partitions: i32,
    producer: FutureProducer,
}

impl MockKafka {
    /// One broker, the three source topics with `partitions` each, and the dead-letter topic.
    pub fn start(partitions: i32) -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster starts");
        for topic in [TRENDS, USERS, WINDOWS] {
            cluster
                .create_topic(topic, partitions, 1)
                .expect("topic created");
        }
        cluster
            .create_topic(DEAD_LETTER, 1, 1)
            .expect("topic created");
        let producer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("linger.ms", "1")
            .set("message.timeout.ms", "60000")
            .create()
            .expect("producer");
        Self {
            cluster,
            partitions,
            producer,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Produces (key, payload) records to a topic and waits for every delivery.
    pub async fn produce<K: AsRef<str>, P: AsRef<[u8]>>(&self, topic: &str, records: &[(K, P)]) {
        let sends = records.iter().map(|(key, payload)| {
            self.producer.send(
                FutureRecord::to(topic)
                    .key(key.as_ref())
                    .payload(payload.as_ref()),
                Duration::from_secs(60),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e).expect("delivered");
        }
    }

    /// The group's committed offset per (topic, partition) of the source topics; a
    /// partition without a commit is absent.
    pub fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for topic in [TRENDS, USERS, WINDOWS] {
            for partition in 0..self.partitions {
                tpl.add_partition(topic, partition);
            }
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
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
    pub fn committed_total(&self, group: &str) -> i64 {
        self.committed(group).values().sum()
    }

    /// The offset after the last record of a partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("consumer");
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks")
            .1
    }

    /// Reads `count` records of a topic from the beginning, with their headers.
    pub fn read(&self, topic: &str, count: usize) -> Vec<Record> {
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut records = Vec::new();
        while records.len() < count && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("readable");
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
        }
        records
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// A daemon configuration for these tests: fast batches, retries and commits.
pub fn daemon_config(kafka: &MockKafka, redis_url: &str) -> Config {
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
        admin_token = "test-admin-token"
        [batch]
        max_messages = 500
        max_wait_ms = 20
        retry_initial_ms = 50
        retry_max_ms = 500
        "#,
        kafka.bootstrap()
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
