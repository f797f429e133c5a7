//! The group's offsets as an operator command: `cache-layer offsets` shows where the
//! configured group stands in each partition of the source topics, and `cache-layer
//! offsets reset` moves its committed offsets, as `kafka-consumer-groups --describe` and
//! `--reset-offsets` do.
//!
//! The client is not a member of the group: it assigns partitions to itself to read a
//! message's timestamp, never subscribes, and commits only what a reset asks for. A reset
//! is refused while the group has members, as Kafka's own tool refuses it: a member's
//! next commit would undo it, and its in-memory positions ignore it. The members are
//! asked of the group's coordinator in the group's own protocol, classic or KIP-848's. A
//! broker that cannot describe the group (librdkafka's mock cluster) cannot tell, and a
//! reset is refused there too.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::batch::TopicKinds;
use super::rebuild::{first_offsets_at, list, partitions};
use crate::config::Config;
use crate::kafka;

/// How long each request to the brokers may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the group stands in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, the next message it reads; `None` without a commit.
    pub committed: Option<i64>,
    /// The first offset the log still holds, and the offset after its last message.
    pub(crate) log_start: i64,
    pub log_end: i64,
    /// `log_end - committed`; `None` without a commit.
    pub lag: Option<i64>,
    /// The Kafka timestamp of the last message before the committed offset: how far in
    /// time the group has got. `None` when there is none (no commit, or the commit at
    /// the log's start).
    pub committed_timestamp: Option<DateTime<Utc>>,
}

/// Where a reset moves the committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first offset each log still holds.
    Earliest,
    /// The end of each log: nothing is replayed, what is there is skipped.
    Latest,
    /// The first message at or after this time (the end of a log that has none).
    Time(DateTime<Utc>),
    /// This offset, within each log.
    Offset(i64),
    /// The committed offset moved by this much (its log's start without a commit),
    /// within each log.
    Shift(i64),
}

/// The partitions a reset moves: of these source topics, or of these partitions of one
/// (`kafka-consumer-groups --topic`); every source partition when empty.
pub type Only = [(String, Option<Vec<i32>>)];

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

/// A client of the group that never joins it: no automatic commit, no offset store.
fn client(config: &Config) -> anyhow::Result<BaseConsumer> {
    let mut client = kafka::client_config(config);
    client
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    client
        .create()
        .context("cannot create the Kafka client for the group's offsets")
}

/// The source topics' partitions, from the brokers' metadata.
fn source_partitions(config: &Config, client: &BaseConsumer) -> anyhow::Result<Vec<(String, i32)>> {
    let topics: Vec<String> = TopicKinds::new(&config.topics)
        .names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let partitions = partitions(client, &topics).context("cannot read the topics' metadata")?;
    if partitions.is_empty() {
        bail!(
            "none of the source topics exists on {}: {}",
            config.kafka.bootstrap_servers,
            topics.join(", ")
        );
    }
    Ok(partitions)
}

/// Where the configured group stands in every partition of the source topics.
pub async fn describe(config: &Config) -> anyhow::Result<Vec<PartitionOffsets>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || describe_blocking(&config)).await?
}

fn describe_blocking(config: &Config) -> anyhow::Result<Vec<PartitionOffsets>> {
    let client = client(config)?;
    let partitions = source_partitions(config, &client)?;
    let committed = committed(&client, &partitions)?;
    let mut out = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let (log_start, log_end) = client
            .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
            .with_context(|| format!("cannot read the log end of {topic}[{partition}]"))?;
        let committed = committed.get(&(topic.clone(), partition)).copied();
        out.push(PartitionOffsets {
            lag: committed.map(|c| (log_end - c).max(0)),
            topic,
            partition,
            committed,
            log_start,
            log_end,
            committed_timestamp: None,
        });
    }
    let times = last_committed_timestamps(&client, &out)?;
    for p in &mut out {
        p.committed_timestamp = times.get(&(p.topic.clone(), p.partition)).copied();
    }
    Ok(out)
}

/// The group's committed offsets, by partition; a partition without one is absent.
fn committed(
    client: &BaseConsumer,
    partitions: &[(String, i32)],
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let committed =
        kafka::committed_offsets(client, &list(partitions, Offset::Invalid)?, KAFKA_TIMEOUT)
            .context("cannot read the group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
            _ => None,
        })
        .collect())
}

/// The timestamp of the message before each committed offset, read by assigning the
/// partitions at that offset and taking the first message of each.
fn last_committed_timestamps(
    client: &BaseConsumer,
    partitions: &[PartitionOffsets],
) -> anyhow::Result<HashMap<(String, i32), DateTime<Utc>>> {
    let mut wanted = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        if let Some(committed) = p.committed.filter(|c| *c > p.log_start) {
            let last = committed - 1;
            assignment.add_partition_offset(&p.topic, p.partition, Offset::Offset(last))?;
            wanted.insert((p.topic.clone(), p.partition), last);
        }
    }
    let mut found = HashMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    client.assign(&assignment)?;
    let deadline = std::time::Instant::now() + KAFKA_TIMEOUT;
    while !wanted.is_empty() && std::time::Instant::now() < deadline {
        let Some(received) = client.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = received.context("cannot read the last committed messages")?;
        let key = (message.topic().to_owned(), message.partition());
        // The first message delivered of each partition; one past the offset asked
        // for means that offset holds no message (a transaction marker, compaction).
        if let Some(last) = wanted.remove(&key) {
            let timestamp = message
                .timestamp()
                .to_millis()
                .and_then(DateTime::<Utc>::from_timestamp_millis);
            if let (true, Some(timestamp)) = (message.offset() == last, timestamp) {
                found.insert(key, timestamp);
            }
        }
    }
    client.unassign()?;
    Ok(found)
}

/// The moves a reset makes: each partition of the source topics, from its committed
/// offset to where `to` says.
pub async fn plan_reset(config: &Config, to: ResetTo, only: &Only) -> anyhow::Result<Vec<Move>> {
    let (config, only) = (config.clone(), only.to_vec());
    tokio::task::spawn_blocking(move || {
        let client = client(&config)?;
        plan(&config, &client, to, &only)
    })
    .await?
}

/// The partitions of `all` that `only` names; an error names a topic or a partition
/// that is not a source one.
fn chosen(all: Vec<(String, i32)>, only: &Only) -> anyhow::Result<Vec<(String, i32)>> {
    if only.is_empty() {
        return Ok(all);
    }
    for (topic, partitions) in only {
        if !all.iter().any(|(t, _)| t == topic) {
            bail!("--topic {topic}: not a source topic of this configuration");
        }
        for p in partitions.iter().flatten() {
            if !all.contains(&(topic.clone(), *p)) {
                bail!("--topic {topic}:{p}: the topic has no partition {p}");
            }
        }
    }
    Ok(all
        .into_iter()
        .filter(|(topic, partition)| {
            only.iter()
                .any(|(t, ps)| t == topic && ps.as_ref().is_none_or(|ps| ps.contains(partition)))
        })
        .collect())
}

fn plan(
    config: &Config,
    client: &BaseConsumer,
    to: ResetTo,
    only: &Only,
) -> anyhow::Result<Vec<Move>> {
    let partitions = chosen(source_partitions(config, client)?, only)?;
    let committed = committed(client, &partitions)?;
    let by_time = match to {
        ResetTo::Time(time) => Some(
            first_offsets_at(client, &partitions, time.timestamp_millis(), KAFKA_TIMEOUT)
                .context("cannot find the offsets at that time")?,
        ),
        ResetTo::Earliest | ResetTo::Latest | ResetTo::Offset(_) | ResetTo::Shift(_) => None,
    };
    let mut moves = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let (start, end) = client
            .fetch_watermarks(&topic, partition, KAFKA_TIMEOUT)
            .with_context(|| format!("cannot read the log of {topic}[{partition}]"))?;
        let key = (topic, partition);
        let from = committed.get(&key).copied();
        let target = match to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Offset(offset) => offset,
            ResetTo::Shift(by) => from.unwrap_or(start).saturating_add(by),
            // No message at or after the time: the end of the log.
            ResetTo::Time(_) => by_time
                .as_ref()
                .and_then(|found| found.get(&key).copied().flatten())
                .unwrap_or(end),
        };
        moves.push(Move {
            from,
            topic: key.0,
            partition: key.1,
            to: target.clamp(start, end),
        });
    }
    Ok(moves)
}

/// The group's members, as the brokers describe it: `client_id@host (member id)` each.
///
/// Through librdkafka's DescribeConsumerGroups, which asks the group's coordinator with
/// the API of the group's own protocol: a KIP-848 group (`group.protocol = consumer`) is
/// unknown to the classic DescribeGroups, which calls it dead while it has members.
/// rust-rdkafka does not wrap that call, so it is made here through its bindings.
fn members(config: &Config, client: &BaseConsumer) -> anyhow::Result<Vec<String>> {
    let group = &config.kafka.group_id;
    describe_group_members(client, group).with_context(|| {
        format!("cannot tell whether group {group:?} has active members (the brokers do not describe it)")
    })
}

fn describe_group_members(client: &BaseConsumer, group: &str) -> anyhow::Result<Vec<String>> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};

    /// A C string of librdkafka's as an owned string; empty for a null pointer.
    fn text(ptr: *const std::os::raw::c_char) -> String {
        if ptr.is_null() {
            return String::new();
        }
        // SAFETY: librdkafka returns NUL-terminated strings that live as long as the
        // result event, which is destroyed only after every read.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }

    let name = CString::new(group).context("the group id holds a NUL byte")?;
    let rk = client.client().native_ptr();
    // SAFETY: `rk` is the live handle of `client`, borrowed for this whole call; every
    // object created here is destroyed before returning, the event last, after its
    // contents were copied out.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        );
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            KAFKA_TIMEOUT.as_millis() as i32,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut groups = [name.as_ptr()];
        rd::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, (KAFKA_TIMEOUT.as_millis() + 1_000) as i32);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        if event.is_null() {
            bail!("no answer within {KAFKA_TIMEOUT:?}");
        }
        let described = (|| {
            if rd::rd_kafka_event_error(event)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                bail!("{}", text(rd::rd_kafka_event_error_string(event)));
            }
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
            let mut count = 0;
            let descriptions =
                rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            let mut members = Vec::new();
            for i in 0..count {
                let description = *descriptions.add(i);
                let error = rd::rd_kafka_ConsumerGroupDescription_error(description);
                if !error.is_null() {
                    bail!("{}", text(rd::rd_kafka_error_string(error)));
                }
                for m in 0..rd::rd_kafka_ConsumerGroupDescription_member_count(description) {
                    let member = rd::rd_kafka_ConsumerGroupDescription_member(description, m);
                    members.push(format!(
                        "{}@{} ({})",
                        text(rd::rd_kafka_MemberDescription_client_id(member)),
                        text(rd::rd_kafka_MemberDescription_host(member)),
                        text(rd::rd_kafka_MemberDescription_consumer_id(member)),
                    ));
                }
            }
            Ok(members)
        })();
        rd::rd_kafka_event_destroy(event);
        described
    }
}

/// Moves the group's committed offsets to `to`. Refused while the group has members.
pub async fn reset(config: &Config, to: ResetTo, only: &Only) -> anyhow::Result<Vec<Move>> {
    let (config, only) = (config.clone(), only.to_vec());
    tokio::task::spawn_blocking(move || {
        let client = client(&config)?;
        let members = members(&config, &client)?;
        if !members.is_empty() {
            bail!(
                "group {:?} has active members ({}): stop every instance before resetting its offsets, as the members' own commits would undo the reset",
                config.kafka.group_id,
                members.join(", ")
            );
        }
        let moves = plan(&config, &client, to, &only)?;
        let mut offsets = TopicPartitionList::new();
        for m in &moves {
            offsets.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.to))?;
        }
        client
            .commit(&offsets, CommitMode::Sync)
            .context("cannot commit the new offsets")?;
        Ok(moves)
    })
    .await?
}
