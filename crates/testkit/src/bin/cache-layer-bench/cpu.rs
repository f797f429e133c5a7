//! Where the machine's CPU goes during a measurement: the whole machine (`/proc/stat`)
//! and each process that shares it (the broker, this benchmark, the daemon, Redis), so
//! that a claim about what bounds a run rests on a measurement from the same run.

use std::collections::HashMap;
use std::time::Instant;

use cache_layer_testkit::process::{cpu_secs_of, cpu_secs_of_file};
use redis::aio::MultiplexedConnection;
use serde::Serialize;

/// The processes to account for besides this one and Redis.
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes {
    /// The broker, when it is a process of its own whose id was given.
    pub broker: Option<u32>,
    /// The daemon under measurement, in its phase.
    pub daemon: Option<u32>,
}

/// CPU used over an interval, in cores: CPU seconds per second of wall time.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Cores {
    /// All cores together, busy with anything (`/proc/stat`): at most `nproc`.
    pub machine: f64,
    /// Taken by the hypervisor from this virtual machine (`steal` in `/proc/stat`).
    pub stolen: f64,
    pub broker: Option<f64>,
    /// The broker's busiest thread: a broker bound by one thread is saturated near 1.0,
    /// however idle the machine.
    pub broker_busiest_thread: Option<f64>,
    /// This process: the producer and the prober (and the raw consumer, in its phase).
    pub benchmark: f64,
    pub daemon: Option<f64>,
    pub redis: f64,
}

impl Cores {
    /// One line for the report: the machine, then each process.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "machine {:.2} (stolen {:.2})",
            self.machine, self.stolen
        )];
        if let Some(broker) = self.broker {
            parts.push(match self.broker_busiest_thread {
                Some(thread) => format!("broker {broker:.2} (busiest thread {thread:.2})"),
                None => format!("broker {broker:.2}"),
            });
        }
        parts.push(format!("benchmark {:.2}", self.benchmark));
        if let Some(daemon) = self.daemon {
            parts.push(format!("daemon {daemon:.2}"));
        }
        parts.push(format!("Redis {:.2}", self.redis));
        parts.join(", ")
    }
}

/// The CPU seconds used so far by the machine and by each process, at one moment.
pub struct Sample {
    at: Instant,
    machine: f64,
    stolen: f64,
    broker: Option<f64>,
    /// The broker's threads, by thread id.
    broker_threads: HashMap<u32, f64>,
    benchmark: f64,
    daemon: Option<f64>,
    redis: f64,
}

impl Sample {
    pub async fn take(
        processes: Processes,
        redis: &mut MultiplexedConnection,
    ) -> anyhow::Result<Self> {
        let (machine, stolen) = machine_secs()?;
        Ok(Self {
            at: Instant::now(),
            machine,
            stolen,
            broker: processes.broker.map(cpu_secs_of),
            broker_threads: processes.broker.map(threads_of).unwrap_or_default(),
            benchmark: cpu_secs_of(std::process::id()),
            daemon: processes.daemon.map(cpu_secs_of),
            redis: redis_cpu_secs(redis).await?,
        })
    }

    /// The cores each used between `earlier` and this sample.
    pub fn cores_since(&self, earlier: &Sample) -> Cores {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let cores = |now: f64, then: f64| (now - then) / wall;
        let both = |now: Option<f64>, then: Option<f64>| Some(cores(now?, then?));
        Cores {
            machine: cores(self.machine, earlier.machine),
            stolen: cores(self.stolen, earlier.stolen),
            broker: both(self.broker, earlier.broker),
            broker_busiest_thread: self
                .broker_threads
                .iter()
                .filter_map(|(tid, now)| Some(cores(*now, *earlier.broker_threads.get(tid)?)))
                .max_by(f64::total_cmp),
            benchmark: cores(self.benchmark, earlier.benchmark),
            daemon: both(self.daemon, earlier.daemon),
            redis: cores(self.redis, earlier.redis),
        }
    }
}

/// The CPU seconds each thread of process `pid` has used so far, by thread id.
fn threads_of(pid: u32) -> HashMap<u32, f64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|task| task.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .map(|tid| {
            (
                tid,
                cpu_secs_of_file(&format!("/proc/{pid}/task/{tid}/stat")),
            )
        })
        .collect()
}

/// The CPU seconds all cores have spent busy since boot, and those the hypervisor took:
/// from the first line of `/proc/stat` (user nice system idle iowait irq softirq steal;
/// guest time is inside user).
fn machine_secs() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or_else(|| anyhow::anyhow!("/proc/stat has no cpu line"))?
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    anyhow::ensure!(ticks.len() >= 8, "/proc/stat's cpu line is too short");
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    let per_sec = cache_layer_testkit::process::clock_ticks_per_sec();
    Ok((busy as f64 / per_sec, ticks[7] as f64 / per_sec))
}

/// The CPU Redis has used since it started, user and system, in seconds.
pub async fn redis_cpu_secs(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum())
}
