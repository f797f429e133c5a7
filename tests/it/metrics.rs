//! The daemon's /metrics, scraped over HTTP and parsed: counters move by exactly the
//! right amounts for a known input, every metric has HELP text, and promtool accepts
//! the exposition. The recorder is process-wide: cargo-nextest runs each test in a
//! process of its own, so no other test's counts reach these.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use cache_layer::metrics as names;
use cache_layer_testkit::RedisServer;
use std::collections::BTreeSet;

use crate::support::{metric_names_in, root};
use cache_layer_testkit::http::{parse_metrics, value};
use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::{trend_json, trend_records, wait_until, window_records};

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_input_and_promtool_accepts_the_exposition() {
    let kafka = TestKafka::start(2).await;
    let redis = RedisServer::start().await.unwrap();
    let mut records = trend_records("k", 40, 5);
    records.push(("bad1".into(), "{nope".into()));
    records.push(("bad2".into(), "also not json".into()));
    for i in 0..3 {
        records.push((format!("neg{i}"), trend_json("neg", 0, 1, -1)));
    }
    kafka.produce(&kafka.trends, &records).await;
    let windows = window_records("w", 10);
    kafka.produce(&kafka.windows, &windows).await;

    let mut config = daemon_config(&kafka, &redis.url());
    config.stats.interval = Duration::from_secs(1);
    let daemon = RunningDaemon::spawn(config);
    kafka
        .wait_committed(&kafka.group, 55, Duration::from_secs(30))
        .await;
    let addr = daemon.status.http_addr().expect("the listener is bound");

    let text = scrape(addr).await;
    let (samples, help) = parse_metrics(&text);
    let get = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(
        get(
            names::MESSAGES_CONSUMED,
            &[("topic", kafka.trends.as_str())]
        ),
        45.0
    );
    assert_eq!(
        get(
            names::MESSAGES_CONSUMED,
            &[("topic", kafka.windows.as_str())]
        ),
        10.0
    );
    assert_eq!(
        get(
            names::MESSAGES_REJECTED,
            &[("topic", kafka.trends.as_str()), ("reason", "not_json")]
        ),
        2.0
    );
    assert_eq!(
        get(
            names::MESSAGES_REJECTED,
            &[
                ("topic", kafka.trends.as_str()),
                ("reason", "negative_value")
            ]
        ),
        3.0
    );
    assert_eq!(
        get(
            names::MESSAGES_REJECTED,
            &[("topic", kafka.windows.as_str())]
        ),
        0.0
    );
    assert_eq!(
        get(
            names::MESSAGES_DEAD_LETTERED,
            &[("topic", kafka.trends.as_str())]
        ),
        5.0
    );
    let batches = daemon.status.snapshot().batches as f64;
    assert!(batches >= 1.0);
    assert_eq!(get(names::BATCHES_WRITTEN, &[]), batches);
    assert_eq!(get(&format!("{}_count", names::BATCH_SIZE), &[]), batches);
    assert_eq!(get(&format!("{}_sum", names::BATCH_SIZE), &[]), 55.0);
    assert_eq!(
        get(&format!("{}_count", names::PIPELINE_DURATION), &[]),
        batches
    );
    assert_eq!(
        get(&format!("{}_count", names::END_TO_END_LATENCY), &[]),
        55.0
    );
    assert_eq!(get(names::REDIS_ERRORS, &[]), 0.0);
    assert_eq!(get(names::UP, &[]), 1.0);
    assert_eq!(
        get(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert!(
        samples.iter().all(|s| s.name.starts_with("cache_layer_")),
        "only our prefix"
    );
    for sample in &samples {
        for label in sample.labels.keys() {
            assert!(
                [
                    "topic",
                    "reason",
                    "partition",
                    "category",
                    "kind",
                    "outcome",
                    "version",
                    "listener",
                    // Redis's maxmemory-policy: one of its eight.
                    "policy",
                    "le"
                ]
                .contains(&label.as_str()),
                "{} has a high-cardinality label {label}",
                sample.name
            );
        }
    }
    for name in [
        names::MESSAGES_CONSUMED,
        names::BATCH_SIZE,
        names::PIPELINE_DURATION,
        names::UP,
        names::BUILD_INFO,
    ] {
        assert!(
            help.get(name).is_some_and(|h| !h.is_empty()),
            "{name} has no HELP"
        );
    }

    // The lag gauge arrives with librdkafka's statistics (every 5 s by default).
    wait_until(
        Duration::from_secs(20),
        "consumer lag from librdkafka statistics",
        || async {
            let (samples, _) = parse_metrics(&scrape(addr).await);
            samples.iter().any(|s| {
                s.name == names::CONSUMER_LAG
                    && s.labels.get("topic").map(String::as_str) == Some(kafka.trends.as_str())
            })
        },
    )
    .await;
    let (samples, _) = parse_metrics(&scrape(addr).await);
    assert_eq!(
        value(
            &samples,
            names::CONSUMER_LAG,
            &[("topic", kafka.trends.as_str())]
        ),
        0.0,
        "caught up"
    );

    promtool_accepts(&scrape(addr).await);
    let api = daemon.status.api_addr().expect("the API listener is bound");
    dashboard_and_alerts_name_only_scraped_metrics(addr, api).await;
    daemon.stop().await;
}

/// Every metric the dashboard and the alert rules query is in a real scrape, once a
/// stats round and a sweep have run.
async fn dashboard_and_alerts_name_only_scraped_metrics(
    addr: std::net::SocketAddr,
    api: std::net::SocketAddr,
) {
    let swept = reqwest::Client::new()
        .post(format!("http://{api}/v1/admin/sweep"))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .unwrap();
    assert!(swept.status().is_success());
    wait_until(Duration::from_secs(10), "a stats round", || async {
        scrape(addr).await.contains(names::CACHE_KEYS)
    })
    .await;
    let (samples, _) = parse_metrics(&scrape(addr).await);
    let scraped: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| metric_names_in(&s.name))
        .collect();
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/dashboards/cache-layer.json")).unwrap();
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    // Every family, failures included, is in a healthy scrape from the start.
    for name in metric_names_in(&dashboard)
        .into_iter()
        .chain(metric_names_in(&alerts))
    {
        assert!(
            scraped.contains(&name),
            "{name} is queried but not exported: {scraped:?}"
        );
    }
}

/// `promtool check metrics` reads an exposition on stdin and lints names, units, HELP.
fn promtool_accepts(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/test.sh installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_of_an_idle_instance_has_every_family() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    // The default stats interval (15 s): the gauges must not wait for it.
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    wait_until(Duration::from_secs(10), "the listener", || async {
        daemon.status.http_addr().is_some()
    })
    .await;
    let addr = daemon.status.http_addr().unwrap();
    let (samples, _) = parse_metrics(&scrape(addr).await);
    let get = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
            .map(|s| s.value)
    };
    for topic in [kafka.trends.as_str(), kafka.windows.as_str()] {
        assert_eq!(
            get(names::MESSAGES_CONSUMED, &[("topic", topic)]),
            Some(0.0)
        );
        assert_eq!(get(names::MESSAGES_REFUSED, &[("topic", topic)]), Some(0.0));
        let rejected = [("topic", topic), ("reason", "not_json")];
        assert_eq!(get(names::MESSAGES_REJECTED, &rejected), Some(0.0));
    }
    for (name, labels) in [
        (names::BATCHES_WRITTEN, vec![]),
        (names::BATCH_RETRIES, vec![]),
        (names::REDIS_ERRORS, vec![("kind", "oom")]),
        (names::KAFKA_ERRORS, vec![("kind", "authentication")]),
        (names::SWEEP_RUNS, vec![("outcome", "failed")]),
    ] {
        assert_eq!(get(name, &labels), Some(0.0), "{name} {labels:?}");
    }
    // The first stats round runs at start-up, not after stats.interval_secs.
    wait_until(Duration::from_secs(5), "the stats gauges", || async {
        scrape(addr).await.contains(names::CACHE_KEYS)
    })
    .await;
    daemon.stop().await;
}
