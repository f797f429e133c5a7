//! A master behind Redis Sentinel: redis-rs's Sentinel client asks the sentinels which
//! node is the master (and checks that node's role), and a reconnecting
//! `ConnectionManager` talks to it.
//!
//! A command that fails on the connection, or that the node refuses as `READONLY` (a
//! master demoted to a replica), makes the connection ask the sentinels again before the
//! error goes back to the caller, who retries: once they name another node, every later
//! command goes there. Each change of master is counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, TlsMode, Value,
};
use secrecy::ExposeSecret;
use tracing::{info, warn};

use super::error::{CacheError, Result};
use super::tls::certificates;
use crate::config::RedisConfig;

#[derive(Clone)]
pub(crate) struct SentinelConn(Arc<Inner>);

struct Inner {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The master in use, once one was found.
    master: Mutex<Option<Master>>,
    config: ConnectionManagerConfig,
    /// Changes of master seen.
    failovers: AtomicU64,
    db: i64,
}

#[derive(Clone)]
struct Master {
    addr: String,
    conn: ConnectionManager,
}

impl SentinelConn {
    /// The sentinels of `redis.sentinel_nodes`, for the master `redis.sentinel_master`,
    /// with the data nodes' credentials and database of `redis.username`, `redis.password`
    /// and `redis.db`, and the `redis.tls_*` files for `rediss://` sentinels (and then
    /// TLS to the data nodes too). Connects on first use.
    pub(super) fn new(config: &RedisConfig, manager: ConnectionManagerConfig) -> Result<Self> {
        let bad = |e: RedisError| CacheError::Config(format!("redis.sentinel_nodes: {e}"));
        let data = config
            .connection_url()
            .map_err(|e| CacheError::Config(e.to_string()))?;
        let sentinels = config
            .sentinel_nodes
            .iter()
            .map(|node| Ok(node.as_str().into_connection_info()?.addr().clone()))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(bad)?;
        // The data nodes' database and credentials, decoded as for one server's URL.
        let data = data
            .as_str()
            .into_connection_info()
            .map_err(|e| CacheError::Config(e.to_string()))?;
        let data = data.redis_settings();
        let db = data.db();
        let mut builder = SentinelClientBuilder::new(
            sentinels,
            &config.sentinel_master,
            SentinelServerType::Master,
        )
        .map_err(bad)?
        .set_client_to_redis_db(db);
        if let Some(username) = data.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = data.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(username) = &config.sentinel_username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = &config.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password.expose_secret());
        }
        if config.sentinel_tls() {
            builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certificates) = certificates(config)? {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        Ok(Self(Arc::new(Inner {
            sentinel: tokio::sync::Mutex::new(builder.build().map_err(bad)?),
            master: Mutex::new(None),
            config: manager,
            failovers: AtomicU64::new(0),
            db,
        })))
    }

    /// How many times the sentinels named another master.
    pub(crate) fn failovers(&self) -> u64 {
        self.0.failovers.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Master> {
        self.0.master.lock().expect("not poisoned").clone()
    }

    async fn master(&self) -> RedisResult<Master> {
        match self.current() {
            Some(master) => Ok(master),
            None => self.discover().await,
        }
    }

    /// Asks the sentinels for the master, and connects to it unless it is the one in use.
    async fn discover(&self) -> RedisResult<Master> {
        let mut sentinel = self.0.sentinel.lock().await;
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        if let Some(master) = self.current().filter(|m| m.addr == addr) {
            return Ok(master);
        }
        let conn = ConnectionManager::new_with_config(client, self.0.config.clone()).await?;
        let master = Master { addr, conn };
        let before = self
            .0
            .master
            .lock()
            .expect("not poisoned")
            .replace(master.clone());
        match before {
            Some(before) => {
                self.0.failovers.fetch_add(1, Ordering::Relaxed);
                warn!(
                    from = before.addr,
                    to = master.addr,
                    "the sentinels name another Redis master; writing to it"
                );
            }
            None => info!(master = master.addr, "Redis master found through Sentinel"),
        }
        Ok(master)
    }

    /// After a failed command: asks the sentinels again if the failure may be a
    /// failover (the connection lost, or the node now a replica).
    async fn after<T>(&self, result: &RedisResult<T>, replies: impl Fn(&T) -> bool) {
        let suspect = match result {
            Err(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
            }
            Ok(value) => replies(value),
        };
        if suspect {
            // Not found now (the failover still under way): the next command asks again.
            let _ = self.discover().await;
        }
    }
}

/// Whether a reply is a node's refusal as a replica.
fn read_only(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "READONLY")
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut master = self.master().await?;
            let result = master.conn.req_packed_command(cmd).await;
            self.after(&result, read_only).await;
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut master = self.master().await?;
            let result = master
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.after(&result, |replies: &Vec<Value>| {
                replies.iter().any(read_only)
            })
            .await;
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}
