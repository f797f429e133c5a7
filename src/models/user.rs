//! `UserMetrics`: a snapshot of user activity, published on `user-metrics`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate::{check, Reject, Validate};
use super::RejectReason;

/// User ids are DIDs or handles: bounded, printable.
pub(crate) const MAX_USER_ID_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    pub user_id: String,
    pub post_count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMetrics {
    pub total_active_users: i64,
    pub posts_per_minute: f64,
    #[serde(default)]
    pub top_contributors: Vec<Contributor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_users: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "super::time::deserialize_opt",
        serialize_with = "super::time::serialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<DateTime<Utc>>,
}

impl UserMetrics {
    /// Every user id this snapshot saw active: the explicit list, then the contributors.
    pub(crate) fn seen_user_ids(&self) -> impl Iterator<Item = &str> {
        self.active_users
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(self.top_contributors.iter().map(|c| c.user_id.as_str()))
    }
}

fn check_user_id(id: &str) -> Result<(), Reject> {
    check(
        !id.trim().is_empty() && id.len() <= MAX_USER_ID_BYTES && !id.chars().any(char::is_control),
        RejectReason::InvalidUserId,
        || format!("user id {id:?} must be 1..={MAX_USER_ID_BYTES} printable bytes"),
    )
}

impl Validate for UserMetrics {
    fn validate(&mut self) -> Result<(), Reject> {
        check(
            self.total_active_users >= 0,
            RejectReason::NegativeValue,
            || format!("total_active_users {} is negative", self.total_active_users),
        )?;
        check(
            self.posts_per_minute.is_finite(),
            RejectReason::NonFinite,
            || "posts_per_minute must be finite".into(),
        )?;
        check(
            self.posts_per_minute >= 0.0,
            RejectReason::NegativeValue,
            || format!("posts_per_minute {} is negative", self.posts_per_minute),
        )?;
        for contributor in &self.top_contributors {
            check_user_id(&contributor.user_id)?;
            check(
                contributor.post_count >= 0,
                RejectReason::NegativeValue,
                || {
                    format!(
                        "post_count {} of a contributor is negative",
                        contributor.post_count
                    )
                },
            )?;
        }
        for id in self.active_users.iter().flatten() {
            check_user_id(id)?;
        }
        Ok(())
    }
}
