//! Redis behind Sentinel, for real: a master, a replica and three sentinels as
//! `redis-server` processes. The master is SIGKILLed in the middle of a stream; the
//! daemon follows the sentinels to the promoted replica, and with `redis.wait_replicas =
//! 1` no acknowledged batch is lost. And a sentinel and a master over mutual TLS, each
//! with its own password.

use std::process::{Command, Stdio};
use std::time::Duration;

use cache_layer::config::RedisConfig;
use cache_layer::CacheLayer;
use cache_layer_testkit::certs::certificates;
use cache_layer_testkit::fixtures;
use cache_layer_testkit::http::parse_metrics;
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::sentinel::{RedisSentinel, MASTER_NAME};
use cache_layer_testkit::state::{
    assert_every_key_expires, assert_same_state, data_snapshot, expected_state,
};
use cache_layer_testkit::{connect, free_port, trend_records, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn sentinel_config(sentinel: &RedisSentinel) -> RedisConfig {
    RedisConfig {
        sentinel_master: MASTER_NAME.to_owned(),
        sentinel_nodes: sentinel.urls(),
        ..RedisConfig::default()
    }
}

async fn failovers(daemon: &RunningDaemon) -> f64 {
    let Some(addr) = daemon.status.http_addr() else {
        return -1.0;
    };
    let Some((_, text)) = cache_layer_testkit::http::get(addr, "/metrics").await else {
        return -1.0;
    };
    let (samples, _) = parse_metrics(&text);
    samples
        .iter()
        .find(|s| s.name == "cache_layer_redis_failovers_total")
        .map_or(-1.0, |s| s.value)
}

async fn ready_code(daemon: &RunningDaemon) -> Option<u16> {
    daemon.readyz().await.map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_stream_fails_over_and_the_state_is_exact() {
    let mut sentinel = RedisSentinel::start().await;
    let (master, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let kafka = TestKafka::start(3).await;
    let stream = fixtures::stream(12_000, 600, 31);
    let expected = expected_state(&stream).await;
    let mut config = daemon_config(&kafka, "redis://127.0.0.1:1/0");
    config.redis = sentinel_config(&sentinel);
    // A batch counts as written once the replica has it too: the failover cannot lose it.
    config.redis.wait_replicas = 1;
    config.batch.unready_after = Duration::from_millis(500);
    config.stats.interval = Duration::from_secs(1);
    let daemon = RunningDaemon::spawn(config.clone());
    let (first, second) = stream.split_at(6_000);
    kafka.produce_generated(first).await;
    wait_until(DEADLINE, "a first commit", || async {
        kafka.committed_total(&kafka.group).await > 0
    })
    .await;
    wait_until(DEADLINE, "ready", || async {
        ready_code(&daemon).await == Some(200)
    })
    .await;

    sentinel.node(master).stop();
    kafka.produce_generated(second).await;
    wait_until(DEADLINE, "unready during the failover", || async {
        ready_code(&daemon).await == Some(503)
    })
    .await;
    wait_until(DEADLINE, "the sentinels to promote the replica", || async {
        sentinel.master_port() == Some(replica)
    })
    .await;
    wait_until(DEADLINE, "the daemon on the new master", || async {
        failovers(&daemon).await == 1.0
    })
    .await;
    // The old master comes back empty; the sentinels make it the new master's replica,
    // and WAIT can be answered again.
    sentinel.node(master).restart().await.unwrap();

    kafka.wait_committed(&kafka.group, 12_000, DEADLINE).await;
    wait_until(DEADLINE, "ready after the failover", || async {
        ready_code(&daemon).await == Some(200)
    })
    .await;
    let mut conn = connect(&sentinel.nodes[1]);
    assert_same_state(&data_snapshot(&mut conn), &expected);
    assert_every_key_expires(&mut conn, Duration::from_secs(300));
    assert_eq!(failovers(&daemon).await, 1.0);

    // The library, through the same configuration, reads from the master Sentinel names.
    let cache = CacheLayer::connect(&config.redis).await.unwrap();
    assert!(!cache.get_trending_keywords(5).await.unwrap().is_empty());
    daemon.stop().await;
}

/// A sentinel and a master that take only TLS clients with a certificate, each with its
/// own password: `rediss://` sentinels use the `redis.tls_*` files for both, and
/// `redis.sentinel_password` is the sentinel's while `redis.password` is the master's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_over_tls_with_its_own_password_names_the_master() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls = format!(
        "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients yes\n",
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    );
    let (master_port, sentinel_port) = (free_port(), free_port());
    let master_conf = dir.path().join("master.conf");
    std::fs::write(
        &master_conf,
        format!(
            "port 0\ntls-port {master_port}\nbind 127.0.0.1\nrequirepass master-pw\n\
             save \"\"\nappendonly no\ndir {}\n{tls}",
            dir.path().display()
        ),
    )
    .unwrap();
    let sentinel_conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &sentinel_conf,
        format!(
            "port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {}\ntls-replication yes\n{tls}\
             requirepass sentinel-pw\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
             sentinel auth-pass {MASTER_NAME} master-pw\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let _master = Process::spawn(Command::new("redis-server").arg(&master_conf));
    let _sentinel = Process::spawn(
        Command::new("redis-server")
            .arg(&sentinel_conf)
            .arg("--sentinel"),
    );
    for port in [master_port, sentinel_port] {
        wait_until(DEADLINE, "a TLS port to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    let config = RedisConfig {
        sentinel_master: MASTER_NAME.to_owned(),
        sentinel_nodes: vec![format!("rediss://127.0.0.1:{sentinel_port}")],
        sentinel_password: Some("sentinel-pw".into()),
        password: Some("master-pw".into()),
        tls_ca_file: Some(dir.path().join("ca.pem")),
        tls_cert_file: Some(dir.path().join("client.pem")),
        tls_key_file: Some(dir.path().join("client.key")),
        ..RedisConfig::default()
    };
    let mut without_sentinel_password = config.clone();
    without_sentinel_password.sentinel_password = None;
    assert!(CacheLayer::connect(&without_sentinel_password)
        .await
        .is_err());

    let kafka = TestKafka::start(1).await;
    kafka
        .produce(&kafka.trends, &trend_records("t", 20, 3))
        .await;
    let mut daemon_config = daemon_config(&kafka, "redis://127.0.0.1:1/0");
    daemon_config.redis = config.clone();
    let daemon = RunningDaemon::spawn(daemon_config);
    kafka.wait_committed(&kafka.group, 20, DEADLINE).await;
    let cache = CacheLayer::connect(&config).await.unwrap();
    assert_eq!(cache.get_trending_keywords(50).await.unwrap().len(), 20);
    daemon.stop().await;
}

/// A child process killed when the test ends.
struct Process(std::process::Child);

impl Process {
    fn spawn(command: &mut Command) -> Self {
        Self(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs"),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
