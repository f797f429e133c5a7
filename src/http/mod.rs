//! The HTTP listeners. The operator's, on `http.listen`: `/metrics`, `/healthz` and
//! `/readyz`. The API's, on `http.api_listen`: the JSON read API and the admin endpoints.
//! Apart, so that no crowd of readers, and no slow client, keeps the orchestrator's probes
//! and Prometheus's scrapes from an answer.
//!
//! Every handler answers: a bad parameter is a 400 with a message, an absent entry a 404,
//! a Redis outage a 503, all as JSON `{"error": ...}`. Nothing here panics on input. The
//! admin endpoints need `Authorization: Bearer <http.admin_token>`, compared in constant
//! time; with no token configured they are disabled (403), never open.
//!
//! What bounds a reader's cost: `http.max_connections` connections, each closed when it
//! does not send a request head within `http.header_read_timeout_ms`;
//! `http.max_concurrent_requests` requests served at once, the rest shed with 503;
//! answers of at most `http.max_response_bytes`; and `/v1/trends` from a shared snapshot.

mod api;
mod error;
mod server;
mod snapshot;
mod state;

pub use state::AppState;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::body::HttpBody;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::BoxError;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{HttpConfig, Settings};
use crate::events;
use crate::metrics;
use error::{too_large, ApiError};
use server::Limits;

/// How long readiness waits for Redis to answer PING.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections open at once on the operator listener: Prometheus and the probes need a
/// few; the header-read timeout frees what a stray client holds.
const OPERATOR_MAX_CONNECTIONS: usize = 64;

/// The two bound listeners.
pub struct Listeners {
    pub operator: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    /// Binds `http.listen` and `http.api_listen`; an error names the key.
    pub async fn bind(config: &HttpConfig) -> anyhow::Result<Self> {
        let bind = |key: &'static str, addr: &str| {
            let addr = addr.to_owned();
            async move {
                TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen on {key} = {addr}"))
            }
        };
        Ok(Self {
            operator: bind("http.listen", &config.listen).await?,
            api: bind("http.api_listen", &config.api_listen).await?,
        })
    }

    /// The bound addresses: the operator's and the API's.
    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.operator.local_addr()?, self.api.local_addr()?))
    }
}

/// Serves both listeners until `shutdown` is cancelled and their connections have closed.
/// A reload (`settings`) rebuilds both routers with the new configuration: the admin
/// token and the request limits apply from the next request.
pub async fn serve(
    listeners: Listeners,
    state: AppState,
    mut settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let http = &state.config.http;
    let operator = Limits {
        name: "operator",
        max_connections: OPERATOR_MAX_CONNECTIONS,
        header_read_timeout: http.header_read_timeout,
    };
    let api = Limits {
        name: "api",
        max_connections: http.max_connections,
        header_read_timeout: http.header_read_timeout,
    };
    let (operator_routes, operator_router_rx) = watch::channel(operator_router(state.clone()));
    let (api_routes, api_router_rx) = watch::channel(api_router(state.clone()));
    let rebuild = async {
        while settings.changed().await.is_ok() {
            let state = AppState {
                config: settings.borrow_and_update().clone(),
                ..state.clone()
            };
            let _ = operator_routes.send(operator_router(state.clone()));
            let _ = api_routes.send(api_router(state));
        }
        // No reload can come any more: serve on.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        served = async {
            tokio::try_join!(
                server::serve(listeners.operator, operator_router_rx, operator, shutdown.clone()),
                server::serve(listeners.api, api_router_rx, api, shutdown),
            )
        } => served.map(drop),
        () = rebuild => Ok(()),
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub(crate) fn operator_router(state: AppState) -> Router {
    let timeout = state.config.http.request_timeout;
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_a_route)
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
}

/// The read API and the admin endpoints. Every request is bounded: a body over
/// `http.max_body_bytes` is refused (413), a request over `http.request_timeout_ms` is
/// answered 408 and dropped, requests past `http.max_concurrent_requests` are shed (503)
/// and an answer over `http.max_response_bytes` is refused (400).
pub(crate) fn api_router(state: AppState) -> Router {
    let limits = &state.config.http;
    let (timeout, max_body) = (limits.request_timeout, limits.max_body_bytes);
    let max_response = limits.max_response_bytes;
    // One semaphore for every route (axum layers each route on its own).
    let concurrency = GlobalConcurrencyLimitLayer::new(limits.max_concurrent_requests);
    Router::new()
        .route("/v1/trends", get(api::trends))
        .route("/v1/trends/{keyword}", get(api::trend))
        .route("/v1/users/metrics", get(api::user_metrics))
        .route("/v1/users/active", get(api::active_users))
        .route("/v1/windows", get(api::windows))
        .route("/v1/windows/{window_id}", get(api::window))
        .route("/v1/stats", get(api::stats))
        .route("/v1/admin/sweep", post(api::admin_sweep))
        .route("/v1/admin/clear", post(api::admin_clear))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .layer(LoadShedLayer::new())
                .layer(concurrency)
                .layer(axum::middleware::map_response_with_state(
                    max_response,
                    capped,
                )),
        )
        .fallback(not_a_route)
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
}

/// An answer over `http.max_response_bytes` is refused: it would hold that much memory
/// for every reader who asked at once.
async fn capped(State(max): State<usize>, response: Response) -> Response {
    match response.body().size_hint().exact() {
        Some(size) if size > max as u64 => too_large(max).into_response(),
        _ => response,
    }
}

/// A request over `http.max_concurrent_requests`: 503, to be tried again in a second.
async fn shed(error: BoxError) -> Response {
    if error.is::<Overloaded>() {
        events::http_shed();
        let busy = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests at once; retry".into(),
        );
        ([(header::RETRY_AFTER, "1")], busy).into_response()
    } else {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
    }
}

async fn not_a_route() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

/// Every error answer is the documented JSON, `{"error": "..."}`, whoever made it: the
/// handlers, axum's extractors (a path that is not UTF-8), the method check, the body
/// limit (413) and the timeout (408) answer in plain text or with no body otherwise.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4_096).await.unwrap_or_default();
    let message = match std::str::from_utf8(&text).map(str::trim) {
        Ok(text) if !text.is_empty() => text.to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    (parts, Json(json!({ "error": message }))).into_response()
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let redis = match tokio::time::timeout(READY_PING_TIMEOUT, state.cache.health_check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no PONG within {READY_PING_TIMEOUT:?}")),
    };
    // A batch that keeps failing (Redis full or read-only, the dead-letter topic down)
    // makes the instance unready once it has failed for longer than the threshold, even
    // while Redis answers PING.
    let readiness = state.status.readiness(state.config.batch.unready_after);
    let ready = redis.is_ok() && readiness.ok();
    events::ready(ready);
    let body = json!({
        "ready": ready,
        "checks": {
            "redis": match &redis {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "ok": false, "error": e }),
            },
            "kafka": {
                "ok": readiness.kafka_ok(),
                "brokers": state.config.kafka.bootstrap_servers,
                "error": readiness.kafka_problem,
                "missing_topics": readiness.missing_topics,
            },
            "writes": match &readiness.failing_writes {
                None => json!({ "ok": true }),
                Some((since, reason)) => json!({
                    "ok": false,
                    "failing_for_ms": since.as_millis() as u64,
                    "error": reason,
                }),
            },
            // Replaying partitions to rebuild a cache Redis lost: per partition, the
            // replay's first offset, its target and where it stands.
            "rebuild": {
                "ok": readiness.rebuilding.is_empty(),
                "rebuilding": !readiness.rebuilding.is_empty(),
                "partitions": readiness.rebuilding,
            },
            // Redis at or above redis.pause_above_memory_ratio: consuming is paused.
            "memory": match &readiness.memory_pressure {
                None => json!({ "ok": true }),
                Some(pressure) => json!({
                    "ok": false,
                    "error": format!(
                        "Redis's used_memory is {:.1}% of its maxmemory, at or above redis.pause_above_memory_ratio ({}): consuming paused",
                        pressure.memory.ratio() * 100.0,
                        pressure.pause_above
                    ),
                    "used_memory": pressure.memory.used_memory,
                    "maxmemory": pressure.memory.maxmemory,
                }),
            },
        }
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
