//! Live state of one daemon instance: counters the write path updates per batch (and,
//! for consumed messages, per message), and what readiness needs (Redis, Kafka, failing
//! writes, rebuilds, memory pressure, the assignment). The write path's counters,
//! Redis's state and the rebuilds are told through `events`, beside their metrics; the
//! rest is set where it happens. Tests and the readiness check read them. Prometheus
//! metrics are process-wide; these are per instance, which is what a test running two
//! daemons in one process needs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cache::MemoryUse;

#[derive(Debug)]
pub struct Status {
    consumed: AtomicU64,
    rejected: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    acknowledged: AtomicU64,
    assigned: AtomicUsize,
    redis_ok: AtomicBool,
    /// Why the consumer cannot fetch (every broker down, authentication or TLS failing),
    /// until a broker is seen up again, a rebalance or a commit goes through.
    kafka_problem: Mutex<Option<String>>,
    /// Subscribed topics that the brokers do not know (yet).
    missing_topics: Mutex<Vec<String>>,
    /// Where the operator and API listeners bound (useful with port 0).
    http_addrs: OnceLock<(SocketAddr, SocketAddr)>,
    /// Since when the batch being written keeps failing, and the last reason; `None`
    /// while writes go through. Readiness reads it.
    failing: Mutex<Option<(Instant, String)>>,
    /// The partitions being replayed to rebuild the cache; readiness waits for them.
    rebuilding: Mutex<Vec<RebuildProgress>>,
    /// Redis's memory use while it keeps consuming paused.
    memory_pressure: Mutex<Option<MemoryPressure>>,
}

/// Redis nearly full: consuming is paused until its memory use is below the ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MemoryPressure {
    /// The fullest master's `used_memory` and `maxmemory`.
    pub memory: MemoryUse,
    /// `redis.pause_above_memory_ratio`.
    pub pause_above: f64,
}

/// Where the replay of one partition stands, in a rebuild of the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RebuildProgress {
    pub topic: String,
    pub partition: i32,
    /// The first offset replayed.
    pub from: i64,
    /// Where the partition stood when the rebuild started: the replay ends there.
    pub target: i64,
    /// The next offset the loop expects of the partition.
    pub position: i64,
    /// Messages written again so far.
    pub replayed: u64,
}

/// The checks of readiness that the instance answers from its own state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Readiness {
    /// Why the consumer cannot fetch, if it cannot.
    pub(crate) kafka_problem: Option<String>,
    /// Subscribed topics the brokers do not know.
    pub missing_topics: Vec<String>,
    /// How long a batch has been failing, and why, once that is past the threshold.
    pub(crate) failing_writes: Option<(Duration, String)>,
    /// The partitions being replayed to rebuild the cache.
    pub(crate) rebuilding: Vec<RebuildProgress>,
    /// Redis's memory use, while it keeps consuming paused.
    pub(crate) memory_pressure: Option<MemoryPressure>,
}

impl Readiness {
    /// Whether Kafka is fine: a broker answers and every subscribed topic exists.
    pub(crate) fn kafka_ok(&self) -> bool {
        self.kafka_problem.is_none() && self.missing_topics.is_empty()
    }

    /// Whether every check is fine; Redis's answer is the caller's to add.
    pub(crate) fn ok(&self) -> bool {
        self.kafka_ok()
            && self.failing_writes.is_none()
            && self.rebuilding.is_empty()
            && self.memory_pressure.is_none()
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Messages received from Kafka.
    pub consumed: u64,
    /// Messages that failed decoding or validation.
    pub rejected: u64,
    /// Rejected messages delivered to the dead-letter topic.
    pub dead_lettered: u64,
    /// Batches written to Redis (one pipeline each).
    pub batches: u64,
    /// Messages whose batch was written and whose offsets were stored.
    pub acknowledged: u64,
    /// Partitions currently assigned to this instance.
    pub assigned: usize,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            consumed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            assigned: AtomicUsize::new(0),
            redis_ok: AtomicBool::new(false),
            kafka_problem: Mutex::new(None),
            missing_topics: Mutex::new(Vec::new()),
            http_addrs: OnceLock::new(),
            failing: Mutex::new(None),
            rebuilding: Mutex::new(Vec::new()),
            memory_pressure: Mutex::new(None),
        }
    }
}

impl Status {
    /// Whether the consumer can fetch: no problem reported since a broker was last up.
    pub fn kafka_connected(&self) -> bool {
        self.kafka_problem().is_none()
    }

    /// Why the consumer cannot fetch, if it cannot.
    pub(crate) fn kafka_problem(&self) -> Option<String> {
        self.kafka_problem.lock().expect("not poisoned").clone()
    }

    /// The consumer cannot fetch, for `problem`; returns whether it could until now.
    pub(crate) fn kafka_failed(&self, problem: String) -> bool {
        self.kafka_problem
            .lock()
            .expect("not poisoned")
            .replace(problem)
            .is_none()
    }

    /// A broker answers again; returns whether the consumer could not fetch until now.
    pub(crate) fn kafka_recovered(&self) -> bool {
        self.kafka_problem
            .lock()
            .expect("not poisoned")
            .take()
            .is_some()
    }

    /// Subscribed topics that the brokers do not know (yet).
    pub(crate) fn missing_topics(&self) -> Vec<String> {
        self.missing_topics.lock().expect("not poisoned").clone()
    }

    pub(crate) fn set_missing_topics(&self, topics: Vec<String>) {
        *self.missing_topics.lock().expect("not poisoned") = topics;
    }

    /// The address the operator listener (`/metrics`, `/healthz`, `/readyz`) bound,
    /// once it has.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addrs.get().map(|(operator, _)| *operator)
    }

    /// The address the API listener bound, once it has.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.http_addrs.get().map(|(_, api)| *api)
    }

    pub(crate) fn set_http_addrs(&self, operator: SocketAddr, api: SocketAddr) {
        let _ = self.http_addrs.set((operator, api));
    }

    /// A write attempt failed for `reason`.
    pub(crate) fn write_failed(&self, reason: String) {
        let mut failing = self.failing.lock().expect("not poisoned");
        let since = failing
            .as_ref()
            .map_or_else(Instant::now, |(since, _)| *since);
        *failing = Some((since, reason));
    }

    /// A batch went through: writes are not failing any more.
    pub(crate) fn write_succeeded(&self) {
        *self.failing.lock().expect("not poisoned") = None;
    }

    /// How long writes have been failing, and why, if they are.
    pub(crate) fn failing_writes(&self) -> Option<(Duration, String)> {
        let failing = self.failing.lock().expect("not poisoned");
        failing
            .as_ref()
            .map(|(since, reason)| (since.elapsed(), reason.clone()))
    }

    /// What this instance knows of its readiness, Redis's answer to a PING aside: the
    /// `/readyz` handler and the stats round both judge by it, so that the
    /// `cache_layer_ready` gauge and `/readyz` never disagree.
    pub(crate) fn readiness(&self, unready_after: Duration) -> Readiness {
        Readiness {
            kafka_problem: self.kafka_problem(),
            missing_topics: self.missing_topics(),
            failing_writes: self
                .failing_writes()
                .filter(|(since, _)| *since >= unready_after),
            rebuilding: self.rebuilding(),
            memory_pressure: self.memory_pressure(),
        }
    }

    /// Redis's memory use, while it keeps consuming paused.
    pub(crate) fn memory_pressure(&self) -> Option<MemoryPressure> {
        *self.memory_pressure.lock().expect("not poisoned")
    }

    pub(crate) fn set_memory_pressure(&self, pressure: Option<MemoryPressure>) {
        *self.memory_pressure.lock().expect("not poisoned") = pressure;
    }

    /// The partitions being replayed to rebuild the cache.
    pub(crate) fn rebuilding(&self) -> Vec<RebuildProgress> {
        self.rebuilding.lock().expect("not poisoned").clone()
    }

    pub(crate) fn set_rebuilding(&self, progress: Vec<RebuildProgress>) {
        *self.rebuilding.lock().expect("not poisoned") = progress;
    }

    /// Only `events::redis_state` tells it.
    pub(crate) fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            consumed: self.consumed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            assigned: self.assigned.load(Ordering::Relaxed),
        }
    }

    /// Whether the last Redis write or check succeeded.
    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    pub(crate) fn consumed(&self, rejected: bool) {
        self.consumed.fetch_add(1, Ordering::Relaxed);
        if rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn batch_written(&self, messages: usize, dead_lettered: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.acknowledged
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(dead_lettered as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_assigned(&self, partitions: usize) {
        self.assigned.store(partitions, Ordering::Relaxed);
    }
}
