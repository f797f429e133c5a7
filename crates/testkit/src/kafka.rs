//! Kafka for the tests: Apache Kafka ([`TestKafka`], on the broker the tests share or on
//! one of a test's own), librdkafka's in-process mock cluster ([`MockKafka`], kept for the
//! fault injection only it offers), and on either the clients a test uses ([`Broker`]): a
//! producer, a reader of whole topics and of the group's committed offsets, and a daemon
//! runner.
//!
//! Every [`Broker`] has topic and group names of its own, unique on the machine, so that
//! tests sharing one broker never see each other's records or commits.
//!
//! librdkafka's synchronous calls (offsets, watermarks, polling a topic) run on tokio's
//! blocking pool, and the client that reads a group's offsets is made once per group, so
//! that a test polling for its commits costs one request per poll and no new client.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_layer::config::Config;
use cache_layer::models::MessageKind;
use cache_layer::status::Status;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apache::{self, ApacheKafka, Listener};
use crate::generate::Generated;

/// Every kind of message, each with its source topic.
const ALL_KINDS: [MessageKind; 3] = [
    MessageKind::Trends,
    MessageKind::UserMetrics,
    MessageKind::Windows,
];

/// The source topics, the dead-letter topic and the consumer group of one test on Apache
/// Kafka: on the broker the tests share when `scripts/test.sh` started one, otherwise on
/// a broker of the test's own.
pub struct TestKafka {
    /// The broker this test started, which it may stop, freeze or kill; `None` on the
    /// shared one.
    own: Option<ApacheKafka>,
    broker: Broker,
}

impl TestKafka {
    /// The three source topics with `partitions` each and a dead-letter topic of one, on
    /// the shared broker or, without one, on a broker of the test's own.
    pub async fn start(partitions: i32) -> Self {
        Self::start_with(partitions, &ALL_KINDS).await
    }

    /// [`TestKafka::start`] with the source topics of these kinds only; the others can be
    /// created later with [`Broker::create_source`].
    pub async fn start_with(partitions: i32, kinds: &[MessageKind]) -> Self {
        let (own, bootstrap) = match apache::shared() {
            Some(bootstrap) => (None, bootstrap),
            None => {
                let kafka = start_apache(&Listener::Plain).await;
                let bootstrap = kafka.bootstrap();
                (Some(kafka), bootstrap)
            }
        };
        let broker = Broker::new(&bootstrap, partitions);
        broker.create_sources(kinds).await;
        Self { own, broker }
    }

    /// The topics on a broker of the test's own, for a test that stops, freezes or kills it.
    pub async fn own(partitions: i32) -> Self {
        Self::own_with(partitions, &Listener::Plain).await
    }

    /// [`TestKafka::own`] with these listeners; the test's own clients use the plain one.
    pub async fn own_with(partitions: i32, listener: &Listener) -> Self {
        let kafka = start_apache(listener).await;
        let broker = Broker::new(&kafka.bootstrap(), partitions);
        broker.create_sources(&ALL_KINDS).await;
        Self {
            own: Some(kafka),
            broker,
        }
    }

    /// The broker this test started.
    pub fn apache(&self) -> &ApacheKafka {
        self.own
            .as_ref()
            .expect("a test that handles its broker starts it with TestKafka::own")
    }

    /// The broker this test started, to kill or restart.
    pub fn apache_mut(&mut self) -> &mut ApacheKafka {
        self.own
            .as_mut()
            .expect("a test that handles its broker starts it with TestKafka::own")
    }
}

/// A broker of a test's own, named in the test's output; the test fails if it cannot start.
async fn start_apache(listener: &Listener) -> ApacheKafka {
    let kafka = ApacheKafka::start_with(listener)
        .await
        .unwrap_or_else(|e| panic!("Apache Kafka {} starts: {e:#}", apache::VERSION));
    eprintln!("Apache Kafka {} at {}", apache::VERSION, kafka.bootstrap());
    kafka
}

impl std::ops::Deref for TestKafka {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

pub struct MockKafka {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    broker: Broker,
}

/// The clients a test uses on one broker, Apache Kafka or the mock cluster: its topic and
/// group names, a producer, and readers of whole topics and of a group's committed offsets.
pub struct Broker {
    bootstrap: String,
    pub partitions: i32,
    pub trends: String,
    pub users: String,
    pub windows: String,
    pub dead_letter: String,
    /// The daemon's consumer group.
    pub group: String,
    /// What the daemon must set for this broker (the mock cluster holds every fetch for
    /// the whole `fetch.wait.max.ms`, even when data arrives).
    pub daemon_properties: &'static [(&'static str, &'static str)],
    producer: FutureProducer,
    /// One offsets reader per consumer group, made on first use.
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl MockKafka {
    /// One broker, the three source topics with `partitions` each, and the dead-letter topic.
    pub fn start(partitions: i32) -> Self {
        let cluster = MockCluster::new(1).expect("mock cluster starts");
        let mut broker = Broker::new(&cluster.bootstrap_servers(), partitions);
        broker.daemon_properties = &[("fetch.wait.max.ms", "10")];
        let kafka = Self { broker, cluster };
        for topic in kafka.sources() {
            kafka
                .cluster
                .create_topic(topic, partitions, 1)
                .expect("topic created");
        }
        kafka
            .cluster
            .create_topic(&kafka.dead_letter, 1, 1)
            .expect("topic created");
        kafka
    }
}

/// The mock cluster is used through the clients of [`Broker`], as Apache Kafka is.
impl std::ops::Deref for MockKafka {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

impl Broker {
    /// Clients of the broker at `bootstrap`, whose source topics have `partitions` each,
    /// with topic and group names no other test on the machine uses.
    pub fn new(bootstrap: &str, partitions: i32) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            bootstrap: bootstrap.to_owned(),
            partitions,
            trends: format!("trend-alerts-{id}"),
            users: format!("user-metrics-{id}"),
            windows: format!("keyword-windows-{id}"),
            dead_letter: format!("cache-layer-dlq-{id}"),
            group: format!("cache-layer-test-{id}"),
            daemon_properties: &[],
            producer: producer(bootstrap, "none"),
            offset_readers: Mutex::default(),
        }
    }

    /// Clients of their own on the same broker, with the same topic and group names, for
    /// a task of the test's that outlives a borrow.
    pub fn clients(&self) -> Self {
        Self {
            bootstrap: self.bootstrap.clone(),
            partitions: self.partitions,
            trends: self.trends.clone(),
            users: self.users.clone(),
            windows: self.windows.clone(),
            dead_letter: self.dead_letter.clone(),
            group: self.group.clone(),
            daemon_properties: self.daemon_properties,
            producer: producer(&self.bootstrap, "none"),
            offset_readers: Mutex::default(),
        }
    }

    /// The environment that points a daemon process at this broker, its topics and its
    /// group, as an operator would: `KAFKA_BOOTSTRAP_SERVERS` and `CACHE_LAYER__...`.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap()),
            ("CACHE_LAYER__KAFKA__GROUP_ID", self.group.clone()),
            ("CACHE_LAYER__TOPICS__TRENDS", self.trends.clone()),
            ("CACHE_LAYER__TOPICS__USER_METRICS", self.users.clone()),
            ("CACHE_LAYER__TOPICS__WINDOWS", self.windows.clone()),
            ("CACHE_LAYER__TOPICS__DEAD_LETTER", self.dead_letter.clone()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        env.extend(self.daemon_properties.iter().map(|(name, value)| {
            let name = name.replace('.', "_").to_uppercase();
            (
                format!("CACHE_LAYER__KAFKA__PROPERTIES__{name}"),
                (*value).to_owned(),
            )
        }));
        env
    }

    /// The source topic of a kind of message.
    pub fn topic(&self, kind: MessageKind) -> &str {
        match kind {
            MessageKind::Trends => &self.trends,
            MessageKind::UserMetrics => &self.users,
            MessageKind::Windows => &self.windows,
        }
    }

    /// The three source topics.
    pub fn sources(&self) -> [&str; 3] {
        [&self.trends, &self.users, &self.windows]
    }

    /// Creates the source topics of these kinds with the broker's partition count, and
    /// the dead-letter topic with one.
    async fn create_sources(&self, kinds: &[MessageKind]) {
        let topics: Vec<&str> = kinds.iter().map(|kind| self.topic(*kind)).collect();
        self.create_topics(&topics, self.partitions, &[]).await;
        self.create_topics(&[&self.dead_letter], 1, &[]).await;
    }

    /// Creates the source topic of a kind, with the broker's partition count.
    pub async fn create_source(&self, kind: MessageKind) {
        self.create_topics(&[self.topic(kind)], self.partitions, &[])
            .await;
    }

    /// Sets topic configurations (`max.message.bytes`, ...) of an existing topic.
    pub async fn alter_topic(&self, topic: &str, configs: &[(&str, &str)]) {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let alter = configs.iter().fold(
            AlterConfig::new(ResourceSpecifier::Topic(topic)),
            |alter, (name, value)| alter.set(name, value),
        );
        for result in admin
            .alter_configs(&[alter], &AdminOptions::new())
            .await
            .expect("configs altered")
        {
            result.expect("topic config altered");
        }
    }

    /// Creates topics of `partitions` partitions each with these topic configurations
    /// (`cleanup.policy`, ...), and waits until the broker has them.
    pub async fn create_topics(&self, topics: &[&str], partitions: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                configs.iter().fold(
                    NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                    |n, (k, v)| n.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&new, &options)
            .await
            .expect("topics created")
        {
            result.expect("topic created");
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

    /// Produces tombstones (records with a key and no value) to a topic, in order, and
    /// waits for every delivery.
    pub async fn produce_tombstones(&self, topic: &str, keys: &[&str]) {
        for key in keys {
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(*key);
            self.producer
                .send(record, Duration::from_secs(60))
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }

    /// Produces a generated stream, each record to its kind's topic, in stream order.
    pub async fn produce_generated(&self, stream: &[Generated]) {
        for chunk in stream.chunk_by(|a, b| a.kind == b.kind) {
            let topic = self.topic(chunk[0].kind);
            let records: Vec<(&str, &str)> = chunk
                .iter()
                .map(|m| (m.key.as_str(), m.payload.as_str()))
                .collect();
            self.produce(topic, &records).await;
        }
    }

    /// Produces a generated stream as an exactly-once upstream (Kafka Streams, Flink)
    /// does: in transactions of `per_transaction` records, each committed, so that every
    /// commit leaves a marker at an offset of each partition it wrote; and after the
    /// `abort_after`-th, one transaction of the `aborted` records, aborted, which a
    /// `read_committed` consumer never sees. Waits for every commit.
    pub async fn produce_transactional(
        &self,
        stream: &[Generated],
        per_transaction: usize,
        aborted: &[Generated],
        abort_after: usize,
    ) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("transactional.id", format!("{}-upstream", self.group))
            .set("linger.ms", "1")
            .create()
            .expect("transactional producer");
        let records = |messages: &[Generated]| -> Vec<(String, String, String)> {
            messages
                .iter()
                .map(|m| {
                    (
                        self.topic(m.kind).to_owned(),
                        m.key.clone(),
                        m.payload.clone(),
                    )
                })
                .collect()
        };
        let transactions: Vec<_> = stream.chunks(per_transaction).map(records).collect();
        let aborted = records(aborted);
        blocking(move || {
            let timeout = Duration::from_secs(30);
            producer
                .init_transactions(timeout)
                .expect("transactions initialised");
            for (i, transaction) in transactions.iter().enumerate() {
                if i == abort_after {
                    producer.begin_transaction().expect("transaction begun");
                    send_queued(&producer, &aborted);
                    producer.flush(timeout).expect("flushed");
                    producer
                        .abort_transaction(timeout)
                        .expect("transaction aborted");
                }
                producer.begin_transaction().expect("transaction begun");
                send_queued(&producer, transaction);
                producer
                    .commit_transaction(timeout)
                    .expect("transaction committed");
            }
        })
        .await;
    }

    /// The group's committed offset per (topic, partition) of the source topics; a
    /// partition without a commit is absent. A broker that has just started answers
    /// "not coordinator" or "loading" for a moment, as Kafka does: asked again until 30 s
    /// have passed.
    pub async fn committed(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        let reader = self.offsets_reader(group);
        let mut tpl = TopicPartitionList::new();
        for topic in self.sources() {
            for partition in 0..self.partitions {
                tpl.add_partition(topic, partition);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let committed = loop {
            let (reader, tpl) = (Arc::clone(&reader), tpl.clone());
            match blocking(move || reader.committed_offsets(tpl, Duration::from_secs(10))).await {
                Ok(committed) => break committed,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "committed offsets not answered yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("committed offsets of {group}: {e}"),
            }
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect()
    }

    /// Waits until `group` has committed every partition of the source topics up to its
    /// log end (its last stable offset): a lag of 0, past the transaction markers and
    /// the aborted records too. A partition without a record needs no commit.
    pub async fn wait_caught_up(&self, group: &str, timeout: Duration) {
        let what = format!("{group} committed up to every log end");
        let reader = self.offsets_reader(group);
        crate::wait_until(timeout, &what, || async {
            let committed = self.committed(group).await;
            for topic in self.sources() {
                for partition in 0..self.partitions {
                    let (reader, name) = (Arc::clone(&reader), topic.to_owned());
                    let end = blocking(move || {
                        reader.fetch_watermarks(&name, partition, Duration::from_secs(10))
                    })
                    .await
                    .expect("watermarks")
                    .1;
                    let at = committed.get(&(topic.to_owned(), partition)).copied();
                    if at.unwrap_or(0) != end {
                        return false;
                    }
                }
            }
            true
        })
        .await;
    }

    /// The sum of the committed offsets: how many messages the group acknowledged.
    pub async fn committed_total(&self, group: &str) -> i64 {
        self.committed(group).await.values().sum()
    }

    /// Waits until `group` has committed exactly `total` messages, failing the test after
    /// `timeout`.
    pub async fn wait_committed(&self, group: &str, total: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let committed = self.committed(group).await;
            if committed.values().sum::<i64>() == total {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {total} messages committed by {group}: \
                 {committed:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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

    /// How many records a partition holds, from its log start to its log end: fewer
    /// than the offsets between them once compaction removed some.
    pub async fn records_held(&self, topic: &str, partition: i32) -> usize {
        let reader = self.offsets_reader(&format!("{}-records", self.group));
        let topic = topic.to_owned();
        blocking(move || {
            let timeout = Duration::from_secs(10);
            let (start, end) = reader
                .fetch_watermarks(&topic, partition, timeout)
                .expect("watermarks");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(start))
                .expect("partition");
            reader.assign(&tpl).expect("assign");
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut held = 0;
            let mut next = start;
            while next < end {
                assert!(
                    Instant::now() < deadline,
                    "{topic}[{partition}] read to {next} of {end}"
                );
                if let Some(message) = reader.poll(Duration::from_millis(100)) {
                    next = message.expect("readable").offset() + 1;
                    held += 1;
                }
            }
            reader.unassign().expect("unassign");
            held
        })
        .await
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

/// Queues (topic, key, payload) records on a producer, waiting while its queue is full.
fn send_queued(producer: &BaseProducer, records: &[(String, String, String)]) {
    for (topic, key, payload) in records {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("record not queued: {e}"),
            }
        }
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

/// A daemon configuration for these tests on the topics and group of `kafka`: fast
/// batches, retries and commits.
pub fn daemon_config(kafka: &Broker, redis_url: &str) -> Config {
    daemon_config_for(kafka, &kafka.bootstrap(), redis_url)
}

/// [`daemon_config`] bootstrapping from another listener of the same broker.
pub fn daemon_config_for(kafka: &Broker, bootstrap: &str, redis_url: &str) -> Config {
    let mut properties = String::new();
    for (name, value) in kafka.daemon_properties {
        properties.push_str(&format!("\"{name}\" = \"{value}\"\n"));
    }
    let toml = format!(
        r#"
        [kafka]
        bootstrap_servers = "{}"
        group_id = "{group}"
        commit_interval_ms = 100
        shutdown_timeout_ms = 10000
        [kafka.properties]
        "session.timeout.ms" = 6000
        "heartbeat.interval.ms" = 500
        "topic.metadata.refresh.interval.ms" = 500
        {properties}
        [topics]
        trends = "{trends}"
        user_metrics = "{users}"
        windows = "{windows}"
        dead_letter = "{dead_letter}"
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
        bootstrap,
        group = kafka.group,
        trends = kafka.trends,
        users = kafka.users,
        windows = kafka.windows,
        dead_letter = kafka.dead_letter,
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
