//! The librdkafka client configuration, built in one place for every client the daemon
//! makes: the group consumer, the dead-letter producer and the operator's `produce`.
//!
//! Every client gets the brokers, the client id and the `kafka.properties` pass-through
//! (security, timeouts, ...). The consumer adds the settings its delivery guarantee
//! depends on, which `kafka.properties` cannot change.

use rdkafka::ClientConfig;

use crate::config::Config;

/// librdkafka settings that differ from librdkafka's defaults, unless `kafka.properties`
/// sets them (BENCHMARKS.md has the measurements):
/// - statistics (the consumer lag, whether a broker is up) every 5 s;
/// - a prefetch queue of 2 MiB instead of 64 MiB: the batch being written is the real
///   buffer; with the 1 ms back-off below, 4 MiB buys about 4% more throughput for 5 to
///   10 MiB more peak memory, sometimes past the 64 MiB budget;
/// - a fetch back-off of 1 ms instead of 1 s once that queue is full: with librdkafka's
///   second, the partitions sat idle after every refill (108,000 msg/s through tansu);
///   10 ms gave about 420,000 msg/s, and 1 ms, which refetches as soon as the loop has
///   taken from the queue, about 530,000 with less CPU per message; 0 spins the fetcher
///   (more CPU, less throughput);
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
