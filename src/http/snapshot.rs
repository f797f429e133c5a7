//! `/v1/trends` from a short-lived shared snapshot: the ranking is read from Redis and
//! rendered once per `http.trends_snapshot_ms`, however many readers ask meanwhile, and
//! every answer is a slice of that one buffer. A crowd of readers costs one Redis read
//! and one buffer per period rather than one each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use super::error::{too_large, ApiError, MAX_LIMIT};
use crate::cache::{CacheError, CacheLayer, TrendEntry};

/// The rendered ranking, shared by the readers of one period.
pub(super) struct TrendsSnapshot {
    period: Duration,
    max_bytes: usize,
    /// Held across a refresh, so that readers who find it stale wait for one read.
    latest: Mutex<Option<Arc<Rendered>>>,
}

/// `[e0,e1,...` without its closing bracket, and where each entry ends: the answer for
/// `limit = n` is the first `ends[n - 1]` bytes and a `]`.
struct Rendered {
    taken: Instant,
    body: Bytes,
    ends: Vec<usize>,
    /// False when entries were left out to keep the buffer within `max_bytes`.
    complete: bool,
}

impl TrendsSnapshot {
    pub(super) fn new(period: Duration, max_bytes: usize) -> Self {
        Self {
            period,
            max_bytes,
            latest: Mutex::new(None),
        }
    }

    /// The first `limit` entries of the ranking, as a JSON array.
    pub(super) async fn answer(
        &self,
        cache: &CacheLayer,
        limit: usize,
    ) -> Result<Response, ApiError> {
        let rendered = self.current(cache).await?;
        if limit > rendered.ends.len() && !rendered.complete {
            return Err(too_large(self.max_bytes));
        }
        let shown = limit.min(rendered.ends.len());
        let chunks = if shown == 0 {
            [Bytes::from_static(b"[]"), Bytes::new()]
        } else {
            let end = rendered.ends[shown - 1];
            [rendered.body.slice(..end), Bytes::from_static(b"]")]
        };
        let body = Body::from_stream(futures::stream::iter(
            chunks.map(Ok::<_, std::convert::Infallible>),
        ));
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    }

    async fn current(&self, cache: &CacheLayer) -> Result<Arc<Rendered>, CacheError> {
        let mut latest = self.latest.lock().await;
        if let Some(rendered) = latest.as_ref().filter(|r| r.taken.elapsed() < self.period) {
            return Ok(Arc::clone(rendered));
        }
        let entries = cache.get_trending_keywords(MAX_LIMIT).await?;
        let rendered = Arc::new(Rendered::new(&entries, self.max_bytes));
        *latest = Some(Arc::clone(&rendered));
        Ok(rendered)
    }
}

impl Rendered {
    fn new(entries: &[TrendEntry], max_bytes: usize) -> Self {
        let mut body = Vec::with_capacity(max_bytes.min(64 * 1024));
        let mut ends = Vec::with_capacity(entries.len());
        let mut complete = true;
        for entry in entries {
            let start = body.len();
            body.push(if ends.is_empty() { b'[' } else { b',' });
            serde_json::to_writer(&mut body, entry).expect("a trend entry serializes");
            // The closing bracket must fit too.
            if body.len() + 1 > max_bytes {
                body.truncate(start);
                complete = false;
                break;
            }
            ends.push(body.len());
        }
        Self {
            taken: Instant::now(),
            body: Bytes::from(body),
            ends,
            complete,
        }
    }
}
