//! The `cache-layer` binary as a separate process, configured through the environment as
//! an operator would configure it, scraped over HTTP, and stopped with SIGTERM or killed
//! with SIGKILL. The benchmark measures it; the tests kill it mid-stream.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::{free_port, http};

pub struct DaemonProcess {
    child: Child,
    http_port: u16,
    api_port: u16,
}

impl DaemonProcess {
    /// Starts `binary run` with no configuration file (the built-in defaults), then the
    /// `CACHE_LAYER__...` or legacy variables of `env`; the HTTP listener takes a free
    /// loopback port.
    pub fn spawn<K: AsRef<str>, V: AsRef<str>>(
        binary: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<Self> {
        Self::spawn_with(binary, &["run"], &std::env::temp_dir(), env)
    }

    /// Starts `binary` with these arguments in `dir`, as [`DaemonProcess::spawn`] does
    /// otherwise.
    pub fn spawn_with<K: AsRef<str>, V: AsRef<str>>(
        binary: &Path,
        args: &[&str],
        dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> io::Result<Self> {
        Self::start(binary, args, dir, env, Stdio::inherit())
    }

    /// [`DaemonProcess::spawn_with`], its logs (stderr) written to `log`.
    pub fn spawn_logging_to<K: AsRef<str>, V: AsRef<str>>(
        binary: &Path,
        args: &[&str],
        dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
        log: &Path,
    ) -> io::Result<Self> {
        Self::start(binary, args, dir, env, std::fs::File::create(log)?.into())
    }

    fn start<K: AsRef<str>, V: AsRef<str>>(
        binary: &Path,
        args: &[&str],
        dir: &Path,
        env: impl IntoIterator<Item = (K, V)>,
        stderr: Stdio,
    ) -> io::Result<Self> {
        let (http_port, api_port) = (free_port(), free_port());
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_remove("CACHE_LAYER_CONFIG")
            .env(
                "CACHE_LAYER__HTTP__LISTEN",
                format!("127.0.0.1:{http_port}"),
            )
            .env(
                "CACHE_LAYER__HTTP__API_LISTEN",
                format!("127.0.0.1:{api_port}"),
            )
            .env("CACHE_LAYER__LOG__LEVEL", "error");
        for (name, value) in env {
            command.env(name.as_ref(), value.as_ref());
        }
        let child = command
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot run {}: {e}", binary.display()))
            })?;
        Ok(Self {
            child,
            http_port,
            api_port,
        })
    }

    /// A GET on the daemon's listener of `path` (the API's for `/v1/...`, the
    /// operator's otherwise): the status code and the body; `None` while it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http::get(self.addr_of(path), path).await
    }

    /// The address serving `path`.
    pub fn addr_of(&self, path: &str) -> SocketAddr {
        let port = if path.starts_with("/v1/") {
            self.api_port
        } else {
            self.http_port
        };
        (Ipv4Addr::LOCALHOST, port).into()
    }

    /// The sum of a metric over its labels, from a scrape; 0 before it exists.
    pub async fn metric(&self, name: &str) -> f64 {
        let Some((_, text)) = self.get("/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    /// Sends the process a signal and lets it run on (SIGHUP: reload the configuration).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            kill(Pid::from_raw(pid as i32), signal).expect("the process takes signals");
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The process's resident set now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The CPU time the process has used so far, user and system, in seconds; 0 once it
    /// is gone.
    pub fn cpu_secs(&self) -> f64 {
        self.child.id().map_or(0.0, cpu_secs_of)
    }

    /// A `... kB` field of `/proc/<pid>/status`; 0 once the process is gone.
    fn status_kib(&self, field: &str) -> u64 {
        let Some(pid) = self.child.id() else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix(field)
                        .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
                })
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, as an orchestrator stops it; returns how it exited after the drain.
    pub async fn stop(self) -> io::Result<ExitStatus> {
        self.end_with(Signal::SIGTERM).await
    }

    /// SIGKILL: no drain, no final commit.
    pub async fn kill(self) -> io::Result<ExitStatus> {
        self.end_with(Signal::SIGKILL).await
    }

    async fn end_with(mut self, signal: Signal) -> io::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            kill(Pid::from_raw(pid as i32), signal).map_err(io::Error::from)?;
        }
        self.child.wait().await
    }
}

/// The CPU time process `pid` has used so far, user and system, in seconds; 0 when there
/// is no such process.
pub fn cpu_secs_of(pid: u32) -> f64 {
    cpu_secs_of_file(&format!("/proc/{pid}/stat"))
}

/// The user and system CPU time in a `/proc/<pid>/stat` (or `.../task/<tid>/stat`) file,
/// in seconds; 0 when it cannot be read.
pub fn cpu_secs_of_file(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime and stime are the 14th and 15th fields of the whole line.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks_per_sec()
}

/// The unit of `/proc`'s CPU times (`CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}
