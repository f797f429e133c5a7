//! `TrendAlert`: one keyword's trend in one window, published on `trend-alerts`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate::{check, check_counts, check_keyword, check_window, Reject, Validate};
use super::{normalize_keyword, RejectReason};

/// Ranks are stored inside a sorted-set score beside the window (see `schema::trend_score`),
/// which leaves room for ranks below one million.
pub const MAX_RANK: i64 = 999_999;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendAlert {
    pub keyword: String,
    pub frequency: i64,
    pub growth_rate: f64,
    pub confidence_score: f64,
    #[serde(with = "super::time")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "super::time")]
    pub window_end: DateTime<Utc>,
    #[serde(default)]
    pub sample_posts: Vec<String>,
    pub unique_authors: i64,
    pub rank: i64,
}

impl TrendAlert {
    /// The keyword as it appears in keys and in `trends:current`.
    pub fn normalized_keyword(&self) -> String {
        normalize_keyword(&self.keyword)
    }
}

impl Validate for TrendAlert {
    fn validate(&mut self) -> Result<(), Reject> {
        check_keyword(&mut self.keyword)?;
        check_counts("frequency", self.frequency, self.unique_authors)?;
        check(
            self.growth_rate.is_finite() && self.confidence_score.is_finite(),
            RejectReason::NonFinite,
            || "growth_rate and confidence_score must be finite".into(),
        )?;
        check(
            (0.0..=1.0).contains(&self.confidence_score),
            RejectReason::ConfidenceOutOfRange,
            || {
                format!(
                    "confidence_score {} is outside 0..=1",
                    self.confidence_score
                )
            },
        )?;
        check(
            (1..=MAX_RANK).contains(&self.rank),
            RejectReason::InvalidRank,
            || format!("rank {} is outside 1..={MAX_RANK}", self.rank),
        )?;
        check_window(&self.window_start, &self.window_end)
    }
}
