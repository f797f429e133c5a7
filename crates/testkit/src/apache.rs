//! Apache Kafka, the broker users run, as its own JVM process on loopback: one KRaft node,
//! broker and controller combined.
//!
//! Its jars come from Maven Central through Maven (`org.apache.kafka:kafka_2.13` and its
//! runtime dependencies), fetched once into `~/.cache/cache-layer/kafka-<version>/` and
//! never into the repository. [`VERSION`] is the one place the version is pinned.
//!
//! A broker stops on drop. Tests that only need a broker share the one `scripts/test.sh`
//! starts (its address in [`SHARED_ENV`]), each with topics and a group of its own
//! ([`crate::kafka::TestKafka`]); tests that stop, freeze or kill a broker start their own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio::process::{Child, Command};

use crate::free_port;

/// The Apache Kafka release the tests and the benchmark run: the newest 4.x that Maven
/// Central serves with its dependencies.
pub const VERSION: &str = "4.4.0";

/// The variable that names a running broker's bootstrap address for the tests to share
/// (set by `scripts/test.sh`); without it, each test starts a broker of its own.
pub const SHARED_ENV: &str = "CACHE_LAYER_TEST_KAFKA";

/// Every test node's cluster id (a node formats a cluster of its own, so one id serves).
const CLUSTER_ID: &str = "qyAQWvI6QeGVuBz5L9z3hQ";

/// How long a broker may take to start: the JVM, the storage format, the controller's
/// election and the first metadata, on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A SCRAM user the secured broker knows, for the SASL tests (PLAIN knows it too).
pub const SASL_USER: (&str, &str) = ("cache-layer", "cache-layer-secret");

/// The listeners clients reach, beside the controller's.
#[derive(Debug, Clone, Default)]
pub enum Listener {
    /// PLAINTEXT only.
    #[default]
    Plain,
    /// PLAINTEXT, and with the certificates of [`crate::certs::certificates`] in this
    /// directory an SSL listener and a SASL_SSL one offering PLAIN, SCRAM-SHA-256 and
    /// SCRAM-SHA-512, each knowing [`SASL_USER`].
    Secured(PathBuf),
}

/// One Apache Kafka node in a JVM of its own, with its storage in a directory of its own.
pub struct ApacheKafka {
    child: Option<Child>,
    /// The PLAINTEXT listener, for the tests' own clients and the broker's own traffic.
    port: u16,
    /// The SSL and SASL_SSL listeners of a secured broker.
    secured: Option<(u16, u16)>,
    dir: tempfile::TempDir,
}

impl ApacheKafka {
    /// A plain broker on free loopback ports. It fails naming why: no java, Maven failed,
    /// a port taken (retried on other ports), or what the broker logged before it exited.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&Listener::Plain).await
    }

    /// A broker with these listeners.
    pub async fn start_with(listener: &Listener) -> anyhow::Result<Self> {
        let libs = fetch().await?;
        let mut last = None;
        // A free port can be taken again between our look and the broker's bind.
        for _ in 0..3 {
            match Self::start_once(&libs, listener).await {
                Ok(kafka) => return Ok(kafka),
                Err(e) if format!("{e:#}").contains("Address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last
            .expect("tried")
            .context("every try found its port taken"))
    }

    async fn start_once(libs: &Path, listener: &Listener) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("apache-kafka-")
            .tempdir()
            .context("a directory for the broker")?;
        let (port, controller) = (free_port(), free_port());
        let secured = match listener {
            Listener::Plain => None,
            Listener::Secured(_) => Some((free_port(), free_port())),
        };
        std::fs::write(
            dir.path().join("server.properties"),
            server_properties(dir.path(), listener, port, secured, controller),
        )?;
        std::fs::write(dir.path().join("log4j2.properties"), LOG4J)?;
        format_storage(libs, dir.path(), listener).await?;
        let mut kafka = Self {
            child: None,
            port,
            secured,
            dir,
        };
        kafka.launch(libs)?;
        kafka.wait_ready().await?;
        Ok(kafka)
    }

    /// Runs `kafka.Kafka` on this node's directory, its log in `kafka.log`.
    fn launch(&mut self, libs: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_path())?;
        let child = java(libs, self.dir.path())
            .args(["kafka.Kafka", "server.properties"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run java (scripts/test.sh installs OpenJDK)")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the broker answers metadata requests with itself as a broker.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()?;
        let client = std::sync::Arc::new(client);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "Apache Kafka exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            let probe = std::sync::Arc::clone(&client);
            let answered = tokio::task::spawn_blocking(move || {
                probe
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok_and(|m| !m.brokers().is_empty())
            })
            .await?;
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Apache Kafka did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The address of the PLAINTEXT listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The address of a secured broker's SSL listener.
    pub fn tls_bootstrap(&self) -> String {
        let (tls, _) = self
            .secured
            .expect("a broker started with Listener::Secured");
        format!("127.0.0.1:{tls}")
    }

    /// The address of a secured broker's SASL_SSL listener.
    pub fn sasl_bootstrap(&self) -> String {
        let (_, sasl) = self
            .secured
            .expect("a broker started with Listener::Secured");
        format!("127.0.0.1:{sasl}")
    }

    /// Stops the JVM (SIGSTOP): its connections stay open and every request goes
    /// unanswered, as with a broker that hangs.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGKILL, and waits for the process to be gone: the broker dies mid-stream, with
    /// nothing flushed or handed over.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_child(&child, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }

    /// Starts a killed broker again on the same ports and storage, and waits until it
    /// answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let libs = fetch().await?;
        self.launch(&libs)?;
        self.wait_ready().await
    }

    /// The JVM's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            self.signal_child(child, signal);
        }
    }

    fn signal_child(&self, child: &Child, signal: Signal) {
        if let Some(pid) = child.id() {
            kill(Pid::from_raw(pid as i32), signal).expect("the broker takes signals");
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    /// The last lines the broker logged (WARN and above), for a failure's message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ApacheKafka {
    /// Kills the JVM and reaps it before its directory goes (a frozen one is thawed
    /// first, as a stopped process dies only once it runs). SIGKILL ends it within
    /// milliseconds, so the wait is brief.
    fn drop(&mut self) {
        self.thaw();
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let pid = Pid::from_raw(pid as i32);
            if kill(pid, Signal::SIGKILL).is_ok() {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
    }
}

/// The settings of a single node, broker and controller combined: replication factors
/// of 1, no delay before a group's first rebalance, a KIP-848 group's session of 6 s with
/// heartbeats every 0.5 s (as the classic tests' quick session), the log cleaner looking
/// every 0.5 s, and few threads for a 2-core machine.
fn server_properties(
    dir: &Path,
    listener: &Listener,
    port: u16,
    secured: Option<(u16, u16)>,
    controller: u16,
) -> String {
    let mut listeners = format!("PLAINTEXT://127.0.0.1:{port}");
    let mut security = String::new();
    if let (Listener::Secured(certs), Some((tls, sasl))) = (listener, secured) {
        write!(
            listeners,
            ",SSL://127.0.0.1:{tls},SASL_SSL://127.0.0.1:{sasl}"
        )
        .expect("a string");
        // PEM stores (KIP-651): the server's key (PKCS#8) and certificate in one file.
        let keystore = dir.join("server-keystore.pem");
        let pem = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap_or_default();
        let _ = std::fs::write(&keystore, pem("server.key") + &pem("server.pem"));
        let (user, password) = SASL_USER;
        let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        write!(
            security,
            "ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=\
             org.apache.kafka.common.security.plain.PlainLoginModule required \
             user_{user}=\"{password}\";\n\
             listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}\n",
            keystore = keystore.display(),
            ca = certs.join("ca.pem").display(),
        )
        .expect("a string");
    }
    format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
         listeners={listeners},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners={listeners}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=\
         CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL\n\
         log.dirs={data}\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=5\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         group.consumer.min.session.timeout.ms=6000\n\
         group.consumer.session.timeout.ms=6000\n\
         group.consumer.min.heartbeat.interval.ms=500\n\
         group.consumer.heartbeat.interval.ms=500\n\
         num.network.threads=2\n\
         num.io.threads=4\n\
         background.threads=4\n\
         log.cleaner.dedupe.buffer.size=16777216\n\
         log.cleaner.backoff.ms=500\n\
         {security}",
        data = dir.join("data").display(),
    )
}

/// The broker's log: WARN and above, to the file its output goes to.
const LOG4J: &str = "status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
";

/// The JVM's heap and collector: a heap fit for a 2-core machine shared with the tests,
/// and the collector settings of Kafka's own start script.
pub const JVM_SETTINGS: &str = "-Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20";

/// `java` with the broker's jars, heap and log configuration, in the node's directory.
fn java(libs: &Path, dir: &Path) -> Command {
    let mut command = Command::new("java");
    command
        .args(JVM_SETTINGS.split(' '))
        .arg("-Djava.awt.headless=true")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// `kafka.tools.StorageTool format --standalone`: a new cluster of this one node, with
/// the SASL user's SCRAM credentials when the listener asks for them.
async fn format_storage(libs: &Path, dir: &Path, listener: &Listener) -> anyhow::Result<()> {
    let mut command = java(libs, dir);
    command.args([
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "--cluster-id",
        CLUSTER_ID,
        "--config",
        "server.properties",
    ]);
    if matches!(listener, Listener::Secured(_)) {
        let (user, password) = SASL_USER;
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            command
                .arg("--add-scram")
                .arg(format!("{mechanism}=[name={user},password={password}]"));
        }
    }
    let output = command
        .output()
        .await
        .context("cannot run java (scripts/test.sh installs OpenJDK)")?;
    if !output.status.success() {
        bail!(
            "formatting the broker's storage failed: {}",
            printed(&output)
        );
    }
    Ok(())
}

/// The directory of the broker's jars, fetched from Maven Central with Maven when missing.
/// A lock on the cache keeps concurrent test processes from fetching it twice.
pub async fn fetch() -> anyhow::Result<PathBuf> {
    tokio::task::spawn_blocking(fetch_blocking).await?
}

fn fetch_blocking() -> anyhow::Result<PathBuf> {
    let home = cache_dir().join(format!("kafka-{VERSION}"));
    let libs = home.join("libs");
    let complete = home.join("complete");
    if complete.exists() {
        return Ok(libs);
    }
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let lock = std::fs::File::create(home.join("lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("cannot lock the Kafka cache")?;
    if complete.exists() {
        return Ok(libs);
    }
    std::fs::write(home.join("pom.xml"), pom())?;
    let _ = std::fs::remove_dir_all(&libs);
    let output = std::process::Command::new("mvn")
        .args([
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
        ])
        .arg(format!("-DoutputDirectory={}", libs.display()))
        .current_dir(&home)
        .output()
        .context("cannot run mvn, which fetches Apache Kafka (scripts/test.sh installs Maven)")?;
    if !output.status.success() {
        bail!(
            "Maven could not fetch org.apache.kafka:kafka_2.13:{VERSION} from Maven Central:\n{}",
            printed(&output)
        );
    }
    std::fs::write(&complete, VERSION)?;
    Ok(libs)
}

/// What a command printed, standard output then standard error, for a failure's message.
fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `$XDG_CACHE_HOME/cache-layer`, or `~/.cache/cache-layer`.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("cache-layer")
}

/// A project whose runtime dependencies are the broker: Kafka's server with the log4j 2
/// binding of its logging (the distribution ships the same).
fn pom() -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cache-layer</groupId>
  <artifactId>apache-kafka</artifactId>
  <version>{VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.25.5</version>
    </dependency>
  </dependencies>
</project>
"#
    )
}

/// The broker the tests share, when `scripts/test.sh` started one: its bootstrap address.
pub fn shared() -> Option<String> {
    std::env::var(SHARED_ENV).ok().filter(|s| !s.is_empty())
}
