//! The background task: cache statistics every `stats.interval_secs` and sweeps every
//! `sweep.interval_secs`, both exposed as Prometheus metrics.
//!
//! Each round is a function of its own ([`stats_once`], [`sweep_once`]) that tests call
//! directly. A Redis outage makes a round fail with a WARN and the loop carries on; only
//! shutdown ends it. With several instances on one Redis, a lock (SET NX PX with a random
//! token, renewed or released only by its owner) lets one of them sweep per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::cache::{lock_token, CacheError, CacheLayer, CacheStats, ServerInfo, SweepReport};
use crate::config::{Config, Settings};
use crate::events;
use crate::status::Status;

/// The name of the sweep lock (`{p}locks:sweep`).
pub const SWEEP_LOCK: &str = "sweep";

/// How often histogram buffers are folded, so that memory stays flat between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What one sweep round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SweepOutcome {
    Swept(SweepReport),
    /// Another instance holds the lock for this interval.
    Skipped,
}

/// Gathers the statistics, updates the gauges and logs the summary line.
pub(crate) async fn stats_once(cache: &CacheLayer) -> Result<CacheStats, CacheError> {
    events::redis_failovers(cache.failovers());
    match cache.get_cache_stats().await {
        Ok(stats) => {
            events::cache_stats(&stats);
            Ok(stats)
        }
        Err(e) => {
            events::stats_failed(&e);
            Err(e)
        }
    }
}

/// Exports Redis's memory policy, and warns at the first statistics and whenever the
/// policy changes if it evicts keys regardless of their TTL.
fn memory_policy(known: &mut Option<String>, server: &ServerInfo) {
    let policy = server.maxmemory_policy.as_str();
    if policy.is_empty() || known.as_deref() == Some(policy) {
        return;
    }
    events::memory_policy(known.as_deref(), server);
    *known = Some(policy.to_owned());
}

/// Sweeps if this owner gets the lock for `interval`, and reports what was removed.
pub async fn sweep_once(
    cache: &CacheLayer,
    active_user_window: Duration,
    interval: Duration,
    token: &str,
) -> Result<SweepOutcome, CacheError> {
    let result: Result<SweepOutcome, CacheError> = async {
        if cache.try_lock(SWEEP_LOCK, interval, token).await?.is_none() {
            return Ok(SweepOutcome::Skipped);
        }
        let started = Instant::now();
        let report = cache.sweep(active_user_window).await?;
        events::swept(&report, started.elapsed());
        Ok(SweepOutcome::Swept(report))
    }
    .await;
    match &result {
        Ok(SweepOutcome::Swept(_)) => {}
        Ok(SweepOutcome::Skipped) => events::sweep_skipped(),
        Err(e) => events::sweep_failed(e),
    }
    result
}

/// Runs the statistics and sweep loops, and the metrics upkeep, until `shutdown`.
/// The intervals follow a reload (`settings`) from their next round.
pub async fn run(
    cache: CacheLayer,
    settings: Settings,
    status: Arc<Status>,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let config = settings.borrow().clone();
    let stats = async {
        // The first round at once, so that the stats gauges are in the first scrape.
        let mut policy = None;
        let mut settings = settings.clone();
        let mut tick = tokio::time::interval(config.stats.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(config) = reloaded(&mut settings) => {
                    if config.stats.interval != tick.period() {
                        tick = ticker(config.stats.interval);
                    }
                }
                _ = tick.tick() => {
                    let stats = stats_once(&cache).await;
                    if let Ok(stats) = &stats {
                        memory_policy(&mut policy, &stats.server);
                    }
                    let ok = stats.is_ok();
                    events::redis_state(&status, ok);
                    events::ready(ok && status.readiness(config.batch.unready_after).ok());
                }
            }
        }
    };
    let sweeps = async {
        let token = lock_token();
        let mut settings = settings.clone();
        let mut tick = ticker(config.sweep.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(config) = reloaded(&mut settings) => {
                    if config.sweep.interval != tick.period() {
                        tick = ticker(config.sweep.interval);
                    }
                }
                _ = tick.tick() => {
                    let _ = sweep_once(&cache, config.cache.active_user_window, tick.period(), &token).await;
                }
            }
        }
        // Let another instance take over at once.
        if let Ok(Some(lock)) = cache
            .try_lock(SWEEP_LOCK, Duration::from_millis(1), &token)
            .await
        {
            let _ = cache.unlock(&lock).await;
        }
    };
    let upkeep = async {
        let mut tick = ticker(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    };
    tokio::join!(stats, sweeps, upkeep);
}

/// The configuration a reload sent; pending forever once no reload can come.
async fn reloaded(settings: &mut Settings) -> Option<Arc<Config>> {
    match settings.changed().await {
        Ok(()) => Some(settings.borrow_and_update().clone()),
        Err(_) => std::future::pending().await,
    }
}

/// An interval whose first tick comes after one period, and which does not burst after a
/// slow round.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}
