//! `run(config, shutdown)`: the whole daemon, as `main` and the tests start it. It
//! installs the metrics recorder, binds the HTTP listener, starts the background task and
//! runs the consume loop; when the loop has drained, the listener and the background task
//! stop too.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::background;
use crate::cache::CacheLayer;
use crate::config::Config;
use crate::daemon;
use crate::http::{self, AppState};
use crate::metrics;
use crate::status::Status;

/// Runs the daemon until `shutdown` is cancelled and the drain is done.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_status(config, shutdown, Arc::default()).await
}

/// [`run`], reporting its progress into `status`.
pub async fn run_with_status(
    config: Config,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let handle = metrics::install();
    metrics::started();
    // Lazy: the daemon starts, and reports itself unready, while Redis is still down.
    let cache = CacheLayer::connect_lazy(&config.redis)
        .await?
        .with_active_user_window(config.cache.active_user_window);
    let listener = TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    status.set_http_addr(addr);
    info!(%addr, "serving /metrics, /healthz, /readyz and /v1");

    // The listener and the background task outlive the drain, so /metrics stays up until
    // the last batch is written.
    let tasks = CancellationToken::new();
    let state = AppState {
        cache: cache.clone(),
        status: Arc::clone(&status),
        config: Arc::new(config.clone()),
    };
    let server = tokio::spawn(http::serve(listener, state, tasks.clone()));
    let background = tokio::spawn(background::run(
        cache.clone(),
        config.clone(),
        Arc::clone(&status),
        handle,
        tasks.clone(),
    ));

    let result = daemon::consume(&config, cache, status, &shutdown).await;

    tasks.cancel();
    if let Ok(Err(e)) = server.await {
        warn!(error = %e, "the HTTP listener failed");
    }
    let _ = background.await;
    metrics::stopped();
    result
}
