//! What every handler shares: the cache, the instance's status, the configuration, and
//! the `/v1/trends` snapshot.

use std::sync::Arc;

use super::snapshot::TrendsSnapshot;
use crate::cache::CacheLayer;
use crate::config::Config;
use crate::status::Status;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub cache: CacheLayer,
    pub status: Arc<Status>,
    pub config: Arc<Config>,
    pub(super) trends: Arc<TrendsSnapshot>,
}

impl AppState {
    pub fn new(cache: CacheLayer, status: Arc<Status>, config: Arc<Config>) -> Self {
        let http = &config.http;
        let trends = TrendsSnapshot::new(http.trends_snapshot, http.max_response_bytes);
        Self {
            cache,
            status,
            config,
            trends: Arc::new(trends),
        }
    }
}
