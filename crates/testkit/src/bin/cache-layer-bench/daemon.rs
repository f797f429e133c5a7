//! The release daemon as a separate process, configured through the environment as an
//! operator would, scraped over HTTP, and stopped with SIGTERM.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{ensure, Context};
use cache_layer_testkit::{free_port, RedisServer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::broker::topic_name;

/// What the daemons of a run start against.
pub struct Target {
    pub daemon: PathBuf,
    pub bootstrap: String,
    pub fetch_wait_ms: u64,
}

pub struct Daemon {
    child: Child,
    http_port: u16,
}

impl Daemon {
    /// Starts the daemon on the topics under `prefix`, in consumer group `group`.
    pub fn spawn(
        target: &Target,
        redis: &RedisServer,
        prefix: &str,
        group: &str,
        max_wait_ms: u64,
    ) -> anyhow::Result<Self> {
        let http_port = free_port();
        let child = Command::new(&target.daemon)
            .arg("run")
            // No file: the built-in defaults, then these variables.
            .env_remove("CACHE_LAYER_CONFIG")
            // The mock broker (and tansu) hold every fetch for fetch.wait.max.ms even when
            // data arrives meanwhile, where Apache Kafka answers at once: keep it short.
            .env(
                "CACHE_LAYER__KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS",
                target.fetch_wait_ms.to_string(),
            )
            .env("KAFKA_BOOTSTRAP_SERVERS", &target.bootstrap)
            .env("CACHE_LAYER__KAFKA__GROUP_ID", group)
            .env(
                "CACHE_LAYER__TOPICS__TRENDS",
                topic_name(prefix, "trend-alerts"),
            )
            .env(
                "CACHE_LAYER__TOPICS__USER_METRICS",
                topic_name(prefix, "user-metrics"),
            )
            .env(
                "CACHE_LAYER__TOPICS__WINDOWS",
                topic_name(prefix, "keyword-windows"),
            )
            .env(
                "CACHE_LAYER__TOPICS__DEAD_LETTER",
                topic_name(prefix, "dlq"),
            )
            .env("CACHE_LAYER__REDIS__URL", redis.url())
            .env(
                "CACHE_LAYER__HTTP__LISTEN",
                format!("127.0.0.1:{http_port}"),
            )
            .env("CACHE_LAYER__BATCH__MAX_WAIT_MS", max_wait_ms.to_string())
            .env("CACHE_LAYER__CACHE__DEFAULT_TTL", "3600")
            .env("CACHE_LAYER__LOG__LEVEL", "error")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run the daemon {}", target.daemon.display()))?;
        Ok(Self { child, http_port })
    }

    /// The sum of a metric over its labels, from a scrape; 0 before it exists.
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(response) = http_get(self.http_port, "/metrics").await else {
            return 0.0;
        };
        response
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    /// The process's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("VmHWM:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
                })
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, as an orchestrator stops it, and a clean exit after the drain.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("the daemon already exited")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        let status = self.child.wait().await?;
        ensure!(status.success(), "the daemon exited with {status}");
        Ok(())
    }
}

/// A minimal HTTP GET on loopback, enough for /metrics.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}
