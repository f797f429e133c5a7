//! A throwaway `redis-server` on a free loopback port, stopped when dropped.
//!
//! Tests start one each, so they run in parallel and need nothing pre-started; the demo
//! starts one when no Redis answers. It keeps nothing on disk (`--save ""`,
//! `--appendonly no`). Starting and restarting are async: waiting for the server never
//! blocks a runtime thread.

use std::io;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{connect, free_port};

/// How long a started server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// The server's own directory, removed on drop, never the test's: a replica writes
    /// the snapshot it syncs there (`dump.rdb`), which every server started later in
    /// the same directory would load. With persistence the append-only file lives there
    /// too, fsynced on every write, so even a killed server comes back with all its data.
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(false).await
    }

    /// Like [`RedisServer::start`], but the data survives [`RedisServer::restart`]: an
    /// outage rather than a loss.
    pub async fn start_persistent() -> io::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> io::Result<Self> {
        let mut last_error = None;
        // A port found free can be taken by another process before redis binds it.
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::Builder::new()
                .prefix(&format!("cache-layer-redis-{port}-"))
                .tempdir()?;
            let mut server = Self {
                port,
                child: None,
                dir,
                persistent,
            };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, or with its data when persistent.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment after the kill.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn spawn(&mut self) -> io::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            // DEBUG SLEEP plays a Redis that hangs.
            .args(["--enable-debug-command", "local"]);
        command.arg("--dir").arg(self.dir.path());
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            // Empty at every start, even after it synced a snapshot as a replica.
            let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
            command.args(["--appendonly", "no"]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run redis-server ({e}); install it with `apt-get install redis-server`"),
                )
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited with {status}",
                    self.port
                )));
            }
            if ping(self.port).await {
                self.child = Some(child);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("redis-server on port {} did not answer PING", self.port),
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something on the port answers a Redis PING within half a second.
pub async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<_, io::Error>(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), exchange).await,
        Ok(Ok(true))
    )
}

/// `CONFIG SET name value`.
pub fn config_set(redis: &RedisServer, name: &str, value: impl redis::ToRedisArgs) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .exec(&mut connect(redis))
        .unwrap();
}

/// A numeric field of an `INFO` section (`used_memory:`, say); 0 when it is absent.
pub fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut connect(redis))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Makes Redis hang for `secs` (`DEBUG SLEEP`); the task ends when Redis answers again.
pub fn hang(redis: &RedisServer, secs: u64) -> tokio::task::JoinHandle<()> {
    let url = redis.url();
    tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(secs)
            .exec(&mut conn)
            .unwrap();
    })
}
