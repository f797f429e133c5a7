//! Statistics and maintenance: the INFO-based stats, expired-member invalidation and the
//! namespace-restricted pattern clear. All key walks use SCAN in bounded steps, never
//! KEYS, so none of them blocks Redis however large the keyspace.

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::{CacheError, CacheLayer, Result};
use crate::schema::Category;

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 1_000;

/// SCAN steps one statistics run may spend per category (about 100,000 keys).
pub const SCAN_BUDGET: usize = 100;

/// A snapshot of the cache, as `get_cache_stats` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// All keys of the selected database (DBSIZE), this service's or not.
    pub total_keys: u64,
    pub trends_keys: u64,
    pub users_keys: u64,
    pub windows_keys: u64,
    #[serde(flatten)]
    pub server: ServerInfo,
}

/// The INFO fields the stats report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServerInfo {
    pub used_memory: u64,
    pub used_memory_human: String,
    pub connected_clients: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// hits / (hits + misses); 0 before the first lookup.
    pub hit_ratio: f64,
}

impl ServerInfo {
    /// Parses the `field:value` lines of INFO.
    pub fn parse(info: &str) -> Self {
        let fields: HashMap<&str, &str> = info
            .lines()
            .filter_map(|line| line.trim_end().split_once(':'))
            .collect();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let keyspace_hits = number("keyspace_hits");
        let keyspace_misses = number("keyspace_misses");
        let lookups = keyspace_hits + keyspace_misses;
        Self {
            used_memory: number("used_memory"),
            used_memory_human: fields.get("used_memory_human").unwrap_or(&"").to_string(),
            connected_clients: number("connected_clients"),
            keyspace_hits,
            keyspace_misses,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                keyspace_hits as f64 / lookups as f64
            },
        }
    }
}

impl CacheLayer {
    /// Key counts per category and the server's memory, clients and hit ratio.
    ///
    /// The cost is bounded: each category is counted by a SCAN of at most
    /// [`SCAN_BUDGET`] steps; a namespace too large for that is estimated from its index
    /// instead (one member per data key, plus the fixed keys).
    pub async fn get_cache_stats(&self) -> Result<CacheStats> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
        let total_keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
        let mut counts = [0u64; 3];
        for (count, category) in counts.iter_mut().zip(Category::ALL) {
            *count = match self.scan_count(&mut conn, category).await? {
                Some(exact) => exact,
                None => self.estimate_count(&mut conn, category).await?,
            };
        }
        Ok(CacheStats {
            total_keys,
            trends_keys: counts[0],
            users_keys: counts[1],
            windows_keys: counts[2],
            server: ServerInfo::parse(&info),
        })
    }

    /// Counts a namespace's keys, or `None` when the walk would exceed the budget.
    async fn scan_count(
        &self,
        conn: &mut ConnectionManager,
        category: Category,
    ) -> Result<Option<u64>> {
        let pattern = self.keys.namespace_pattern(category);
        let mut count = 0;
        let mut cursor = 0;
        for _ in 0..SCAN_BUDGET {
            let (next, keys) = Self::scan_step(conn, cursor, &pattern).await?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(Some(count));
            }
            cursor = next;
        }
        Ok(None)
    }

    /// A namespace's size from its index: members plus the fixed keys.
    async fn estimate_count(
        &self,
        conn: &mut ConnectionManager,
        category: Category,
    ) -> Result<u64> {
        let (index, fixed) = match category {
            Category::Trends => (Some(self.keys.trends_current()), 2),
            Category::Windows => (Some(self.keys.windows_index()), 1),
            Category::Users => (None, 3),
        };
        let members: u64 = match index {
            Some(index) => redis::cmd("ZCARD").arg(index).query_async(conn).await?,
            None => 0,
        };
        Ok(members + fixed)
    }

    /// Removes `trends:current` members whose detail key has expired. Returns how many.
    pub async fn invalidate_expired_trends(&self) -> Result<u64> {
        let keys = self.keys.clone();
        self.remove_members_without_data(&self.keys.trends_current(), |member| {
            keys.trend_normalized(member)
        })
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
        let mut conn = self.conn.clone();
        let mut deleted = 0u64;
        let mut cursor = 0;
        loop {
            let (next, keys) = Self::scan_step(&mut conn, cursor, pattern).await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// One SCAN MATCH step: the next cursor (0 when the walk is done) and a page of keys.
    pub(super) async fn scan_step(
        conn: &mut ConnectionManager,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>)> {
        Ok(redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_and_hit_ratio_are_parsed() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    # Clients\r\nconnected_clients:3\r\n# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n";
        let parsed = ServerInfo::parse(info);
        assert_eq!(parsed.used_memory, 1_048_576);
        assert_eq!(parsed.used_memory_human, "1.00M");
        assert_eq!(parsed.connected_clients, 3);
        assert_eq!((parsed.keyspace_hits, parsed.keyspace_misses), (3, 1));
        assert!((parsed.hit_ratio - 0.75).abs() < 1e-9);
    }

    #[test]
    fn hit_ratio_is_zero_before_any_lookup() {
        assert_eq!(
            ServerInfo::parse("keyspace_hits:0\nkeyspace_misses:0\n").hit_ratio,
            0.0
        );
    }
}
