//! Maintenance: sweeps (removing index members whose data expired, users no longer
//! active, and any key of the service's namespaces that has no TTL, which should never
//! happen: every write sets its TTL atomically), the namespace-restricted pattern clear,
//! and the lock that lets one instance sweep per interval. Every key walk uses SCAN or
//! ZSCAN in bounded steps, never KEYS, so none of them blocks Redis.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::conn::Node;
use super::{CacheError, CacheLayer, Result};
use crate::schema::Category;

/// Members or keys looked at per step.
const STEP: usize = 1_000;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// `trends:current` members whose detail key expired.
    pub trends_removed: u64,
    /// `users:active` members not seen within the active-user window.
    pub users_removed: u64,
    /// `windows:index` members whose hash expired.
    pub windows_removed: u64,
    /// Keys without a TTL, deleted, per category (an anomaly).
    pub trends_without_ttl: u64,
    pub users_without_ttl: u64,
    pub windows_without_ttl: u64,
}

impl SweepReport {
    pub(crate) fn removed(&self) -> [(Category, u64); 3] {
        [
            (Category::Trends, self.trends_removed),
            (Category::Users, self.users_removed),
            (Category::Windows, self.windows_removed),
        ]
    }

    pub(crate) fn without_ttl(&self) -> [(Category, u64); 3] {
        [
            (Category::Trends, self.trends_without_ttl),
            (Category::Users, self.users_without_ttl),
            (Category::Windows, self.windows_without_ttl),
        ]
    }
}

/// A held lock: only its owner's token can renew or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    key: String,
    token: String,
}

/// Take the lock if it is free, or renew it if this token already holds it.
/// KEYS[1]: the lock; ARGV[1]: the token; ARGV[2]: its lifetime in milliseconds.
const ACQUIRE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"#;

/// Delete the lock only if this token holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl CacheLayer {
    /// One full sweep. Every step walks its keys in bounded SCAN or ZSCAN steps.
    pub async fn sweep(&self, active_user_window: Duration) -> Result<SweepReport> {
        let mut report = SweepReport {
            trends_removed: self.invalidate_expired_trends().await?,
            users_removed: self.remove_inactive_users(active_user_window).await?,
            windows_removed: self.invalidate_expired_windows().await?,
            ..SweepReport::default()
        };
        let [trends, users, windows] = self.delete_keys_without_ttl().await?;
        report.trends_without_ttl = trends;
        report.users_without_ttl = users;
        report.windows_without_ttl = windows;
        Ok(report)
    }

    /// Removes `trends:current` members whose detail key has expired. Returns how many.
    pub async fn invalidate_expired_trends(&self) -> Result<u64> {
        let keys = self.keys.clone();
        self.remove_members_without_data(&self.keys.trends_current(), &keys.trend_normalized(""))
            .await
    }

    /// Deletes the keys matching a glob pattern, with SCAN and UNLINK in bounded steps.
    ///
    /// The pattern must start, literally, with one of the service's namespaces
    /// (`{p}trends:`, `{p}users:`, `{p}windows:`): `*` or `trend*` are refused, so that a
    /// clear can never reach another application's keys. Returns how many keys went.
    pub async fn clear_cache_pattern(&self, pattern: &str) -> Result<u64> {
        if !self.keys.owns_pattern(pattern) {
            let allowed = Category::ALL
                .iter()
                .map(|c| format!("{:?}", self.keys.namespace(*c)))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CacheError::ForeignPattern {
                pattern: pattern.to_owned(),
                allowed,
            });
        }
        let mut deleted = 0u64;
        for node in self.conn.masters().await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_step(&node, cursor, pattern).await?;
                if !keys.is_empty() {
                    // One UNLINK per key: on a cluster a page spans many slots.
                    let mut unlink = redis::pipe();
                    for key in &keys {
                        unlink.unlink(key);
                    }
                    let removed: Vec<u64> = self.conn.exec_pipeline_as(&unlink).await?;
                    deleted += removed.iter().sum::<u64>();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// One SCAN MATCH step: the next cursor (0 when the walk is done) and a page of keys.
    pub(super) async fn scan_step(
        &self,
        node: &Node,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(STEP);
        Ok(self.conn.on_node(node, &scan).await?)
    }

    /// Removes `users:active` members last seen before `now - window`.
    pub(crate) async fn remove_inactive_users(&self, window: Duration) -> Result<u64> {
        let cutoff = Utc::now().timestamp() - window.as_secs() as i64;
        Ok(redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.users_active())
            .arg("-inf")
            .arg(format!("({cutoff}"))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Removes `windows:index` members whose window hash expired.
    pub(crate) async fn invalidate_expired_windows(&self) -> Result<u64> {
        let keys = self.keys.clone();
        self.remove_members_without_data(&self.keys.windows_index(), &keys.window(""))
            .await
    }

    /// Removes the members of an index whose data key (`data_prefix` + member) no longer
    /// exists. Returns how many. Members and keys are bytes: another writer may have put
    /// any there.
    pub(super) async fn remove_members_without_data(
        &self,
        index: &str,
        data_prefix: &str,
    ) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut removed = 0u64;
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(Vec<u8>, f64)>) = redis::cmd("ZSCAN")
                .arg(index)
                .arg(cursor)
                .arg("COUNT")
                .arg(STEP)
                .query_async(&mut conn)
                .await?;
            if !page.is_empty() {
                let mut exists = redis::pipe();
                for (member, _) in &page {
                    exists.exists([data_prefix.as_bytes(), member].concat());
                }
                let present: Vec<bool> = self.conn.exec_pipeline_as(&exists).await?;
                let stale: Vec<&[u8]> = page
                    .iter()
                    .zip(present)
                    .filter(|(_, present)| !present)
                    .map(|((member, _), _)| member.as_slice())
                    .collect();
                if !stale.is_empty() {
                    let n: u64 = redis::cmd("ZREM")
                        .arg(index)
                        .arg(&stale)
                        .query_async(&mut conn)
                        .await?;
                    removed += n;
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Deletes every key of the three namespaces that has no TTL. Returns the count per
    /// category (trends, users, windows).
    pub(crate) async fn delete_keys_without_ttl(&self) -> Result<[u64; 3]> {
        let mut deleted = [0u64; 3];
        let nodes = self.conn.masters().await?;
        for (count, category) in deleted.iter_mut().zip(Category::ALL) {
            let pattern = self.keys.namespace_pattern(category);
            for node in &nodes {
                let mut cursor = 0;
                loop {
                    let (next, keys) = self.scan_step(node, cursor, &pattern).await?;
                    *count += self.unlink_if_persistent(&keys).await?;
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(deleted)
    }

    async fn unlink_if_persistent(&self, keys: &[Vec<u8>]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut ttls = redis::pipe();
        for key in keys {
            ttls.ttl(key);
        }
        let ttls: Vec<i64> = self.conn.exec_pipeline_as(&ttls).await?;
        let persistent: Vec<&Vec<u8>> = keys
            .iter()
            .zip(ttls)
            .filter(|(_, ttl)| *ttl == -1)
            .map(|(k, _)| k)
            .collect();
        if persistent.is_empty() {
            return Ok(0);
        }
        // Checked again inside Redis, atomically, in case a key got its TTL meanwhile.
        let mut unlink = redis::pipe();
        for key in &persistent {
            unlink
                .cmd("EVAL")
                .arg("if redis.call('TTL', KEYS[1]) == -1 then return redis.call('UNLINK', KEYS[1]) end return 0")
                .arg(1)
                .arg(*key);
        }
        let removed: Vec<u64> = self.conn.exec_pipeline_as(&unlink).await?;
        Ok(removed.iter().sum())
    }

    /// Tries to take (or renew) the named lock for `ttl`. `None`: another owner holds it.
    pub async fn try_lock(&self, name: &str, ttl: Duration, token: &str) -> Result<Option<Lock>> {
        let key = self.keys.lock(name);
        let acquired: i64 = redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(1)
            .arg(&key)
            .arg(token)
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok((acquired == 1).then(|| Lock {
            key,
            token: token.to_owned(),
        }))
    }

    /// Releases a lock if it is still this owner's. Returns whether it was.
    pub async fn unlock(&self, lock: &Lock) -> Result<bool> {
        let released: i64 = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&lock.key)
            .arg(&lock.token)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(released == 1)
    }
}

/// A random token naming one lock owner.
pub fn lock_token() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}
