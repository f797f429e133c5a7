//! Statistics: key counts per category and the INFO-based server figures. Counting walks
//! the keys with SCAN in bounded steps, never KEYS, so it never blocks Redis however
//! large the keyspace; a namespace too large for the budget is estimated instead.

use std::collections::HashMap;

use super::conn::Node;
use serde::{Deserialize, Serialize};

use super::{CacheLayer, Result};
use crate::schema::Category;

/// SCAN steps one statistics run may spend per category (about 100,000 keys).
pub(crate) const SCAN_BUDGET: usize = 100;

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
    /// Keys Redis evicted to stay under `maxmemory`, since it started.
    pub evicted_keys: u64,
    /// The memory limit; 0 is none.
    pub maxmemory: u64,
    /// What Redis does at the limit (`noeviction`, `volatile-ttl`, `allkeys-lru`, ...);
    /// on a cluster whose masters differ, their policies joined by commas.
    pub(crate) maxmemory_policy: String,
}

/// How full Redis is: the fullest master with a `maxmemory`, `used_memory` against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MemoryUse {
    pub used_memory: u64,
    pub maxmemory: u64,
}

impl MemoryUse {
    pub(crate) fn ratio(&self) -> f64 {
        self.used_memory as f64 / self.maxmemory as f64
    }
}

impl ServerInfo {
    /// Adds another node's figures to these (a cluster's stats are the sum of its
    /// masters'); the hit ratio is recomputed.
    pub(crate) fn add(&mut self, other: &ServerInfo) {
        self.used_memory += other.used_memory;
        self.connected_clients += other.connected_clients;
        self.keyspace_hits += other.keyspace_hits;
        self.keyspace_misses += other.keyspace_misses;
        self.evicted_keys += other.evicted_keys;
        self.maxmemory += other.maxmemory;
        if self.maxmemory_policy.is_empty() {
            self.maxmemory_policy.clone_from(&other.maxmemory_policy);
        } else if !other.maxmemory_policy.is_empty()
            && !self
                .maxmemory_policy
                .split(',')
                .any(|p| p == other.maxmemory_policy)
        {
            self.maxmemory_policy = format!("{},{}", self.maxmemory_policy, other.maxmemory_policy);
        }
        let lookups = self.keyspace_hits + self.keyspace_misses;
        self.hit_ratio = if lookups == 0 {
            0.0
        } else {
            self.keyspace_hits as f64 / lookups as f64
        };
        self.used_memory_human = if self.used_memory_human.is_empty() {
            other.used_memory_human.clone()
        } else {
            format!("{:.2}M", self.used_memory as f64 / 1_048_576.0)
        };
    }

    /// Parses the `field:value` lines of INFO.
    pub(crate) fn parse(info: &str) -> Self {
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
            evicted_keys: number("evicted_keys"),
            maxmemory: number("maxmemory"),
            maxmemory_policy: fields.get("maxmemory_policy").unwrap_or(&"").to_string(),
        }
    }

    /// Whether the policy evicts keys without regard to their TTL.
    pub(crate) fn evicts_any_key(&self) -> bool {
        self.maxmemory_policy
            .split(',')
            .any(|p| p.starts_with("allkeys-"))
    }
}

impl CacheLayer {
    /// Key counts per category and the server's memory, clients and hit ratio, summed
    /// over every master on a cluster.
    ///
    /// The cost is bounded: each category is counted by a SCAN of at most
    /// [`SCAN_BUDGET`] steps per node; a namespace too large for that is estimated from
    /// its index instead (one member per data key, plus the fixed keys).
    pub async fn get_cache_stats(&self) -> Result<CacheStats> {
        let nodes = self.conn.masters().await?;
        let mut total_keys = 0u64;
        let mut server = ServerInfo::default();
        for node in &nodes {
            let info: String = self.conn.on_node(node, &redis::cmd("INFO")).await?;
            server.add(&ServerInfo::parse(&info));
            let keys: u64 = self.conn.on_node(node, &redis::cmd("DBSIZE")).await?;
            total_keys += keys;
        }
        let mut counts = [0u64; 3];
        for (count, category) in counts.iter_mut().zip(Category::ALL) {
            *count = match self.scan_count(&nodes, category).await? {
                Some(exact) => exact,
                None => self.estimate_count(category).await?,
            };
        }
        Ok(CacheStats {
            total_keys,
            trends_keys: counts[0],
            users_keys: counts[1],
            windows_keys: counts[2],
            server,
        })
    }

    /// `INFO memory` of every master: the fullest of those with a `maxmemory`, or `None`
    /// when none has a limit. One round trip a master (and one `CLUSTER NODES` on a
    /// cluster), for the memory pressure check.
    pub(crate) async fn memory_use(&self) -> Result<Option<MemoryUse>> {
        let mut fullest: Option<MemoryUse> = None;
        for node in &self.conn.masters().await? {
            let info: String = self
                .conn
                .on_node(node, redis::cmd("INFO").arg("memory"))
                .await?;
            let info = ServerInfo::parse(&info);
            if info.maxmemory == 0 {
                continue;
            }
            let here = MemoryUse {
                used_memory: info.used_memory,
                maxmemory: info.maxmemory,
            };
            if fullest.is_none_or(|f| here.ratio() > f.ratio()) {
                fullest = Some(here);
            }
        }
        Ok(fullest)
    }

    /// Redis's `evicted_keys` (`INFO stats`), summed over every master: one round trip a
    /// master, for the loss detection.
    pub(crate) async fn evicted_keys(&self) -> Result<u64> {
        let mut evicted = 0;
        for node in &self.conn.masters().await? {
            let info: String = self
                .conn
                .on_node(node, redis::cmd("INFO").arg("stats"))
                .await?;
            evicted += ServerInfo::parse(&info).evicted_keys;
        }
        Ok(evicted)
    }

    /// Counts a namespace's keys, or `None` when the walk would exceed the budget.
    async fn scan_count(&self, nodes: &[Node], category: Category) -> Result<Option<u64>> {
        let pattern = self.keys.namespace_pattern(category);
        let mut count = 0;
        for node in nodes {
            let mut cursor = 0;
            let mut steps = 0;
            loop {
                let (next, keys) = self.scan_step(node, cursor, &pattern).await?;
                count += keys.len() as u64;
                steps += 1;
                if next == 0 {
                    break;
                }
                if steps == SCAN_BUDGET {
                    return Ok(None);
                }
                cursor = next;
            }
        }
        Ok(Some(count))
    }

    /// A namespace's size from its index: members plus the fixed keys.
    async fn estimate_count(&self, category: Category) -> Result<u64> {
        let (index, fixed) = match category {
            Category::Trends => (Some(self.keys.trends_current()), 2),
            Category::Windows => (Some(self.keys.windows_index()), 1),
            Category::Users => (None, 3),
        };
        let members: u64 = match index {
            Some(index) => {
                redis::cmd("ZCARD")
                    .arg(index)
                    .query_async(&mut self.conn.clone())
                    .await?
            }
            None => 0,
        };
        Ok(members + fixed)
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
    fn eviction_and_the_memory_limit_are_parsed_and_summed_over_masters() {
        let mut info = ServerInfo::parse(
            "maxmemory:3000000\r\nmaxmemory_policy:volatile-ttl\r\nevicted_keys:7\r\n",
        );
        assert_eq!(
            (
                info.maxmemory,
                info.evicted_keys,
                info.maxmemory_policy.as_str()
            ),
            (3_000_000, 7, "volatile-ttl")
        );
        assert!(!info.evicts_any_key());
        info.add(&ServerInfo::parse(
            "maxmemory:1000000\nmaxmemory_policy:volatile-ttl\nevicted_keys:1\n",
        ));
        info.add(&ServerInfo::parse(
            "maxmemory:0\nmaxmemory_policy:allkeys-lru\nevicted_keys:0\n",
        ));
        assert_eq!((info.maxmemory, info.evicted_keys), (4_000_000, 8));
        assert_eq!(info.maxmemory_policy, "volatile-ttl,allkeys-lru");
        assert!(info.evicts_any_key());
    }

    #[test]
    fn hit_ratio_is_zero_before_any_lookup() {
        assert_eq!(
            ServerInfo::parse("keyspace_hits:0\nkeyspace_misses:0\n").hit_ratio,
            0.0
        );
    }
}
