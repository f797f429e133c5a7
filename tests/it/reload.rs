//! SIGHUP reloads the configuration file and the environment, with the daemon as its own
//! process on Apache Kafka: a changed TTL applies to the next write, a broken file
//! changes nothing, and a key that takes a restart is named and kept.

use std::path::Path;
use std::time::Duration;

use cache_layer::metrics::CONFIG_RELOADS;
use cache_layer_testkit::kafka::{Broker, TestKafka};
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::{connect, trend_records, wait_until, RedisServer};
use nix::sys::signal::Signal;
use redis::Commands;

const DEADLINE: Duration = Duration::from_secs(60);

/// The daemon's configuration file, with these TTL and broker settings.
fn write_config(path: &Path, kafka: &Broker, bootstrap: &str, redis: &str, default_ttl: &str) {
    let toml = format!(
        r#"
        [kafka]
        bootstrap_servers = "{bootstrap}"
        group_id = "{group}"
        commit_interval_ms = 100
        [topics]
        trends = "{trends}"
        user_metrics = "{users}"
        windows = "{windows}"
        dead_letter = "{dead_letter}"
        [redis]
        url = "{redis}"
        [cache]
        default_ttl = {default_ttl}
        [batch]
        max_wait_ms = 20
        "#,
        group = kafka.group,
        trends = kafka.trends,
        users = kafka.users,
        windows = kafka.windows,
        dead_letter = kafka.dead_letter,
    );
    std::fs::write(path, toml).unwrap();
}

struct Reloading {
    kafka: TestKafka,
    redis: RedisServer,
    dir: tempfile::TempDir,
    daemon: DaemonProcess,
}

impl Reloading {
    /// A daemon reading its configuration from a file, TTL 300 s, logging to a file.
    async fn start() -> Self {
        let kafka = TestKafka::start(1).await;
        let redis = RedisServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cache-layer.toml");
        write_config(&config, &kafka, &kafka.bootstrap(), &redis.url(), "300");
        let daemon = DaemonProcess::spawn_logging_to(
            env!("CARGO_BIN_EXE_cache-layer").as_ref(),
            &["run", "--config", config.to_str().unwrap()],
            dir.path(),
            [("CACHE_LAYER__LOG__LEVEL", "info")],
            &dir.path().join("daemon.log"),
        )
        .unwrap();
        Self {
            kafka,
            redis,
            dir,
            daemon,
        }
    }

    fn rewrite(&self, bootstrap: &str, default_ttl: &str) {
        let path = self.dir.path().join("cache-layer.toml");
        write_config(
            &path,
            &self.kafka,
            bootstrap,
            &self.redis.url(),
            default_ttl,
        );
    }

    /// Sends SIGHUP and waits for the reload's outcome to be counted.
    async fn reload(&self, outcome: &str) {
        let series = format!("{CONFIG_RELOADS}{{outcome=\"{outcome}\"}}");
        let before = self.daemon.metric(&series).await;
        self.daemon.signal(Signal::SIGHUP);
        wait_until(DEADLINE, &format!("a reload {outcome}"), || async {
            self.daemon.metric(&series).await == before + 1.0
        })
        .await;
    }

    /// Produces a trend alert for `keyword` and returns its key's TTL once written.
    async fn written_ttl(&self, keyword: &str) -> i64 {
        self.kafka
            .produce(&self.kafka.trends, &trend_records(keyword, 1, 10))
            .await;
        let key = format!("trends:keyword:{keyword}0");
        let mut conn = connect(&self.redis);
        wait_until(DEADLINE, &format!("{key} written"), || {
            let exists: bool = conn.exists(&key).unwrap();
            async move { exists }
        })
        .await;
        connect(&self.redis).ttl(&key).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ttl_applies_to_the_next_write() {
    let test = Reloading::start().await;
    let ttl = test.written_ttl("before").await;
    assert!((290..=300).contains(&ttl), "{ttl}");

    test.rewrite(&test.kafka.bootstrap(), "60");
    test.reload("applied").await;
    let ttl = test.written_ttl("after").await;
    assert!((50..=60).contains(&ttl), "{ttl}");
    assert!(
        test.log().contains("applied=\"cache.default_ttl\""),
        "{}",
        test.log()
    );
    assert!(test.daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_and_names_its_key() {
    let test = Reloading::start().await;
    test.written_ttl("before").await;

    test.rewrite(&test.kafka.bootstrap(), "0");
    test.reload("failed").await;
    let log = test.log();
    assert!(
        log.contains("configuration not reloaded, nothing changed"),
        "{log}"
    );
    assert!(
        log.contains("`cache.default_ttl` must be greater than 0"),
        "{log}"
    );
    let ttl = test.written_ttl("after").await;
    assert!((290..=300).contains(&ttl), "the TTL of before: {ttl}");
    assert!(test.daemon.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_broker_is_kept_and_named_as_taking_a_restart() {
    let test = Reloading::start().await;
    test.written_ttl("before").await;

    test.rewrite("127.0.0.1:1", "60");
    test.reload("applied").await;
    let log = test.log();
    assert!(
        log.contains("keys=\"kafka.bootstrap_servers\"") && log.contains("take a restart"),
        "{log}"
    );
    // Still consuming from the broker it started with, and the TTL changed.
    let ttl = test.written_ttl("after").await;
    assert!((50..=60).contains(&ttl), "{ttl}");
    assert!(test.daemon.stop().await.unwrap().success());
}
