//! Redis Sentinel, for real: a master and a replica ([`RedisServer`]s) watched by three
//! sentinels (`redis-server --sentinel`, quorum 2), which fail over within a few seconds
//! of the master's death (`down-after-milliseconds` 1000).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::redis_server::ping;
use crate::{connect, free_port, wait_until, RedisServer};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "cache-layer-test";

const READY: Duration = Duration::from_secs(30);

pub struct RedisSentinel {
    /// The nodes, the first one the master at the start.
    pub nodes: [RedisServer; 2],
    sentinels: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts the master and its replica, waits for the replica to be in sync, then
    /// starts the sentinels and waits until each knows the replica and the other two.
    pub async fn start() -> Self {
        let nodes = [
            RedisServer::start().await.expect("the master starts"),
            RedisServer::start().await.expect("the replica starts"),
        ];
        let master_port = nodes[0].port();
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(master_port)
            .exec(&mut connect(&nodes[1]))
            .unwrap();
        wait_until(READY, "the replica in sync", || async {
            info(&nodes[1], "replication").contains("master_link_status:up")
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n",
                        dir.path().display()
                    ),
                )
                .unwrap();
                let child = Command::new("redis-server")
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server --sentinel runs");
                (port, child)
            })
            .collect();
        let sentinel = Self {
            nodes,
            sentinels,
            _dir: dir,
        };
        for port in sentinel.ports() {
            wait_until(READY, "a sentinel to start", || ping(port)).await;
            wait_until(
                READY,
                "a sentinel to know the others and the replica",
                || async {
                    let master = sentinel.ask(port, "MASTER");
                    field(&master, "num-other-sentinels") == "2"
                        && field(&master, "num-slaves") == "1"
                },
            )
            .await;
        }
        sentinel
    }

    fn ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    /// `redis://` URLs of the sentinels, for `redis.sentinel_nodes`.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the node the first sentinel names as the master.
    pub fn master_port(&self) -> Option<u16> {
        let port = self.ports()[0];
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_connection()
            .ok()?;
        let (_, master_port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .ok()?;
        Some(master_port)
    }

    /// The node on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("one of the nodes")
    }

    /// `SENTINEL <what> <master>`, as field/value pairs.
    fn ask(&self, port: u16, what: &str) -> Vec<String> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .and_then(|mut conn| {
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg(MASTER_NAME)
                    .query(&mut conn)
            })
            .unwrap_or_default()
    }
}

/// The value after `name` in a flat field/value list.
fn field<'a>(pairs: &'a [String], name: &str) -> &'a str {
    pairs
        .chunks(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair.get(1))
        .map_or("", String::as_str)
}

/// `INFO section` of a node; empty when it does not answer.
pub fn info(node: &RedisServer, section: &str) -> String {
    redis::Client::open(node.url())
        .and_then(|c| c.get_connection())
        .and_then(|mut conn| redis::cmd("INFO").arg(section).query(&mut conn))
        .unwrap_or_default()
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
