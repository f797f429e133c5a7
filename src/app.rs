//! `run(config, shutdown)`: the whole daemon, as `main` and the tests start it. It
//! installs the metrics recorder, binds the HTTP listener, starts the background task and
//! runs the consume loop; when the loop has drained, the listener and the background task
//! stop too. [`drain_on_signals`] turns SIGTERM and SIGINT into that shutdown, and
//! [`run_reloading`] makes SIGHUP reload the configuration: what can change in place goes
//! to the pipeline, the HTTP listeners and the background task through one
//! `watch` channel (`config::Settings`), each taking it for its next batch, request or round.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::background;
use crate::cache::CacheLayer;
use crate::config::{Config, ConfigError, Settings};
use crate::events;
use crate::http::{self, AppState, Listeners};
use crate::metrics;
use crate::pipeline;
use crate::status::Status;

/// Loads the configuration again, from where it was loaded at start-up.
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Runs the daemon until `shutdown` is cancelled and the drain is done.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_status(config, shutdown, Arc::default()).await
}

/// [`run`], reloading the configuration with `load` at every SIGHUP.
pub async fn run_reloading(
    config: Config,
    shutdown: CancellationToken,
    load: Loader,
) -> anyhow::Result<()> {
    let (settings, updates) = watch::channel(Arc::new(config.clone()));
    let mut hangups = signal(SignalKind::hangup())?;
    let reloads = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reload(&settings, &load);
        }
    });
    let result = run_settings(config, shutdown, Arc::default(), updates).await;
    reloads.abort();
    result
}

/// One reload: a configuration that does not load or validate changes nothing; of a
/// valid one, what can change in place is applied, and each key that needs a restart is
/// named and kept as it runs.
fn reload(settings: &watch::Sender<Arc<Config>>, load: &Loader) {
    let new = match load() {
        Ok(new) => new,
        Err(e) => {
            events::config_reloaded(false);
            return error!("configuration not reloaded, nothing changed: {e}");
        }
    };
    let current = settings.borrow().clone();
    let reload = current.reload(&new);
    if !reload.need_restart.is_empty() {
        warn!(
            keys = reload.need_restart.join(", "),
            "configuration reloaded without these keys, which take a restart: they keep their running values"
        );
    }
    crate::telemetry::reload(&reload.config.log);
    events::config_reloaded(true);
    info!(
        applied = reload.applied.join(", "),
        "configuration reloaded; the changes apply from the next batch, request and round"
    );
    settings.send_replace(Arc::new(reload.config));
}

/// [`run`], reporting its progress into `status`.
pub async fn run_with_status(
    config: Config,
    shutdown: CancellationToken,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    let (_settings, updates) = watch::channel(Arc::new(config.clone()));
    run_settings(config, shutdown, status, updates).await
}

async fn run_settings(
    config: Config,
    shutdown: CancellationToken,
    status: Arc<Status>,
    settings: Settings,
) -> anyhow::Result<()> {
    let handle = metrics::install();
    events::started();
    metrics::zeroed(&[
        &config.topics.trends,
        &config.topics.user_metrics,
        &config.topics.windows,
    ]);
    // Lazy: the daemon starts, and reports itself unready, while Redis is still down.
    let cache = CacheLayer::connect_lazy(&config.redis)
        .await?
        .with_active_user_window(config.cache.active_user_window)
        .with_max_future_skew(config.batch.max_future_skew);
    let listeners = Listeners::bind(&config.http).await?;
    let (operator, api) = listeners.addrs()?;
    status.set_http_addrs(operator, api);
    info!(%operator, "serving /metrics, /healthz and /readyz");
    info!(%api, "serving the read API, /v1");

    // The listener and the background task outlive the drain, so /metrics stays up until
    // the last batch is written.
    let tasks = CancellationToken::new();
    let state = AppState::new(cache.clone(), Arc::clone(&status), Arc::new(config.clone()));
    let server = tokio::spawn(http::serve(
        listeners,
        state,
        settings.clone(),
        tasks.clone(),
    ));
    let background = tokio::spawn(background::run(
        cache.clone(),
        settings.clone(),
        Arc::clone(&status),
        handle,
        tasks.clone(),
    ));

    let result = pipeline::run(&config, cache, status, settings, &shutdown).await;

    // The listener and the background task stop within what the drain left of
    // kafka.shutdown_timeout_ms; a Redis call that hangs does not hold the exit.
    tasks.cancel();
    let deadline = match &result {
        Ok(deadline) => *deadline,
        Err(_) => tokio::time::Instant::now() + config.kafka.shutdown_timeout,
    };
    let aborts = [server.abort_handle(), background.abort_handle()];
    let stopped = tokio::time::timeout_at(deadline, async {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the HTTP listener failed"),
            Err(e) => log_task_failure("the HTTP listener", &e),
        }
        if let Err(e) = background.await {
            log_task_failure("the background task", &e);
        }
    })
    .await;
    if stopped.is_err() {
        aborts.iter().for_each(AbortHandle::abort);
        warn!("the listener and the background task did not stop in time; stopped them");
    }
    events::stopped();
    result.map(drop)
}

fn log_task_failure(task: &str, e: &JoinError) {
    if e.is_panic() {
        error!(error = %e, "{task} panicked; it was stopped");
    } else {
        warn!(error = %e, "{task} was cancelled");
    }
}

/// Cancels `shutdown` at the first SIGTERM or SIGINT, which starts a drain; a second
/// signal exits the process at once. The only place that reads OS signals.
pub fn drain_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "draining; a second signal exits at once"),
            _ = int.recv() => info!(signal = "SIGINT", "draining; a second signal exits at once"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        error!("second signal: exiting without draining; unwritten messages are read again after a restart");
        std::process::exit(130);
    });
    Ok(())
}

/// Raises the soft limit on open files to the hard one, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do: a process that serves many connections should not run out
/// of files at the conservative soft default (often 1,024). Returns the limit before and
/// the limit now.
pub fn raise_open_files_limit() -> nix::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}
