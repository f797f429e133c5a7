//! Partitions handed from one member to another while the first cannot write: the batch
//! it holds of them never lands after the new owner's writes. Window fields are
//! last-writer-wins, so a batch that did would roll them back until their TTL.
//!
//! The race is forced as an operator could meet it: member A's Redis user loses its key
//! permissions (`ACL SETUSER a resetkeys`, which A retries) while A holds a batch of v2;
//! member B joins, takes partitions, and writes v2 and then v3; A's permissions come back.

use std::collections::BTreeMap;
use std::time::Duration;

use cache_layer::metrics::{BATCH_RETRIES, PARTITIONS_ASSIGNED, REVOKED_BATCHES};
use cache_layer::models::MessageKind;
use cache_layer_testkit::fixtures::window_json;
use cache_layer_testkit::kafka::TestKafka;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::redis_server::RedisServer;
use cache_layer_testkit::wait_until;

use crate::support::spawn;

const DEADLINE: Duration = Duration::from_secs(90);
/// Of the window topic, the only source topic created: every partition a member holds
/// is one of these.
const PARTITIONS: i32 = 4;
/// The keywords of the one window, spread over the partitions by their keys.
const FIELDS: usize = 96;
const WINDOW: &str = "windows:window_2024_01_01_12_00";

/// Every keyword's count in the window, `version` for each.
fn version(version: i64) -> Vec<(String, String)> {
    (0..FIELDS)
        .map(|i| (format!("k{i}"), window_json(&format!("k{i}"), version, 0)))
        .collect()
}

/// The count each field of the window holds.
async fn counts(redis: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, i64> {
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(WINDOW)
        .query_async(redis)
        .await
        .unwrap();
    fields
        .into_iter()
        .map(|(field, value)| {
            let value: serde_json::Value = serde_json::from_str(&value).unwrap();
            (field, value["count"].as_i64().expect("a count"))
        })
        .collect()
}

async fn acl(redis: &mut redis::aio::MultiplexedConnection, user: &str, rules: &[&str]) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rules)
        .exec_async(redis)
        .await
        .unwrap();
}

/// How many partitions of the window topic the group committed up to their log end.
async fn committed_to_the_end(kafka: &TestKafka) -> usize {
    let committed = kafka.committed(&kafka.group).await;
    let mut at_end = 0;
    for partition in 0..PARTITIONS {
        let end = kafka.high_watermark(&kafka.windows, partition).await;
        let at = committed.get(&(kafka.windows.clone(), partition)).copied();
        at_end += usize::from(at == Some(end));
    }
    at_end
}

/// A member of the group as Redis user `user`, with `settings`.
fn member(
    kafka: &TestKafka,
    redis: &RedisServer,
    user: &str,
    settings: &[(&str, &str)],
) -> DaemonProcess {
    let url = format!("redis://{user}:secret@127.0.0.1:{}/0", redis.port());
    spawn(kafka, &url, settings)
}

/// Eager rebalances (librdkafka's default assignors): A gives every partition up, and
/// gets some back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partitions_batch_never_lands_after_its_new_owners_writes() {
    let given_up = hand_over_while_refused(&[]).await;
    // Every partition of A was revoked, and A was retrying a batch of them.
    assert!(given_up >= 1.0, "A's batch was not given up");
}

/// Cooperative rebalances: A keeps some partitions, and reads them again from where
/// their writes stand when the batch that also held the others was given up. (Whether
/// A's batch holds a partition that moves depends on how its fetches fell.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_handover_rolls_nothing_back() {
    hand_over_while_refused(&[(
        "CACHE_LAYER__KAFKA__PROPERTIES__PARTITION_ASSIGNMENT_STRATEGY",
        "cooperative-sticky",
    )])
    .await;
}

/// KIP-848: the broker assigns, and revokes from A before it assigns to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_protocol_handover_rolls_nothing_back() {
    hand_over_while_refused(&[("CACHE_LAYER__KAFKA__GROUP_PROTOCOL", "consumer")]).await;
}

/// Forces the race under `settings`; returns how many batches A gave up.
async fn hand_over_while_refused(settings: &[(&str, &str)]) -> f64 {
    let kafka = TestKafka::start_with(PARTITIONS, &[MessageKind::Windows]).await;
    let redis = RedisServer::start().await.unwrap();
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for user in ["a", "b"] {
        acl(
            &mut admin,
            user,
            &["on", ">secret", "allkeys", "allchannels", "+@all"],
        )
        .await;
    }
    let a = member(&kafka, &redis, "a", settings);
    kafka.produce(&kafka.windows, &version(1)).await;
    wait_until(DEADLINE, "A wrote v1 of every field", || async {
        let counts = counts(&mut admin.clone()).await;
        counts.len() == FIELDS && counts.values().all(|&c| c == 1)
    })
    .await;

    acl(&mut admin, "a", &["resetkeys"]).await;
    kafka.produce(&kafka.windows, &version(2)).await;
    wait_until(DEADLINE, "A retrying its batch of v2", || async {
        a.metric(BATCH_RETRIES).await >= 1.0
    })
    .await;

    let b = member(&kafka, &redis, "b", settings);
    wait_until(DEADLINE, "the partitions shared by A and B", || async {
        let (held_a, held_b) = (
            a.metric(PARTITIONS_ASSIGNED).await,
            b.metric(PARTITIONS_ASSIGNED).await,
        );
        held_b > 0.0 && held_a + held_b == f64::from(PARTITIONS)
    })
    .await;
    kafka.produce(&kafka.windows, &version(3)).await;
    // B has written v3 of its partitions once it committed them to their log end: A can
    // commit nothing while it cannot write.
    let held_b = b.metric(PARTITIONS_ASSIGNED).await as usize;
    wait_until(DEADLINE, "B committed its partitions up to v3", || async {
        committed_to_the_end(&kafka).await == held_b
    })
    .await;

    acl(&mut admin, "a", &["allkeys"]).await;
    // Once A committed its own partitions up to v3, whatever it held before was written
    // or given up.
    wait_until(DEADLINE, "every partition committed up to v3", || async {
        committed_to_the_end(&kafka).await == PARTITIONS as usize
    })
    .await;
    let counts = counts(&mut admin).await;
    let rolled_back: Vec<_> = counts.iter().filter(|(_, &c)| c != 3).collect();
    assert_eq!(counts.len(), FIELDS);
    assert!(
        rolled_back.is_empty(),
        "{} of {FIELDS} fields hold an older count than Kafka's last: {rolled_back:?}",
        rolled_back.len()
    );
    let given_up = |outcome: &str| format!("{REVOKED_BATCHES}{{outcome=\"{outcome}\"}}");
    // NOPERM is answered at once: no attempt was still under way at the bound.
    assert_eq!(a.metric(&given_up("unfinished")).await, 0.0);
    let abandoned = a.metric(&given_up("abandoned")).await;
    for daemon in [a, b] {
        assert!(daemon.stop().await.unwrap().success());
    }
    abandoned
}

/// Members join and leave while a stream flows, with eager rebalances: every revocation
/// takes all of A's partitions, and meets whatever A is collecting or writing then. A
/// batch given up must not leave A paused: the group commits the whole stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_under_a_flowing_stream_leave_no_member_paused() {
    let kafka = TestKafka::start_with(PARTITIONS, &[MessageKind::Windows]).await;
    let redis = RedisServer::start().await.unwrap();
    let a = spawn(&kafka, &redis.url(), &[]);
    let producer = kafka.clients();
    let flowing = tokio::spawn(async move {
        for round in 0..300 {
            let records: Vec<(String, String)> = (0..50)
                .map(|i| {
                    let keyword = format!("k{}", (round * 50 + i) % 500);
                    (keyword.clone(), window_json(&keyword, round + 1, 0))
                })
                .collect();
            producer.produce(&producer.windows, &records).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for _ in 0..3 {
        let b = spawn(&kafka, &redis.url(), &[]);
        wait_until(DEADLINE, "B holds partitions", || async {
            b.metric(PARTITIONS_ASSIGNED).await > 0.0
        })
        .await;
        assert!(b.stop().await.unwrap().success());
        wait_until(DEADLINE, "A holds every partition again", || async {
            a.metric(PARTITIONS_ASSIGNED).await == f64::from(PARTITIONS)
        })
        .await;
    }
    flowing.await.unwrap();
    wait_until(DEADLINE, "every partition committed to its end", || async {
        committed_to_the_end(&kafka).await == PARTITIONS as usize
    })
    .await;
    assert!(a.stop().await.unwrap().success());
}
