//! `cache_layer._cache_layer`: the native half of the Python package. It exposes
//! cache-layer's own library to Python, so that a Python caller validates, writes and
//! reads through exactly the code the daemon runs: the same decoding and rules, the same
//! key schema, the same Lua scripts and version guards, and every key with its TTL.
//!
//! The boundary is JSON: the Python layer (`python/cache_layer/`) turns the caller's
//! objects into the JSON the pipeline publishes, and turns what comes back into dicts.
//! Every method that talks to Redis returns an asyncio awaitable whose work runs on a
//! tokio runtime (`awaitable`), with the GIL released while it waits. Errors are raised as the
//! package's own exception classes (`cache_layer.errors`), chosen by what the caller can
//! do: bad input (`InvalidInputError`, a `ValueError`), Redis unavailable (retry later),
//! or Redis refusing the command.

mod awaitable;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_layer::cache::{CacheError, CacheLayer};
use cache_layer::config::{Config, RedisConfig};
use cache_layer::models::{decode, Message, MessageKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use awaitable::awaitable;

/// The Python module that holds the exception classes.
const ERRORS: &str = "cache_layer.errors";

/// A cache error as the package's exception: its class by what the caller can do.
fn raise(error: CacheError) -> PyErr {
    let class = match &error {
        CacheError::Unavailable(_) => "CacheUnavailableError",
        CacheError::Rejected(_) | CacheError::Refused(_) => "CacheRefusedError",
        CacheError::ForeignPattern { .. } | CacheError::InvalidValue(_) | CacheError::Config(_) => {
            "InvalidInputError"
        }
    };
    raise_as(class, error.to_string())
}

/// An exception of class `class` of `cache_layer.errors`.
fn raise_as(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import(ERRORS)
            .and_then(|module| module.getattr(class))
            .and_then(|class| class.call1((message.clone(),)))
        {
            Ok(exception) => PyErr::from_value(exception),
            Err(e) => e,
        }
    })
}

/// Decodes and validates what a caller gives, as the daemon decodes a message of `kind`.
fn validated(kind: MessageKind, json: &str) -> PyResult<Message> {
    decode(kind, json.as_bytes()).map_err(|e| raise_as("InvalidInputError", e.to_string()))
}

fn ttl(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn to_json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// A client of the cache. The connection is made on first use and remade after Redis
/// comes back; one multiplexed connection serves every call, concurrent or not.
#[pyclass(frozen, module = "cache_layer._cache_layer")]
struct Client {
    config: RedisConfig,
    /// The TTL of writes that give none, in seconds.
    #[pyo3(get)]
    default_ttl: u64,
    cache: Arc<Mutex<Option<CacheLayer>>>,
}

impl Client {
    /// The connection, made now if there is none.
    async fn cache(
        config: RedisConfig,
        cache: Arc<Mutex<Option<CacheLayer>>>,
    ) -> PyResult<CacheLayer> {
        if let Some(connected) = cache.lock().expect("not poisoned").clone() {
            return Ok(connected);
        }
        let connected = CacheLayer::connect(&config).await.map_err(raise)?;
        *cache.lock().expect("not poisoned") = Some(connected.clone());
        Ok(connected)
    }

    /// Runs `call` on the connection as an awaitable.
    fn run<'py, T, F, Fut>(&self, py: Python<'py>, call: F) -> PyResult<Bound<'py, PyAny>>
    where
        T: for<'a> IntoPyObject<'a> + Send + 'static,
        F: FnOnce(CacheLayer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = PyResult<T>> + Send + 'static,
    {
        let (config, cache) = (self.config.clone(), Arc::clone(&self.cache));
        awaitable(
            py,
            async move { call(Self::cache(config, cache).await?).await },
        )
    }
}

#[pymethods]
impl Client {
    /// A client of the Redis at `host:port`, database `db`.
    #[new]
    #[pyo3(signature = (host, port, db, password, default_ttl, connect_timeout, response_timeout, key_prefix=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: u16,
        db: u32,
        password: Option<String>,
        default_ttl: u64,
        connect_timeout: f64,
        response_timeout: f64,
        key_prefix: String,
    ) -> PyResult<Self> {
        let seconds = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    raise_as(
                        "InvalidInputError",
                        format!("{name} must be a positive number of seconds, got {value}"),
                    )
                })
        };
        if default_ttl == 0 {
            return Err(raise_as(
                "InvalidInputError",
                "default_ttl must be at least one second, got 0".to_owned(),
            ));
        }
        let config = RedisConfig {
            host: Some(host),
            port: Some(port),
            db: Some(db),
            password: password.map(Into::into),
            connect_timeout: seconds("socket_connect_timeout", connect_timeout)?,
            response_timeout: seconds("socket_timeout", response_timeout)?,
            key_prefix,
            ..RedisConfig::default()
        };
        Ok(Self {
            config,
            default_ttl,
            cache: Arc::default(),
        })
    }

    /// A client as cache-layer's TOML file at `path` configures the daemon (its `redis`
    /// and `cache` sections, with the `CACHE_LAYER__` environment overrides): Cluster,
    /// Sentinel, TLS and ACL users included.
    #[staticmethod]
    fn from_config(path: std::path::PathBuf) -> PyResult<Self> {
        let config =
            Config::load(&path, true).map_err(|e| raise_as("InvalidInputError", e.to_string()))?;
        Ok(Self {
            default_ttl: config.cache.default_ttl.as_secs(),
            config: config.redis,
            cache: Arc::default(),
        })
    }

    /// Whether Redis answers a PING; never raises.
    fn health_check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (config, cache) = (self.config.clone(), Arc::clone(&self.cache));
        awaitable(py, async move {
            Ok(match Self::cache(config, cache).await {
                Ok(cache) => cache.health_check().await.is_ok(),
                Err(_) => false,
            })
        })
    }

    /// Caches trend alerts, a JSON array as upstream publishes them.
    fn cache_current_trends<'py>(
        &self,
        py: Python<'py>,
        alerts: &str,
        ttl_secs: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Message::Trends(alerts) = validated(MessageKind::Trends, alerts)? else {
            unreachable!("decoded as trends");
        };
        self.run(py, move |cache| async move {
            cache
                .cache_current_trends(&alerts, ttl(ttl_secs))
                .await
                .map_err(raise)
        })
    }

    /// The ranking, as a JSON array of trend alerts in rank order.
    fn get_trending_keywords<'py>(
        &self,
        py: Python<'py>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            let entries = cache.get_trending_keywords(limit).await.map_err(raise)?;
            to_json(&entries.iter().map(|e| &e.alert).collect::<Vec<_>>())
        })
    }

    /// One keyword's trend alert as JSON, or None.
    fn get_trend_details<'py>(
        &self,
        py: Python<'py>,
        keyword: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            let alert = cache.get_trend_details(&keyword).await.map_err(raise)?;
            alert.as_ref().map(to_json).transpose()
        })
    }

    /// Caches a user-metrics snapshot, a JSON object as upstream publishes it.
    fn cache_user_metrics<'py>(
        &self,
        py: Python<'py>,
        metrics: &str,
        ttl_secs: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Message::UserMetrics(mut metrics) = validated(MessageKind::UserMetrics, metrics)?
        else {
            unreachable!("decoded as user metrics");
        };
        let Some(metrics) = metrics.pop().filter(|_| metrics.is_empty()) else {
            return Err(raise_as(
                "InvalidInputError",
                "stats must be one user-metrics object".to_owned(),
            ));
        };
        self.run(py, move |cache| async move {
            cache
                .cache_user_metrics(&metrics, ttl(ttl_secs))
                .await
                .map_err(raise)
        })
    }

    /// The last user-metrics snapshot as JSON, or None.
    fn get_user_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            let metrics = cache.get_user_metrics().await.map_err(raise)?;
            metrics.as_ref().map(to_json).transpose()
        })
    }

    /// Caches window counts, a JSON array as upstream publishes them, under `window_id`.
    fn cache_windowed_data<'py>(
        &self,
        py: Python<'py>,
        counts: &str,
        window_id: String,
        ttl_secs: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Message::Windows(counts) = validated(MessageKind::Windows, counts)? else {
            unreachable!("decoded as window counts");
        };
        self.run(py, move |cache| async move {
            cache
                .cache_windowed_data(&counts, &window_id, ttl(ttl_secs))
                .await
                .map_err(raise)
        })
    }

    /// A window's counts as a JSON array of entries; an empty array when none.
    fn get_windowed_data<'py>(
        &self,
        py: Python<'py>,
        window_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            let entries = cache.get_windowed_data(&window_id).await.map_err(raise)?;
            to_json(&entries.unwrap_or_default())
        })
    }

    /// The cache's statistics as a JSON object.
    fn get_cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            to_json(&cache.get_cache_stats().await.map_err(raise)?)
        })
    }

    /// Removes the ranking's members whose details have expired; returns how many.
    fn invalidate_expired_trends<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            cache.invalidate_expired_trends().await.map_err(raise)
        })
    }

    /// Deletes the keys matching a pattern inside the cache's namespaces; returns how many.
    fn clear_cache_pattern<'py>(
        &self,
        py: Python<'py>,
        pattern: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, move |cache| async move {
            cache.clear_cache_pattern(&pattern).await.map_err(raise)
        })
    }

    /// Drops the connection; a later call makes a new one.
    fn close(&self) {
        self.cache.lock().expect("not poisoned").take();
    }
}

#[pymodule]
fn _cache_layer(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Client>()?;
    module.add_function(wrap_pyfunction!(awaitable::shutdown, module)?)?;
    Ok(())
}
