//! What a reader may ask, and the answer when it asks wrong or Redis cannot answer: a
//! status and `{"error": ...}`, never a panic.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::cache::CacheError;
use crate::events;

/// The largest `limit` a list endpoint accepts.
pub(crate) const MAX_LIMIT: usize = 1_000;

/// An error answer: a status and a message.
#[derive(Debug)]
pub(crate) struct ApiError(pub(super) StatusCode, pub(super) String);

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
                events::redis_error(e.kind_label());
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            CacheError::Rejected(_) | CacheError::Refused(_) | CacheError::InvalidValue(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

pub(super) fn too_large(max: usize) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        format!(
            "the answer would be larger than http.max_response_bytes = {max}; \
             ask for fewer entries with ?limit="
        ),
    )
}
