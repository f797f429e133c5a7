//! Kafka over TLS and SASL, for real: Apache Kafka's own SSL and SASL_SSL listeners, with
//! certificates from a CA the test makes and a SCRAM user formatted into the broker's
//! storage. The daemon consumes over TLS alone, refuses a broker its CA did not sign,
//! consumes over SASL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and a password the
//! broker refuses makes it unready, naming the cause.

use std::path::Path;
use std::time::Duration;

use cache_layer::config::Config;
use cache_layer_testkit::apache::{Listener, SASL_USER};
use cache_layer_testkit::certs::certificates;
use cache_layer_testkit::kafka::{daemon_config_for, RunningDaemon, TestKafka};
use cache_layer_testkit::{connect, wait_until, window_records, RedisServer};
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

/// The daemon's configuration for the topics of `kafka` through the listener at
/// `bootstrap`, with these security properties, in a group of its own.
fn config(
    kafka: &TestKafka,
    bootstrap: &str,
    redis: &RedisServer,
    group: &str,
    security: &[(&str, String)],
) -> Config {
    let mut config = daemon_config_for(kafka, bootstrap, &redis.url());
    config.kafka.group_id = group.into();
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

/// Runs a daemon until Redis holds the window's 20 counts, then clears them for the next.
async fn consumes(config: Config, redis: &RedisServer) {
    let daemon = RunningDaemon::spawn(config);
    wait_until(DEADLINE, "the window counts in Redis", || async {
        connect(redis)
            .hlen::<_, usize>("windows:window_2024_01_01_12_00")
            .unwrap()
            == 20
    })
    .await;
    daemon.stop().await;
    let _: () = redis::cmd("FLUSHALL").query(&mut connect(redis)).unwrap();
}

/// One broker with both secured listeners, the window counts produced on it.
async fn secured_broker() -> (tempfile::TempDir, TestKafka, RedisServer) {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let kafka = TestKafka::own_with(1, &Listener::Secured(certs.path().to_owned())).await;
    kafka
        .produce(&kafka.windows, &window_records("tls", 20))
        .await;
    let redis = RedisServer::start().await.unwrap();
    (certs, kafka, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_consumes_over_tls_alone_and_refuses_a_broker_of_another_ca() {
    let (certs, kafka, redis) = secured_broker().await;
    let bootstrap = kafka.apache().tls_bootstrap();
    let tls = [
        ("security.protocol", "SSL".to_owned()),
        ("ssl.ca.location", ca(certs.path())),
    ];
    consumes(config(&kafka, &bootstrap, &redis, "tls", &tls), &redis).await;

    // A CA that did not sign the broker's certificate: no connection, and /readyz says why.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path());
    let wrong = [tls[0].clone(), ("ssl.ca.location", ca(other.path()))];
    let refused = RunningDaemon::spawn(config(&kafka, &bootstrap, &redis, "wrong-ca", &wrong));
    wait_unready_for(&refused, "ssl").await;
    refused.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_scram_consume_over_tls_and_a_refused_password_is_named() {
    let (certs, kafka, redis) = secured_broker().await;
    let bootstrap = kafka.apache().sasl_bootstrap();
    let (user, password) = SASL_USER;
    let sasl = |mechanism: &str, password: &str| {
        [
            ("security.protocol", "SASL_SSL".to_owned()),
            ("ssl.ca.location", ca(certs.path())),
            ("sasl.mechanism", mechanism.to_owned()),
            ("sasl.username", user.to_owned()),
            ("sasl.password", password.to_owned()),
        ]
    };
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let security = sasl(mechanism, password);
        consumes(
            config(&kafka, &bootstrap, &redis, mechanism, &security),
            &redis,
        )
        .await;

        let wrong = sasl(mechanism, "not-the-password");
        let group = format!("{mechanism}-refused");
        let refused = RunningDaemon::spawn(config(&kafka, &bootstrap, &redis, &group, &wrong));
        wait_unready_for(&refused, "authentication").await;
        refused.stop().await;
    }
}
