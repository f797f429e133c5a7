//! The release daemon under measurement: a separate process, configured through the
//! environment for one scenario's topics and consumer group.

use std::path::PathBuf;

use anyhow::{ensure, Context};
use cache_layer_testkit::process::DaemonProcess;
use cache_layer_testkit::RedisServer;

use crate::broker::topic_name;
use crate::cpu::Processes;

/// What the daemons of a run start against.
pub struct Target {
    pub daemon: PathBuf,
    pub bootstrap: String,
    pub fetch_wait_ms: u64,
    /// The processes besides the daemon whose CPU a run accounts for.
    pub processes: Processes,
    /// Whether the broker can delete topics (the mock cluster cannot).
    pub deletes_topics: bool,
}

pub struct Daemon(DaemonProcess);

impl Daemon {
    /// Starts the daemon on the topics under `prefix`, in consumer group `group`.
    pub fn spawn(
        target: &Target,
        redis: &RedisServer,
        prefix: &str,
        group: &str,
        max_wait_ms: u64,
    ) -> anyhow::Result<Self> {
        let env = [
            // The same fetch setting as the raw consumers it is compared with (the mock
            // broker holds every fetch that long, Apache Kafka only while it has no data).
            (
                "CACHE_LAYER__KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS",
                target.fetch_wait_ms.to_string(),
            ),
            ("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap.clone()),
            ("CACHE_LAYER__KAFKA__GROUP_ID", group.to_owned()),
            (
                "CACHE_LAYER__TOPICS__TRENDS",
                topic_name(prefix, "trend-alerts"),
            ),
            (
                "CACHE_LAYER__TOPICS__USER_METRICS",
                topic_name(prefix, "user-metrics"),
            ),
            (
                "CACHE_LAYER__TOPICS__WINDOWS",
                topic_name(prefix, "keyword-windows"),
            ),
            (
                "CACHE_LAYER__TOPICS__DEAD_LETTER",
                topic_name(prefix, "dlq"),
            ),
            ("CACHE_LAYER__REDIS__URL", redis.url()),
            ("CACHE_LAYER__BATCH__MAX_WAIT_MS", max_wait_ms.to_string()),
            ("CACHE_LAYER__CACHE__DEFAULT_TTL", "3600".to_owned()),
        ];
        let process = DaemonProcess::spawn(&target.daemon, env)
            .with_context(|| format!("cannot run the daemon {}", target.daemon.display()))?;
        Ok(Self(process))
    }

    /// The sum of a metric over its labels, from a scrape; 0 before it exists.
    pub async fn metric(&self, name: &str) -> f64 {
        self.0.metric(name).await
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// The process's peak resident set, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.0.peak_rss_kib()
    }

    /// The CPU the process has used so far, user and system, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.0.cpu_secs()
    }

    /// The process's resident set now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.0.rss_kib()
    }

    /// The address of the daemon's listener that serves `path`.
    pub fn addr_of(&self, path: &str) -> std::net::SocketAddr {
        self.0.addr_of(path)
    }

    /// SIGTERM, and a clean exit after the drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        let status = self.0.stop().await?;
        ensure!(status.success(), "the daemon exited with {status}");
        Ok(())
    }
}
