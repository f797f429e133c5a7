//! tansu, a Kafka-compatible broker in Rust, as a separate process on loopback, with what
//! librdkafka's mock cluster lacks: SASL authentication, and a TLS listener through
//! `stunnel` in front of it (tansu 0.6's own `--cert` and `--key` cannot be given
//! together), with tansu advertising the TLS address. The test command installs both.
//! A broker in a process of its own also shows what the in-process mock hides: the fault
//! tests of `tests/it/resume.rs` run the daemon against it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::process::{Child, Command};

use crate::kafka::{Broker, DEAD_LETTER, TRENDS, USERS, WINDOWS};
use crate::{free_port, wait_until};

/// tansu with the three source topics, the dead-letter topic, and the test clients on it.
pub struct TansuKafka {
    pub tansu: Tansu,
    broker: Broker,
}

impl TansuKafka {
    /// A plain broker with the source topics of `partitions` partitions each, and a
    /// dead-letter topic of one.
    pub async fn start(partitions: i32) -> Self {
        let tansu = Tansu::start(None, false).await;
        tansu
            .create_topics(&[TRENDS, USERS, WINDOWS], partitions, &[])
            .await;
        tansu.create_topics(&[DEAD_LETTER], 1, &[]).await;
        Self {
            broker: tansu.broker(partitions),
            tansu,
        }
    }
}

impl std::ops::Deref for TansuKafka {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

pub struct Tansu {
    broker: Child,
    _stunnel: Option<Child>,
    /// The port clients reach: stunnel's with TLS, tansu's without.
    port: u16,
    _dir: tempfile::TempDir,
}

fn spawn(mut command: Command, what: &str) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(what)
}

impl Tansu {
    /// Starts a broker with memory storage on a free port. With `tls`, a directory of
    /// [`crate::certs::certificates`], it listens over TLS only, with `server.pem`; with
    /// `authentication` every client must authenticate with SASL.
    pub async fn start(tls: Option<&Path>, authentication: bool) -> Self {
        let dir = tempfile::tempdir().expect("a directory");
        let plain = free_port();
        let port = if tls.is_some() { free_port() } else { plain };
        let mut command = Command::new("tansu");
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{plain}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .args(["--storage-engine", "memory://tansu/"])
            .arg("--silent");
        if authentication {
            command.arg("--authentication");
        }
        let broker = spawn(
            command,
            "tansu runs (scripts/test.sh installs it with cargo install)",
        );
        let stunnel = tls.map(|certs| {
            let (cert, key) = (certs.join("server.pem"), certs.join("server.key"));
            let config = dir.path().join("stunnel.conf");
            std::fs::write(
                &config,
                format!(
                    "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{port}\n\
                     connect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
                    cert.display(),
                    key.display()
                ),
            )
            .expect("stunnel configuration written");
            let mut command = Command::new("stunnel4");
            command.arg(&config);
            spawn(
                command,
                "stunnel4 runs (scripts/test.sh installs it with apt-get)",
            )
        });
        for listening in [plain, port] {
            wait_until(Duration::from_secs(30), "the broker to listen", || async {
                tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, listening))
                    .await
                    .is_ok()
            })
            .await;
        }
        Self {
            broker,
            _stunnel: stunnel,
            port,
            _dir: dir,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker's process (SIGSTOP): its connections stay open and every request
    /// goes unanswered, as with a broker that hangs.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        let pid = self.broker.id().expect("tansu runs");
        kill(Pid::from_raw(pid as i32), signal).expect("tansu takes the signal");
    }

    /// A client configuration for this broker with these extra properties (security).
    pub fn client(&self, properties: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        for (name, value) in properties {
            config.set(*name, *value);
        }
        config
    }

    /// The test clients of [`Broker`] on this broker, without security, for topics of
    /// `partitions` partitions.
    pub fn broker(&self, partitions: i32) -> Broker {
        Broker::new(&self.bootstrap(), partitions)
    }

    /// Creates topics with `partitions` each, connecting with `properties`.
    pub async fn create_topics(
        &self,
        topics: &[&str],
        partitions: i32,
        properties: &[(&str, &str)],
    ) {
        let admin: AdminClient<_> = self.client(properties).create().expect("admin client");
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("topics created")
        {
            result.expect("topic created");
        }
    }

    /// Produces (key, payload) records, connecting with `properties`.
    pub async fn produce(
        &self,
        topic: &str,
        records: &[(String, String)],
        properties: &[(&str, &str)],
    ) {
        let producer: FutureProducer = self
            .client(properties)
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer");
        for (key, payload) in records {
            producer
                .send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }
}
