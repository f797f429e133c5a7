//! A real Prometheus server (Debian's `prometheus`) scrapes the daemon on loopback, and
//! its HTTP API answers for `cache_layer_messages_consumed_total`.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cache_layer_testkit::kafka::{daemon_config, RunningDaemon, TestKafka};
use cache_layer_testkit::RedisServer;
use cache_layer_testkit::{wait_until, window_records};

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cache-layer\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (scripts/test.sh installs Debian's prometheus package)");
    Prometheus {
        child,
        port,
        _dir: dir,
    }
}

/// The value of an instant query's first sample, if any.
async fn query(port: u16, promql: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let response = reqwest::Client::new()
        .get(url)
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_daemon() {
    let kafka = TestKafka::start(1).await;
    let redis = RedisServer::start().await.unwrap();
    let records = window_records("k", 25);
    kafka.produce(&kafka.windows, &records).await;
    let daemon = RunningDaemon::spawn(daemon_config(&kafka, &redis.url()));
    kafka
        .wait_committed(&kafka.group, 25, Duration::from_secs(30))
        .await;

    let prometheus = start_prometheus(daemon.status.http_addr().unwrap());
    let consumed = format!(
        "sum(cache_layer_messages_consumed_total{{topic=\"{}\"}})",
        kafka.windows
    );
    wait_until(
        Duration::from_secs(60),
        "Prometheus to have scraped the counter",
        || async { query(prometheus.port, &consumed).await == Some(25.0) },
    )
    .await;
    assert_eq!(
        query(prometheus.port, "max(up{job=\"cache-layer\"})").await,
        Some(1.0)
    );
    daemon.stop().await;
}
