//! Redis Cluster, for real: three masters as `redis-server --cluster-enabled yes`
//! processes joined with `redis-cli --cluster create`. The daemon's end-to-end scenario
//! runs on it with every key on its owning master, the library's stats, clears and sweeps
//! work across masters, a master's failover in the middle of a stream loses nothing, and
//! a cluster that takes only TLS clients with certificates is reached with `redis.tls_*`.

use std::collections::HashSet;
use std::time::Duration;

use cache_layer::background::{sweep_once, SweepOutcome};
use cache_layer::cache::lock_token;
use cache_layer::config::{Config, RedisConfig};
use cache_layer::CacheLayer;
use cache_layer_testkit::certs::certificates;
use cache_layer_testkit::cluster::RedisCluster;
use cache_layer_testkit::kafka::{daemon_config, Broker, RunningDaemon, TestKafka};
use cache_layer_testkit::{trend_records, wait_until, window_json};

const DEADLINE: Duration = Duration::from_secs(60);

fn cluster_config(kafka: &Broker, cluster: &RedisCluster) -> Config {
    let mut config = daemon_config(kafka, &cluster.url(0));
    config.redis = RedisConfig::from_url(&cluster.url(0));
    config.redis.cluster = true;
    config.redis.nodes = cluster.seeds();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_the_library_work_across_the_masters_of_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let kafka = TestKafka::start(3).await;
    let trends = trend_records("t", 100, 9);
    let windows: Vec<_> = (0..150)
        .map(|i| {
            (
                format!("w{i}"),
                window_json(&format!("w{i}"), i + 1, (i % 3) as u32),
            )
        })
        .collect();
    let users: Vec<_> = (0..10)
        .map(|i| ("u".to_owned(), format!(r#"{{"total_active_users":{i},"posts_per_minute":1,"active_users":["did:plc:{i}"]}}"#)))
        .collect();
    kafka.produce(&kafka.trends, &trends).await;
    kafka.produce(&kafka.windows, &windows).await;
    kafka.produce(&kafka.users, &users).await;
    let config = cluster_config(&kafka, &cluster);
    let daemon = RunningDaemon::spawn(config.clone());
    kafka.wait_committed(&kafka.group, 260, DEADLINE).await;

    // Every key is on exactly one master, and the keys are spread over all three.
    let keys = cluster.keys_by_master();
    let names: HashSet<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(names.len(), keys.len(), "no key on two masters");
    for i in 0..100 {
        assert!(
            names.contains(format!("trends:keyword:t{i}").as_str()),
            "t{i}"
        );
    }
    for name in [
        "trends:current",
        "trends:last_update",
        "users:metrics",
        "users:active",
        "windows:index",
    ] {
        assert!(names.contains(name), "{name}");
    }
    for minute in 0..3 {
        assert!(names.contains(format!("windows:window_2024_01_01_12_0{minute}").as_str()));
    }
    let masters_used: HashSet<u16> = keys.iter().map(|(port, _)| *port).collect();
    assert_eq!(masters_used.len(), 3, "keys spread over every master");

    let cache = CacheLayer::connect(&config.redis).await.unwrap();
    assert_eq!(cache.get_trending_keywords(10).await.unwrap().len(), 10);
    let stats = cache.get_cache_stats().await.unwrap();
    assert_eq!(
        (stats.trends_keys, stats.users_keys, stats.windows_keys),
        (102, 3, 4)
    );
    assert_eq!(stats.total_keys as usize, keys.len());
    assert!(matches!(
        sweep_once(
            &cache,
            Duration::from_secs(60),
            Duration::from_secs(5),
            &lock_token()
        )
        .await
        .unwrap(),
        SweepOutcome::Swept(_)
    ));
    assert_eq!(cache.clear_cache_pattern("windows:*").await.unwrap(), 4);
    assert_eq!(cache.get_cache_stats().await.unwrap().windows_keys, 0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_in_the_middle_of_the_stream_loses_nothing() {
    let mut cluster = RedisCluster::start(3, 2).await;
    let kafka = TestKafka::start(3).await;
    let mut config = cluster_config(&kafka, &cluster);
    // A batch counts as written once a replica has it too: the failover cannot lose it.
    config.redis.wait_replicas = 1;
    let daemon = RunningDaemon::spawn(config.clone());

    let records: Vec<_> = (0..3_000)
        .map(|i| (format!("k{i}"), window_json(&format!("k{i}"), i + 1, 0)))
        .collect();
    let producing = async {
        for chunk in records.chunks(100) {
            kafka.produce(&kafka.windows, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let failing_over = async {
        wait_until(DEADLINE, "some progress", || async {
            kafka.committed_total(&kafka.group).await > 500
        })
        .await;
        let victim = cluster.masters()[0];
        cluster.kill(victim);
    };
    tokio::join!(producing, failing_over);

    kafka
        .wait_committed(&kafka.group, 3_000, Duration::from_secs(120))
        .await;
    // Read back through a fresh client once every live node agrees on the new topology.
    wait_until(DEADLINE, "the failover to complete", || async {
        cluster.settled()
    })
    .await;
    let cache = CacheLayer::connect(&config.redis).await.unwrap();
    let entries = cache
        .get_windowed_data("window_2024_01_01_12_00")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries.len(), 3_000);
    daemon.stop().await;
}

/// A cluster whose nodes take TLS clients with a certificate only (`tls-auth-clients
/// yes`, the cluster bus over TLS too), reached through `rediss://` seed nodes and the
/// `redis.tls_*` files: the daemon writes every key, with its TTL, on its owning master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_writes_to_a_cluster_over_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let cluster = RedisCluster::start_tls(3, 0, certs.path()).await;
    let kafka = TestKafka::start(3).await;
    kafka
        .produce(&kafka.trends, &trend_records("t", 60, 9))
        .await;
    let mut config = daemon_config(&kafka, &cluster.url(0));
    config.redis = RedisConfig::from_url(&cluster.tls_seeds()[0]);
    config.redis.cluster = true;
    config.redis.nodes = cluster.tls_seeds();
    config.redis.tls_ca_file = Some(certs.path().join("ca.pem"));
    config.redis.tls_cert_file = Some(certs.path().join("client.pem"));
    config.redis.tls_key_file = Some(certs.path().join("client.key"));
    config.validate().unwrap();
    let daemon = RunningDaemon::spawn(config.clone());
    kafka.wait_committed(&kafka.group, 60, DEADLINE).await;

    // Checked through the nodes' plain ports, which the daemon was not given.
    let keys = cluster.keys_by_master();
    for i in 0..60 {
        let key = format!("trends:keyword:t{i}");
        let (port, _) = keys
            .iter()
            .find(|(_, k)| *k == key)
            .unwrap_or_else(|| panic!("{key} written"));
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
            .unwrap()
            .get_connection()
            .unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).unwrap();
        assert!(ttl > 0, "{key} has a TTL, got {ttl}");
    }
    let masters_used: HashSet<u16> = keys.iter().map(|(port, _)| *port).collect();
    assert_eq!(masters_used.len(), 3, "keys spread over every master");

    // The per-master commands (INFO, DBSIZE, SCAN) reach every master over TLS too.
    let cache = CacheLayer::connect(&config.redis).await.unwrap();
    assert_eq!(cache.get_trending_keywords(100).await.unwrap().len(), 60);
    let stats = cache.get_cache_stats().await.unwrap();
    assert_eq!(stats.trends_keys, 62);
    assert_eq!(stats.total_keys as usize, keys.len());
    assert_eq!(
        cache.clear_cache_pattern("trends:keyword:*").await.unwrap(),
        60
    );
    assert!(cluster
        .keys_by_master()
        .iter()
        .all(|(_, key)| !key.starts_with("trends:keyword:")));
    daemon.stop().await;
}
