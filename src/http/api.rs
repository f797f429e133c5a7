//! The read API (`/v1/...`) and the admin endpoints.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::{ApiError, MAX_LIMIT};
use super::state::AppState;
use crate::background::{sweep_once, SweepOutcome};
use crate::cache::lock_token;
use crate::models::MAX_KEYWORD_BYTES;

const DEFAULT_LIMIT: usize = 10;

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

/// From the shared snapshot: see [`super::snapshot`].
pub(super) async fn trends(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state.trends.answer(&state.cache, limit(&params)?).await
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

pub(super) async fn trend(
    State(state): State<AppState>,
    Path(keyword): Path<String>,
) -> ApiResult<impl Serialize> {
    let keyword = path_keyword(&keyword)?;
    match state.cache.get_trend_details(keyword).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(not_found(format!("trend {keyword:?}"))),
    }
}

pub(super) async fn user_metrics(State(state): State<AppState>) -> ApiResult<impl Serialize> {
    match state.cache.get_user_metrics().await? {
        Some(metrics) => Ok(Json(metrics)),
        None => Err(not_found("users:metrics".into())),
    }
}

pub(super) async fn active_users(
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

pub(super) async fn windows(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<impl Serialize> {
    Ok(Json(state.cache.list_windows(limit(&params)?).await?))
}

pub(super) async fn window(
    State(state): State<AppState>,
    Path(window_id): Path<String>,
) -> ApiResult<impl Serialize> {
    crate::models::check_window_id(&window_id).map_err(|(_, detail)| bad_request(detail))?;
    match state.cache.get_windowed_data(&window_id).await? {
        Some(entries) => Ok(Json(json!({ "window_id": window_id, "keywords": entries }))),
        None => Err(not_found(format!("window {window_id:?}"))),
    }
}

pub(super) async fn stats(State(state): State<AppState>) -> ApiResult<impl Serialize> {
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

pub(super) async fn admin_sweep(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<SweepOutcome> {
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

pub(super) async fn admin_clear(
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
