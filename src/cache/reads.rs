//! Reads of the schema. Index members whose data has expired are skipped: the sweep
//! removes them eventually, but no reader ever sees one. So are values whose event time
//! is further ahead of the clock than `batch.max_future_skew_secs` (stored before that was
//! checked): a wrong upstream clock never pins an entry at the top of a ranking.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{CacheError, CacheLayer, Result};
use crate::models::{normalize_keyword, TrendAlert, UserMetrics, WindowEntry};

/// The most index members one read fetches at a time: it asks for as many as it still
/// needs, and for more only when it skipped expired ones.
const PAGE: usize = 100;

/// One entry of the trend ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendEntry {
    /// The normalised keyword: the `trends:current` member.
    pub keyword: String,
    pub alert: TrendAlert,
}

/// A window in `windows:index`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedWindow {
    pub window_id: String,
    pub window_end: DateTime<Utc>,
}

fn parse_json<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| CacheError::InvalidValue(format!("{key} does not hold valid JSON: {e}")))
}

impl CacheLayer {
    /// The current ranking, newest window first then rank ascending, at most `limit`.
    pub async fn get_trending_keywords(&self, limit: usize) -> Result<Vec<TrendEntry>> {
        let mut conn = self.conn.clone();
        let ranking = self.keys.trends_current();
        let not_after = self.not_after(Utc::now());
        let mut out = Vec::with_capacity(limit.min(1_000));
        let mut start = 0isize;
        while out.len() < limit {
            let page = (limit - out.len()).min(PAGE) as isize;
            let members: Vec<String> = conn.zrange(&ranking, start, start + page - 1).await?;
            if members.is_empty() {
                break;
            }
            let keys: Vec<String> = members
                .iter()
                .map(|m| self.keys.trend_normalized(m))
                .collect();
            let details: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            for ((member, key), detail) in members.iter().zip(&keys).zip(details) {
                if let Some(json) = detail {
                    let alert: TrendAlert = parse_json(key, &json)?;
                    if alert.window_end > not_after {
                        continue;
                    }
                    out.push(TrendEntry {
                        keyword: member.clone(),
                        alert,
                    });
                    if out.len() == limit {
                        break;
                    }
                }
            }
            start += page;
        }
        Ok(out)
    }

    /// The details of one keyword, looked up by its normalised form.
    pub async fn get_trend_details(&self, keyword: &str) -> Result<Option<TrendAlert>> {
        let key = self.keys.trend(keyword);
        let json: Option<String> = self.conn.clone().get(&key).await?;
        json.map(|j| parse_json(&key, &j)).transpose()
    }

    pub async fn get_user_metrics(&self) -> Result<Option<UserMetrics>> {
        let key = self.keys.users_metrics();
        let json: Option<String> = self.conn.clone().get(&key).await?;
        json.map(|j| parse_json(&key, &j)).transpose()
    }

    /// Users seen within the active-user window, most recent first, with their last-seen
    /// unix seconds.
    pub async fn get_active_users(&self, limit: usize) -> Result<Vec<(String, i64)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let since = now.timestamp() - self.active_user_window.as_secs() as i64;
        let users: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.users_active())
            .arg(self.not_after(now).timestamp())
            .arg(since)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(users
            .into_iter()
            .map(|(id, seen)| (id, seen as i64))
            .collect())
    }

    /// The counts of one window, largest first; `None` when the window is not cached.
    pub async fn get_windowed_data(&self, window_id: &str) -> Result<Option<Vec<WindowEntry>>> {
        let key = self.keys.window(window_id);
        let fields: Vec<(String, String)> = self.conn.clone().hgetall(&key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut entries = fields
            .iter()
            .map(|(_, json)| parse_json::<WindowEntry>(&key, json))
            .collect::<Result<Vec<_>>>()?;
        entries.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| normalize_keyword(&a.keyword).cmp(&normalize_keyword(&b.keyword)))
        });
        Ok(Some(entries))
    }

    /// The most recent cached windows, newest `window_end` first, at most `limit`.
    pub async fn list_windows(&self, limit: usize) -> Result<Vec<RankedWindow>> {
        let mut conn = self.conn.clone();
        let index = self.keys.windows_index();
        let not_after = self.not_after(Utc::now()).timestamp() as f64;
        let mut out = Vec::new();
        let mut start = 0isize;
        while out.len() < limit {
            let page = (limit - out.len()).min(PAGE) as isize;
            let ids: Vec<(String, f64)> = conn
                .zrevrange_withscores(&index, start, start + page - 1)
                .await?;
            if ids.is_empty() {
                break;
            }
            let mut exists = redis::pipe();
            for (id, _) in &ids {
                exists.exists(self.keys.window(id));
            }
            let present: Vec<bool> = self.conn.exec_pipeline_as(&exists).await?;
            for ((window_id, end), present) in ids.into_iter().zip(present) {
                if !present || end > not_after {
                    continue;
                }
                let window_end = DateTime::from_timestamp(end as i64, 0).ok_or_else(|| {
                    CacheError::InvalidValue(format!("{index} holds score {end} for {window_id}"))
                })?;
                out.push(RankedWindow {
                    window_id,
                    window_end,
                });
                if out.len() == limit {
                    break;
                }
            }
            start += page;
        }
        Ok(out)
    }
}
