//! The HTTP listener: `/metrics`, `/healthz`, `/readyz`, the JSON read API and the admin
//! endpoints, all on `http.listen`.
//!
//! Every handler answers: a bad parameter is a 400 with a message, an absent entry a 404,
//! a Redis outage a 503, all as JSON `{"error": ...}`. Nothing here panics on input. The
//! admin endpoints need `Authorization: Bearer <http.admin_token>`, compared in constant
//! time; with no token configured they are disabled (403), never open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::BoxError;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::background::{sweep_once, SweepOutcome};
use crate::cache::{lock_token, CacheError, CacheLayer};
use crate::config::Config;
use crate::metrics;
use crate::models::MAX_KEYWORD_BYTES;
use crate::status::Status;

/// The largest `limit` a list endpoint accepts.
pub const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 10;
/// How long readiness waits for Redis to answer PING.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub cache: CacheLayer,
    pub status: Arc<Status>,
    pub config: Arc<Config>,
}

/// The router, for the server and for tests. Every request is bounded: a body over
/// `http.max_body_bytes` is refused (413) and a request over `http.request_timeout_ms`
/// is answered 408 and dropped.
pub fn router(state: AppState) -> Router {
    let limits = &state.config.http;
    let (timeout, max_body) = (limits.request_timeout, limits.max_body_bytes);
    // The operator endpoints stay outside the limit: a crowd of readers never makes the
    // instance look dead or unready to its orchestrator. The limit is one semaphore for
    // every /v1 route (axum layers each route on its own).
    let operator = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    Router::new()
        .route("/v1/trends", get(trends))
        .route("/v1/trends/{keyword}", get(trend))
        .route("/v1/users/metrics", get(user_metrics))
        .route("/v1/users/active", get(active_users))
        .route("/v1/windows", get(windows))
        .route("/v1/windows/{window_id}", get(window))
        .route("/v1/stats", get(stats))
        .route("/v1/admin/sweep", post(admin_sweep))
        .route("/v1/admin/clear", post(admin_clear))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(shed))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrent_requests,
                )),
        )
        .merge(operator)
        .fallback(not_a_route)
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(json_errors))
}

/// A request over `http.max_concurrent_requests`: 503, to be tried again in a second.
async fn shed(error: BoxError) -> Response {
    if error.is::<Overloaded>() {
        metrics::http_shed();
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

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// An error answer: a status and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::ForeignPattern { .. } | CacheError::Config(_) => {
                ApiError(StatusCode::BAD_REQUEST, e.to_string())
            }
            CacheError::Unavailable(_) => {
                metrics::redis_error(e.kind_label());
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            CacheError::Rejected(_) | CacheError::Refused(_) | CacheError::InvalidValue(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} is not in the cache"))
}

/// `?limit=N`, 1..=MAX_LIMIT, default DEFAULT_LIMIT.
fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad_request(format!(
                "limit must be an integer in 1..={MAX_LIMIT}, got {text:?}"
            ))),
        },
    }
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
    metrics::ready(ready);
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
        }
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn trends(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl Serialize> {
    Ok(Json(
        state.cache.get_trending_keywords(limit(&params)?).await?,
    ))
}

/// A keyword from a path: bounded and free of control characters (no CR/LF tricks).
fn path_keyword(keyword: &str) -> Result<&str, ApiError> {
    if keyword.trim().is_empty()
        || keyword.len() > MAX_KEYWORD_BYTES
        || keyword.chars().any(char::is_control)
    {
        return Err(bad_request(format!(
            "keyword must be 1..={MAX_KEYWORD_BYTES} bytes without control characters"
        )));
    }
    Ok(keyword)
}

async fn trend(
    State(state): State<AppState>,
    Path(keyword): Path<String>,
) -> ApiResult<impl Serialize> {
    let keyword = path_keyword(&keyword)?;
    match state.cache.get_trend_details(keyword).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(not_found(format!("trend {keyword:?}"))),
    }
}

async fn user_metrics(State(state): State<AppState>) -> ApiResult<impl Serialize> {
    match state.cache.get_user_metrics().await? {
        Some(metrics) => Ok(Json(metrics)),
        None => Err(not_found("users:metrics".into())),
    }
}

async fn active_users(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl Serialize> {
    let users = state.cache.get_active_users(limit(&params)?).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|(user_id, last_seen)| json!({ "user_id": user_id, "last_seen": last_seen }))
            .collect::<Vec<_>>(),
    ))
}

async fn windows(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl Serialize> {
    Ok(Json(state.cache.list_windows(limit(&params)?).await?))
}

async fn window(
    State(state): State<AppState>,
    Path(window_id): Path<String>,
) -> ApiResult<impl Serialize> {
    crate::models::check_window_id(&window_id).map_err(|(_, detail)| bad_request(detail))?;
    match state.cache.get_windowed_data(&window_id).await? {
        Some(entries) => Ok(Json(json!({ "window_id": window_id, "keywords": entries }))),
        None => Err(not_found(format!("window {window_id:?}"))),
    }
}

async fn stats(State(state): State<AppState>) -> ApiResult<impl Serialize> {
    Ok(Json(state.cache.get_cache_stats().await?))
}

/// Checks the bearer token in constant time. 403 when admin is disabled, 401 otherwise.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.config.http.admin_token.expose_secret();
    if expected.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: set http.admin_token to enable them".into(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ))
    }
}

async fn admin_sweep(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<SweepOutcome> {
    authorize(&state, &headers)?;
    // Forced: a one-shot token, holding the lock briefly so a running loop does not
    // sweep in parallel; a sweep already running elsewhere makes this one `skipped`.
    let outcome = sweep_once(
        &state.cache,
        state.config.cache.active_user_window,
        Duration::from_secs(1),
        &lock_token(),
    )
    .await?;
    Ok(Json(outcome))
}

async fn admin_clear(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl Serialize> {
    authorize(&state, &headers)?;
    let pattern = params
        .get("pattern")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad_request("pattern is required, e.g. ?pattern=trends:keyword:*"))?;
    let deleted = state.cache.clear_cache_pattern(pattern).await?;
    Ok(Json(json!({ "pattern": pattern, "deleted": deleted })))
}
