//! A real local Redis Cluster for the tests: `redis-server --cluster-enabled yes`
//! processes on loopback ports, joined with `redis-cli --cluster create`, plain or with
//! TLS as well.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

/// How long the cluster may take to form.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RedisCluster {
    /// Each node's plain port, which the helpers below use.
    pub ports: Vec<u16>,
    /// Each node's TLS port, for a cluster started with [`RedisCluster::start_tls`].
    pub tls_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn node_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// `masters` primaries, each with `replicas_per_master` replicas.
    pub async fn start(masters: usize, replicas_per_master: usize) -> Self {
        Self::start_with(masters, replicas_per_master, None).await
    }

    /// The same, each node also taking TLS clients that present a certificate signed by
    /// the CA in `certs` (see [`crate::certs::certificates`]), with the cluster bus and
    /// replication over TLS too. The plain ports stay, for the helpers' own checks.
    pub async fn start_tls(masters: usize, replicas_per_master: usize, certs: &Path) -> Self {
        Self::start_with(masters, replicas_per_master, Some(certs)).await
    }

    async fn start_with(masters: usize, replicas_per_master: usize, certs: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let count = masters * (1 + replicas_per_master);
        // Cluster bus ports are port + 10000 (of the TLS port, with TLS): keep the ports
        // that set the bus low enough.
        let ports: Vec<u16> = (0..count).map(|_| node_port()).collect();
        let tls_ports: Vec<u16> = match certs {
            Some(_) => (0..count).map(|_| node_port()).collect(),
            None => Vec::new(),
        };
        let file = |name: &str| certs.map(|c| c.join(name).display().to_string());
        let children = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let mut command = Command::new("redis-server");
                command
                    .args([
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                    ])
                    .args([
                        "--cluster-node-timeout",
                        "1000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(&node_dir);
                if let (Some(cert), Some(key), Some(ca)) =
                    (file("server.pem"), file("server.key"), file("ca.pem"))
                {
                    let tls_port = tls_ports[i];
                    command
                        .args(["--tls-port", &tls_port.to_string()])
                        .args(["--cluster-port", &(tls_port + 10_000).to_string()])
                        .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                        .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
                        .args(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "yes"]);
                }
                Some(
                    command
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("redis-server runs"),
                )
            })
            .collect();
        let cluster = Self {
            ports,
            tls_ports,
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_until(CLUSTER_TIMEOUT, "a cluster node to start", || {
                crate::redis_server::ping(*port)
            })
            .await;
        }
        let mut create = tokio::process::Command::new("redis-cli");
        if let (Some(cert), Some(key), Some(ca)) =
            (file("client.pem"), file("client.key"), file("ca.pem"))
        {
            create.args(["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key]);
        }
        let joined = if cluster.tls_ports.is_empty() {
            &cluster.ports
        } else {
            &cluster.tls_ports
        };
        let output = create
            .args(["--cluster", "create"])
            .args(joined.iter().map(|p| format!("127.0.0.1:{p}")))
            .args([
                "--cluster-replicas",
                &replicas_per_master.to_string(),
                "--cluster-yes",
            ])
            .output()
            .await
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for port in &cluster.ports {
            wait_until(CLUSTER_TIMEOUT, "the cluster to be ok", || async {
                cluster.info(*port).contains("cluster_state:ok")
            })
            .await;
        }
        cluster
    }

    pub fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}/0", self.ports[index])
    }

    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/0"))
            .collect()
    }

    /// The TLS ports as `rediss://` seed nodes.
    pub fn tls_seeds(&self) -> Vec<String> {
        self.tls_ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}/0"))
            .collect()
    }

    pub fn info(&self, port: u16) -> String {
        redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
            .unwrap_or_default()
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|port| {
                redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c))
                    .is_ok_and(|role| matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master"))
            })
            .collect()
    }

    /// Whether every live node reports the cluster ok and sees every dead node as failed.
    pub fn settled(&self) -> bool {
        let live: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.children)
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect();
        live.iter().all(|port| {
            let ok = self.info(*port).contains("cluster_state:ok");
            let nodes = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut c))
                .unwrap_or_default();
            let dead_marked = nodes.lines().all(|line| {
                let address_port = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|a| a.split('@').next())
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok());
                match address_port {
                    Some(p) if !live.contains(&p) => {
                        line.contains("fail") && !line.contains("fail?")
                    }
                    _ => true,
                }
            });
            ok && dead_marked
        })
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key of every live master, with its node.
    pub fn keys_by_master(&self) -> Vec<(u16, String)> {
        let mut all = Vec::new();
        for port in self.masters() {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
            all.extend(keys.into_iter().map(|k| (port, k)));
        }
        all
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
