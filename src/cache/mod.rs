//! `CacheLayer`: the async library that writes and reads the Redis schema.
//!
//! Everything the previous Python `CacheLayer` offered lives here. Each write call builds
//! exactly one pipeline; [`WriteSet`] is the step that turns messages into pipeline
//! commands, so that the daemon can put thousands of messages from many calls into one
//! round trip with [`CacheLayer::write`].

mod conn;
mod error;
mod loss;
mod reads;
mod scripts;
mod sentinel;
mod stats;
mod sweep;
mod tls;
mod writes;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use conn::Conn;
use redis::{ErrorKind, ServerErrorKind};
use sentinel::SentinelConn;
use tls::{certificates, client};

pub use error::{CacheError, Result};

pub(crate) use error::{Refusal, REDIS_ERROR_KINDS};
pub(crate) use loss::Marker;
pub(crate) use reads::TrendEntry;
pub(crate) use stats::{CacheStats, MemoryUse, ServerInfo};
pub use sweep::{lock_token, SweepReport};
pub(crate) use writes::touched_keys;
pub use writes::WriteSet;

use crate::config::{RedisConfig, Ttls};
use crate::models::{TrendAlert, UserMetrics, WindowedKeywordCount};
use crate::schema::Keys;

/// The default of `cache.active_user_window`.
const DEFAULT_ACTIVE_USER_WINDOW: Duration = Duration::from_secs(900);

fn skew_ms(skew: Duration) -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(skew.as_millis() as u64))
}

/// The default of `batch.max_future_skew_secs`.
const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(300);

/// What a [`CacheLayer::write`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Commands sent.
    pub commands: usize,
    /// The writes Redis refused for their data; every other command was applied.
    pub refused: Vec<Refusal>,
}

/// A handle on the cache. Cheap to clone: clones share one reconnecting multiplexed
/// connection, which re-establishes itself after Redis comes back.
#[derive(Clone)]
pub struct CacheLayer {
    conn: Conn,
    keys: Keys,
    /// Users last seen longer ago than this are not returned as active.
    active_user_window: Duration,
    /// How far ahead of this clock an event time may be (`batch.max_future_skew_secs`),
    /// in milliseconds: writes replace, and reads skip, a stored value further ahead.
    /// Shared by every clone, so that a reload reaches them all.
    max_future_skew_ms: Arc<AtomicU64>,
    /// `redis.wait_replicas` and `redis.wait_timeout_ms`, when replicas must confirm.
    wait: Option<(u32, Duration)>,
}

impl CacheLayer {
    /// Connects, failing if Redis is not reachable within the connect timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let cache = Self::connect_lazy(config).await?;
        cache.load_scripts().await?;
        Ok(cache)
    }

    /// A handle that connects on first use, so that a daemon can start (and report
    /// itself unready) while Redis is still down. Fails only on a bad configuration, or,
    /// with `redis.cluster`, when no seed node answers (the cluster client needs the
    /// slot map to start).
    pub(crate) async fn connect_lazy(config: &RedisConfig) -> Result<Self> {
        let url = config
            .connection_url()
            .map_err(|e| CacheError::Config(e.to_string()))?;
        if config.cluster {
            let conn = connect_cluster(config).await?;
            return Ok(Self {
                conn: Conn::Cluster(conn),
                keys: Keys::new(config.key_prefix.clone()),
                active_user_window: DEFAULT_ACTIVE_USER_WINDOW,
                max_future_skew_ms: skew_ms(DEFAULT_MAX_FUTURE_SKEW),
                wait: wait(config),
            });
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = if config.sentinel() {
            Conn::Sentinel(SentinelConn::new(config, manager_config)?)
        } else {
            let client = client(config, url.as_str())?;
            Conn::Single(ConnectionManager::new_lazy_with_config(
                client,
                manager_config,
            )?)
        };
        Ok(Self {
            conn,
            keys: Keys::new(config.key_prefix.clone()),
            active_user_window: DEFAULT_ACTIVE_USER_WINDOW,
            max_future_skew_ms: skew_ms(DEFAULT_MAX_FUTURE_SKEW),
            wait: wait(config),
        })
    }

    /// Sets how recently a user must have been seen to count as active (`cache.active_user_window`).
    pub fn with_active_user_window(mut self, window: Duration) -> Self {
        self.active_user_window = window;
        self
    }

    /// Sets how far ahead of the clock a stored event time is still believed
    /// (`batch.max_future_skew_secs`).
    /// This handle, and the clones made of it from now on, have a skew of their own.
    pub fn with_max_future_skew(mut self, skew: Duration) -> Self {
        self.max_future_skew_ms = skew_ms(skew);
        self
    }

    /// Changes `batch.max_future_skew_secs` for this handle and every clone that shares
    /// its skew (made since the last [`CacheLayer::with_max_future_skew`]).
    pub(crate) fn set_max_future_skew(&self, skew: Duration) {
        let ms = u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
        self.max_future_skew_ms.store(ms, Ordering::Relaxed);
    }

    /// The latest event time believed now: the clock plus `batch.max_future_skew_secs`.
    pub(crate) fn not_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let skew = Duration::from_millis(self.max_future_skew_ms.load(Ordering::Relaxed));
        chrono::TimeDelta::from_std(skew)
            .ok()
            .and_then(|skew| now.checked_add_signed(skew))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// PING; Ok when Redis answers.
    pub async fn health_check(&self) -> Result<()> {
        let reply: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CacheError::InvalidValue(format!("PING answered {reply:?}")))
        }
    }

    /// Writes a whole set as one pipeline, and reports the writes that Redis refused for
    /// their data (a key of another type at one of the schema's keys, say): every other
    /// write was applied, and sending the refused ones again cannot change their fate.
    /// An error means that nothing may be taken as written; the same call may succeed
    /// once Redis's state has changed.
    ///
    /// When Redis lost its script cache (a restart), the scripts are loaded again and the
    /// pipeline is sent once more: every write in it is idempotent, so the repeat is
    /// harmless.
    pub async fn write(
        &self,
        set: &WriteSet,
        ttls: &Ttls,
        now: DateTime<Utc>,
    ) -> Result<WriteReport> {
        if set.is_empty() {
            return Ok(WriteReport::default());
        }
        let mut writes = self.conn.writes();
        let commands = set.append_to(&mut writes, &self.keys, ttls, now, self.not_after(now));
        if let Some((replicas, timeout)) = self.wait {
            writes.wait_for(replicas, timeout);
        }
        let replicas = self.wait.map(|(replicas, _)| replicas);
        let refused = match self.conn.exec_writes(&writes, replicas).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_scripts().await?;
                self.conn.exec_writes(&writes, replicas).await?
            }
            other => other?,
        };
        Ok(WriteReport { commands, refused })
    }

    /// [`CacheLayer::write`] for the library's own calls, where a refused write is an
    /// error.
    async fn write_all(&self, set: &WriteSet, ttls: &Ttls, now: DateTime<Utc>) -> Result<()> {
        let report = self.write(set, ttls, now).await?;
        if report.refused.is_empty() {
            Ok(())
        } else {
            Err(CacheError::Refused(report.refused))
        }
    }

    /// Loads every script into the script cache of every master.
    pub(crate) async fn load_scripts(&self) -> Result<()> {
        for node in self.conn.masters().await? {
            for source in scripts::sources() {
                let _: String = self
                    .conn
                    .on_node(&node, redis::cmd("SCRIPT").arg("LOAD").arg(source))
                    .await?;
            }
        }
        Ok(())
    }

    /// Caches trend alerts: details, the `trends:current` ranking and `last_update`.
    pub async fn cache_current_trends(&self, alerts: &[TrendAlert], ttl: Duration) -> Result<()> {
        let mut set = WriteSet::new();
        alerts.iter().cloned().for_each(|a| set.add_trend(a));
        self.write_all(&set, &same_ttls(ttl)?, Utc::now()).await
    }

    /// Caches a user-metrics snapshot and marks its users active.
    pub async fn cache_user_metrics(&self, metrics: &UserMetrics, ttl: Duration) -> Result<()> {
        let mut set = WriteSet::new();
        let now = Utc::now();
        set.add_user_metrics(metrics.clone(), now);
        self.write_all(&set, &same_ttls(ttl)?, now).await
    }

    /// Caches per-window keyword counts under `window_id`, whatever their own ids say.
    pub async fn cache_windowed_data(
        &self,
        counts: &[WindowedKeywordCount],
        window_id: &str,
        ttl: Duration,
    ) -> Result<()> {
        crate::models::check_window_id(window_id)
            .map_err(|(_, detail)| CacheError::InvalidValue(detail))?;
        let mut set = WriteSet::new();
        for count in counts {
            let mut count = count.clone();
            count.window_id = Some(window_id.to_owned());
            count.normalized_keyword = crate::models::normalize_keyword(&count.keyword);
            set.add_window_count(count);
        }
        self.write_all(&set, &same_ttls(ttl)?, Utc::now()).await
    }

    /// How many times the sentinels named another master; 0 without Sentinel.
    pub(crate) fn failovers(&self) -> u64 {
        match &self.conn {
            Conn::Sentinel(conn) => conn.failovers(),
            _ => 0,
        }
    }
}

fn wait(config: &RedisConfig) -> Option<(u32, Duration)> {
    (config.wait_replicas > 0).then_some((config.wait_replicas, config.wait_timeout))
}

/// Connects to a cluster through its seed nodes (`redis.nodes`, or the URL alone), with
/// the `redis.tls_*` certificates when they are set.
async fn connect_cluster(config: &RedisConfig) -> Result<ClusterConnection> {
    let url = config
        .connection_url()
        .map_err(|e| CacheError::Config(e.to_string()))?;
    let seeds: Vec<String> = if config.nodes.is_empty() {
        vec![url.to_string()]
    } else {
        config.nodes.clone()
    };
    let mut builder = ClusterClient::builder(seeds)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout);
    if let Some(username) = Some(url.username()).filter(|u| !u.is_empty()) {
        builder = builder.username(username);
    }
    if let Some(password) = url.password() {
        builder = builder.password(password);
    }
    if let Some(certificates) = certificates(config)? {
        builder = builder.certs(certificates);
    }
    let client = builder
        .build()
        .map_err(|e| CacheError::Config(e.to_string()))?;
    Ok(client.get_async_connection().await?)
}

/// One TTL for every category, refusing what Redis would refuse (`EX 0`) with a clear error.
fn same_ttls(ttl: Duration) -> Result<Ttls> {
    if ttl.as_secs() == 0 {
        return Err(CacheError::InvalidValue(format!(
            "TTL must be at least one second, got {ttl:?}"
        )));
    }
    Ok(Ttls::uniform(ttl))
}
