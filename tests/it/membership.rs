//! The consumer group as operators change it: a static member restarted without a
//! rebalance, and cooperative rebalances while instances come and go under a flowing
//! stream. On Apache Kafka, with every daemon a process of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use cache_layer::metrics::{PARTITIONS_ASSIGNED, REBALANCES};
use cache_layer_testkit::kafka::Broker;
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::state::Scenario;
use cache_layer_testkit::wait_until;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{spawn, QUICK_SESSION};

const DEADLINE: Duration = Duration::from_secs(120);

/// 6 partitions per topic: 18 in all, 6 for each of three instances.
const PARTITIONS: i32 = 6;

/// A static member, `kafka.group_instance_id = "cache-${HOSTNAME}-NAME"` (the host name
/// shows that the placeholder is replaced), whose session outlasts a restart.
fn static_member(scenario: &Scenario, name: &str) -> DaemonProcess {
    let id = format!("cache-${{HOSTNAME}}-{name}");
    spawn(
        &scenario.kafka,
        &scenario.redis.url(),
        &[
            ("CACHE_LAYER__KAFKA__GROUP_INSTANCE_ID", id.as_str()),
            (
                "CACHE_LAYER__KAFKA__PROPERTIES__SESSION_TIMEOUT_MS",
                "45000",
            ),
            (
                "CACHE_LAYER__KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS",
                "1000",
            ),
        ],
    )
}

/// How many partitions each daemon holds, and how many rebalances it took part in.
async fn membership(daemons: &[&DaemonProcess]) -> Vec<(f64, f64)> {
    let mut seen = Vec::new();
    for daemon in daemons {
        seen.push((
            daemon.metric(PARTITIONS_ASSIGNED).await,
            daemon.metric(REBALANCES).await,
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_within_its_session_moves_no_partition() {
    let scenario = Scenario::start(PARTITIONS, 6_000, 27).await;
    let (first_half, second_half) = scenario.stream.split_at(3_000);
    scenario.kafka.produce_generated(first_half).await;

    let a = static_member(&scenario, "a");
    let mut b = static_member(&scenario, "b");
    let c = static_member(&scenario, "c");
    wait_until(DEADLINE, "the 18 partitions shared by three", || async {
        let seen = membership(&[&a, &b, &c]).await;
        seen.iter().all(|(held, _)| *held > 0.0)
            && seen.iter().map(|(held, _)| held).sum::<f64>() == 18.0
    })
    .await;
    scenario
        .kafka
        .wait_committed(&scenario.kafka.group, first_half.len() as i64, DEADLINE)
        .await;
    let before = membership(&[&a, &b, &c]).await;

    assert!(b.stop().await.unwrap().success());
    b = static_member(&scenario, "b");
    wait_until(
        DEADLINE,
        "the restarted member holds its partitions again",
        || async { b.metric(PARTITIONS_ASSIGNED).await == before[1].0 },
    )
    .await;
    scenario.kafka.produce_generated(second_half).await;
    scenario.assert_landed(DEADLINE).await;

    // The other two neither gave up nor took a partition: no rebalance reached them.
    let after = membership(&[&a, &c]).await;
    assert_eq!(
        after,
        [before[0], before[2]],
        "(partitions, rebalances) of a and c"
    );
    // The restarted member took its partitions back in one assignment.
    assert_eq!(b.metric(REBALANCES).await, 1.0);
    for daemon in [a, b, c] {
        assert!(daemon.stop().await.unwrap().success());
    }
}

/// Reads every partition's committed offset again and again until stopped, and returns
/// each commit that went back: an old owner committing after its partition moved on.
fn watch_commits(kafka: Broker) -> (CancellationToken, JoinHandle<Vec<String>>) {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let watch = tokio::spawn(async move {
        let mut seen: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut went_back = Vec::new();
        while !stopped.is_cancelled() {
            for (partition, offset) in kafka.committed(&kafka.group).await {
                match seen.insert(partition.clone(), offset) {
                    Some(before) if offset < before => {
                        went_back.push(format!("{partition:?} from {before} to {offset}"))
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        went_back
    });
    (stop, watch)
}

/// A member with the cooperative-sticky assignor and a quick session.
fn cooperative_member(scenario: &Scenario) -> DaemonProcess {
    let mut env = vec![(
        "CACHE_LAYER__KAFKA__PROPERTIES__PARTITION_ASSIGNMENT_STRATEGY",
        "cooperative-sticky",
    )];
    env.extend_from_slice(QUICK_SESSION);
    spawn(&scenario.kafka, &scenario.redis.url(), &env)
}

/// Instances join and leave one by one, with the cooperative-sticky assignor, while the
/// stream flows; at the end Redis holds exactly the stream, every offset is committed,
/// and no commit ever went back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalances_lose_nothing_and_commit_nothing_back() {
    let scenario = Scenario::start(PARTITIONS, 24_000, 28).await;
    let watcher = scenario.kafka.clients();
    let (stop_watching, watch) = watch_commits(watcher);
    let mut chunks = scenario.stream.chunks(4_000);
    let mut produce_next = || {
        let chunk = chunks.next().expect("a chunk left");
        scenario.kafka.produce_generated(chunk)
    };

    let first = cooperative_member(&scenario);
    produce_next().await;
    wait_until(
        DEADLINE,
        "the first member holds every partition",
        || async { first.metric(PARTITIONS_ASSIGNED).await == 18.0 },
    )
    .await;
    let second = cooperative_member(&scenario);
    produce_next().await;
    wait_until(DEADLINE, "the second member holds partitions", || async {
        second.metric(PARTITIONS_ASSIGNED).await > 0.0
    })
    .await;
    // Incremental: the first gave up some of its partitions and kept the rest, fetching.
    assert!(first.metric(PARTITIONS_ASSIGNED).await > 0.0);
    assert!(first.metric(REBALANCES).await >= 2.0);
    let third = cooperative_member(&scenario);
    produce_next().await;
    wait_until(DEADLINE, "the third member holds partitions", || async {
        third.metric(PARTITIONS_ASSIGNED).await > 0.0
    })
    .await;
    // Members leave one by one while messages flow, and one more joins.
    let leaving = tokio::spawn(first.stop());
    produce_next().await;
    assert!(leaving.await.unwrap().unwrap().success());
    wait_until(
        DEADLINE,
        "the first member's partitions taken over",
        || async {
            second.metric(PARTITIONS_ASSIGNED).await + third.metric(PARTITIONS_ASSIGNED).await
                == 18.0
        },
    )
    .await;
    let fourth = cooperative_member(&scenario);
    let leaving = tokio::spawn(second.stop());
    produce_next().await;
    assert!(leaving.await.unwrap().unwrap().success());
    produce_next().await;
    wait_until(
        DEADLINE,
        "the partitions shared by the two left",
        || async {
            third.metric(PARTITIONS_ASSIGNED).await + fourth.metric(PARTITIONS_ASSIGNED).await
                == 18.0
        },
    )
    .await;

    scenario.assert_landed(DEADLINE).await;
    stop_watching.cancel();
    let went_back = watch.await.unwrap();
    assert!(went_back.is_empty(), "commits went back: {went_back:?}");
    for daemon in [third, fourth] {
        assert!(daemon.stop().await.unwrap().success());
    }
}

/// A member of a KIP-848 group (`kafka.group_protocol = "consumer"`: the broker assigns,
/// with the test broker's session of 6 s), its id given for static membership.
fn consumer_protocol_member(scenario: &Scenario, id: Option<&str>) -> DaemonProcess {
    let mut env = vec![("CACHE_LAYER__KAFKA__GROUP_PROTOCOL", "consumer")];
    if let Some(id) = id {
        env.push(("CACHE_LAYER__KAFKA__GROUP_INSTANCE_ID", id));
    }
    spawn(&scenario.kafka, &scenario.redis.url(), &env)
}

/// Under KIP-848 members join, one dies (SIGKILL) and its partitions move once the
/// broker's session is over, and a static member restarts mid-stream: the state is
/// exact and the group's commits reach every log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_members_join_die_and_restart_losing_nothing() {
    let scenario = Scenario::start(PARTITIONS, 16_000, 30).await;
    let mut chunks = scenario.stream.chunks(4_000);
    let mut produce_next = || {
        let chunk = chunks.next().expect("a chunk left");
        scenario.kafka.produce_generated(chunk)
    };
    let a = consumer_protocol_member(&scenario, None);
    produce_next().await;
    wait_until(
        DEADLINE,
        "the first member holds every partition",
        || async { a.metric(PARTITIONS_ASSIGNED).await == 18.0 },
    )
    .await;
    let mut b = consumer_protocol_member(&scenario, Some("cache-kip848-b"));
    produce_next().await;
    wait_until(DEADLINE, "the two members share the partitions", || async {
        let (pa, pb) = (
            a.metric(PARTITIONS_ASSIGNED).await,
            b.metric(PARTITIONS_ASSIGNED).await,
        );
        pa > 0.0 && pb > 0.0 && pa + pb == 18.0
    })
    .await;

    assert!(!a.kill().await.unwrap().success());
    produce_next().await;
    wait_until(DEADLINE, "the dead member's partitions moved", || async {
        b.metric(PARTITIONS_ASSIGNED).await == 18.0
    })
    .await;

    // The static member restarts under its id while the last part is produced.
    assert!(b.stop().await.unwrap().success());
    b = consumer_protocol_member(&scenario, Some("cache-kip848-b"));
    produce_next().await;
    scenario.assert_landed(DEADLINE).await;
    scenario
        .kafka
        .wait_caught_up(&scenario.kafka.group, DEADLINE)
        .await;
    assert!(b.stop().await.unwrap().success());
}
