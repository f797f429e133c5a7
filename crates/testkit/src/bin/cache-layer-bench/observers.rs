//! Where the latency benchmark looks for its probes, each observer on a thread or task of
//! its own that notes when it saw each probe, so that the loop that produces never waits
//! on it: the daemon's writes in Redis, or a raw consumer's `poll`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_layer::schema::Keys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::broker::{blocking, raw_consumer_config, topic_name, topic_names};
use crate::daemon::Target;

/// The key of the message every observer must have seen before the clock starts; a raw
/// observer records it beside the `probe-` keys.
pub const WARM_UP_KEY: &str = "latency-warmup";

/// Where a probe is looked for.
pub enum Observer {
    /// The daemon's write: the probe's key in Redis.
    Redis(RedisObserver),
    /// The raw consumer's `poll`.
    Raw(RawObserver),
}

/// When each probe was seen, by its key.
type SeenAt = Arc<Mutex<HashMap<String, Instant>>>;

impl Observer {
    /// What it watches, for a message that names it.
    pub fn name(&self) -> &'static str {
        match self {
            Observer::Redis(_) => "the daemon (its key in Redis)",
            Observer::Raw(_) => "the raw consumer",
        }
    }

    /// Starts looking for the probe `keyword`.
    pub fn expect(&self, keyword: &str) {
        if let Observer::Redis(redis) = self {
            redis
                .expected
                .lock()
                .expect("not poisoned")
                .push(keyword.to_owned());
        }
    }

    /// The latency of the probe `keyword` sent at `sent`, in ms, once it has been seen.
    pub fn latency(&self, keyword: &str, sent: Instant) -> Option<f64> {
        let seen = match self {
            Observer::Redis(redis) => &redis.seen,
            Observer::Raw(raw) => &raw.consumed,
        };
        let at = *seen.lock().expect("not poisoned").get(keyword)?;
        Some(ms(at.saturating_duration_since(sent)))
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Observer::Redis(redis) => redis.stop().await,
            Observer::Raw(raw) => raw.stop().await,
        }
    }
}

/// Looks for the expected probes' keys in Redis every millisecond, on a task of its own.
/// A probe counts when the reply that found its key arrived.
pub struct RedisObserver {
    expected: Arc<Mutex<Vec<String>>>,
    seen: SeenAt,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RedisObserver {
    pub fn start(mut conn: MultiplexedConnection) -> Self {
        let expected: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: SeenAt = Arc::default();
        let stop = CancellationToken::new();
        let (looking, noted, stopping) = (Arc::clone(&expected), Arc::clone(&seen), stop.clone());
        let task = tokio::spawn(async move {
            let keys = Keys::new("");
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let keywords = looking.lock().expect("not poisoned").clone();
                if keywords.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for keyword in &keywords {
                    pipe.exists(keys.trend_normalized(keyword));
                }
                let found: Vec<bool> = pipe.query_async(&mut conn).await?;
                let at = Instant::now();
                let found: Vec<String> = keywords
                    .into_iter()
                    .zip(found)
                    .filter_map(|(keyword, found)| found.then_some(keyword))
                    .collect();
                if found.is_empty() {
                    continue;
                }
                looking
                    .lock()
                    .expect("not poisoned")
                    .retain(|k| !found.contains(k));
                let mut noted = noted.lock().expect("not poisoned");
                noted.extend(found.into_iter().map(|keyword| (keyword, at)));
            }
        });
        Self {
            expected,
            seen,
            stop,
            task,
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// What a raw consumer subscribes to.
pub enum Reads {
    /// Every topic of the stream, as the daemon does.
    All,
    /// The probes' topic only, in a group of its own: the control beside the daemon. A
    /// second reader of the whole stream would double the broker's work (0.7 to 0.9 of a
    /// core, and the control's own probes at p50 120 ms).
    Probes,
}

/// A raw consumer on its own thread, noting when each probe arrives.
pub struct RawObserver {
    consumed: SeenAt,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl RawObserver {
    pub fn start(target: &Target, prefix: &str, reads: Reads) -> anyhow::Result<Self> {
        let (group, topics) = match reads {
            Reads::All => (format!("{prefix}-consumer"), topic_names(prefix)),
            Reads::Probes => (
                format!("{prefix}-control"),
                vec![topic_name(prefix, "trend-alerts")],
            ),
        };
        let consumer: BaseConsumer =
            raw_consumer_config(&target.bootstrap, &group, target.fetch_wait_ms).create()?;
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        let consumed: SeenAt = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (noted, stopping) = (Arc::clone(&consumed), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Some(message) = consumer.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let message = message?;
                let at = Instant::now();
                if let Some(Ok(key)) = message.key().map(std::str::from_utf8) {
                    if key.starts_with("probe-") || key == WARM_UP_KEY {
                        noted
                            .lock()
                            .expect("not poisoned")
                            .insert(key.to_owned(), at);
                    }
                }
            }
            Ok(())
        });
        Ok(Self {
            consumed,
            stop,
            thread,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        blocking(move || thread.join().expect("the raw consumer does not panic")).await
    }
}
