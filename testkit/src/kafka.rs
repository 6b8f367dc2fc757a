//! A private Kafka-protocol broker: `tansu` with in-memory storage on a free
//! loopback port (ops/services.sh installs it), and a producer for it.
//!
//! A secured one ([`KafkaBroker::start_secured`]) is the PostgreSQL-storage
//! tansu (the only engine with SCRAM users, and it joins groups at once),
//! on a database of its own, optionally demanding SCRAM, optionally behind
//! stunnel: tansu 0.6.0 builds a TLS acceptor but never uses it, so TLS is
//! stunnel's, with tansu advertising stunnel's port. What that tests is the
//! client side of TLS (CA check, client certificate) against a real TLS
//! server with a real Kafka broker behind it, not tansu's TLS.

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::process::ChildProcess;
use crate::{free_port, make_certs, port_open, unique, wait_until, ServerCert, TcpProxy};

/// A test-owned `tansu broker` on 127.0.0.1; its data lives in memory (or
/// in its own PostgreSQL database, when secured) and goes with it.
pub struct KafkaBroker {
    /// Where it listens.
    port: u16,
    /// What it tells clients to connect to: `port`, or a proxy or stunnel
    /// in front of it.
    advertised: u16,
    dir: PathBuf,
    security: KafkaSecurity,
    /// The PostgreSQL database of a secured broker, dropped after it.
    database: Option<String>,
    /// tansu, and stunnel if any; killed before the database is dropped.
    processes: Vec<ChildProcess>,
}

/// What a broker from [`KafkaBroker::start_secured`] demands of clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaSecurity {
    /// TLS (stunnel in front of tansu), with a server certificate for
    /// 127.0.0.1 signed by [`KafkaBroker::ca_file`].
    pub tls: bool,
    /// With `tls`: stunnel also demands a client certificate signed by that
    /// CA ([`KafkaBroker::client_cert`]).
    pub mutual_tls: bool,
    /// SCRAM-SHA-256 and SCRAM-SHA-512 authentication of
    /// [`KafkaBroker::SCRAM_USER`] with [`KafkaBroker::SCRAM_PASSWORD`].
    pub scram: bool,
}

/// The tansu binary: `$TANSU`, else `tansu` on the PATH.
fn tansu() -> String {
    std::env::var("TANSU").unwrap_or_else(|_| "tansu".to_owned())
}

/// The tansu built with PostgreSQL storage: `$TANSU_POSTGRES`, else where
/// ops/services.sh installs it.
fn tansu_postgres() -> String {
    std::env::var("TANSU_POSTGRES")
        .unwrap_or_else(|_| "/opt/co2-telemetry/tansu-postgres/bin/tansu".to_owned())
}

/// The cluster name tansu registers itself under (its `--cluster-id` default),
/// which its SCRAM credentials hang off.
const TANSU_CLUSTER: &str = "tansu_cluster";

impl KafkaBroker {
    /// Starts a broker on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        Self::start_on(port, port).await
    }

    /// Starts a broker behind a [`TcpProxy`] that every client goes
    /// through (bootstrap and advertised address alike): cutting the proxy
    /// makes the broker unreachable without losing its in-memory data.
    pub async fn start_behind_proxy() -> anyhow::Result<(Self, TcpProxy)> {
        let port = free_port()?;
        let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let broker = Self::start_on(port, proxy.port()).await?;
        Ok((broker, proxy))
    }

    async fn start_on(port: u16, advertised: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("co2-kafka"));
        std::fs::create_dir_all(&dir)?;
        let mut command = std::process::Command::new(tansu());
        // Both listener and advertised address: the default listens on 0.0.0.0.
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .current_dir(&dir);
        let process = ChildProcess::spawn(command, &dir.join("tansu.log"))
            .context("cannot start tansu (run ops/services.sh, or set TANSU to its path)")?;
        if !wait_until(Duration::from_secs(10), || port_open(port)).await {
            bail!(
                "tansu did not listen on {port} within 10 s; see {}",
                dir.join("tansu.log").display()
            );
        }
        Ok(Self {
            port,
            advertised,
            dir,
            security: KafkaSecurity::default(),
            database: None,
            processes: vec![process],
        })
    }

    /// The user a broker with [`KafkaSecurity::scram`] knows.
    pub const SCRAM_USER: &'static str = "co2-bridge";
    /// That user's password.
    pub const SCRAM_PASSWORD: &'static str = "kafka-test-secret";

    /// Starts a broker that demands what `security` says, on free ports:
    /// tansu on PostgreSQL storage (a fresh database on 127.0.0.1:5432),
    /// behind stunnel when `security.tls`.
    pub async fn start_secured(security: KafkaSecurity) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("co2-kafka"));
        std::fs::create_dir_all(&dir)?;
        if security.tls {
            // The client certificate is signed like a server one: stunnel
            // checks only the chain (no extendedKeyUsage is set).
            make_certs(
                &dir,
                &[
                    ServerCert {
                        name: "server",
                        days: 2,
                        san: "IP:127.0.0.1",
                    },
                    ServerCert {
                        name: "client",
                        days: 2,
                        san: "DNS:co2-bridge",
                    },
                ],
            )?;
        }
        let database = unique("co2_tansu");
        psql("postgres", &format!("CREATE DATABASE {database}"))?;
        let mut broker = Self {
            port: free_port()?,
            advertised: 0,
            dir,
            security,
            database: Some(database.clone()),
            processes: Vec::new(),
        };
        psql(&database, include_str!("tansu-postgres-schema.sql"))?;
        if security.scram {
            psql(
                &database,
                &scram_credentials_sql(TANSU_CLUSTER, Self::SCRAM_USER, Self::SCRAM_PASSWORD),
            )?;
        }
        broker.advertised = if security.tls {
            free_port()?
        } else {
            broker.port
        };
        let mut command = Command::new(tansu_postgres());
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", broker.advertised))
            .arg("--storage-engine")
            .arg(format!(
                "postgres://postgres@127.0.0.1:5432/{database}?sslmode=disable"
            ))
            .current_dir(&broker.dir);
        if security.scram {
            command.arg("--authentication");
        }
        let log = broker.dir.join("tansu.log");
        broker
            .processes
            .push(ChildProcess::spawn(command, &log).context(
                "cannot start the PostgreSQL tansu (run ops/services.sh, or set TANSU_POSTGRES)",
            )?);
        if security.tls {
            let conf = broker.stunnel_conf()?;
            let command = {
                let mut c = Command::new("stunnel4");
                c.arg(conf);
                c
            };
            broker.processes.push(
                ChildProcess::spawn(command, &broker.dir.join("stunnel.out"))
                    .context("cannot start stunnel4 (run ops/services.sh)")?,
            );
        }
        for port in [broker.port, broker.advertised] {
            if !wait_until(Duration::from_secs(10), || port_open(port)).await {
                bail!(
                    "nothing listens on {port} within 10 s; see {}",
                    broker.dir.display()
                );
            }
        }
        Ok(broker)
    }

    /// Writes stunnel's configuration: TLS on `advertised`, plain TCP to
    /// tansu, and a client certificate demanded with `mutual_tls`.
    fn stunnel_conf(&self) -> anyhow::Result<PathBuf> {
        let d = &self.dir;
        let mut conf = format!(
            "foreground = yes\npid =\noutput = {log}\ndebug = info\n\
             [kafka]\naccept = 127.0.0.1:{tls}\nconnect = 127.0.0.1:{plain}\n\
             cert = {cert}\nkey = {key}\nsslVersionMin = TLSv1.2\n",
            log = d.join("stunnel.log").display(),
            tls = self.advertised,
            plain = self.port,
            cert = d.join("server.crt").display(),
            key = d.join("server.key").display(),
        );
        if self.security.mutual_tls {
            conf.push_str(&format!(
                "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                d.join("ca.crt").display()
            ));
        }
        let path = d.join("stunnel.conf");
        std::fs::write(&path, conf)?;
        Ok(path)
    }

    /// The CA that signed a TLS broker's certificate (and the client's).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA that signed nothing here: a client trusting it must refuse the broker.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The client certificate and key a mutual-TLS broker accepts.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.crt"), self.dir.join("client.key"))
    }

    /// The directory holding the broker's files (certificates, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// librdkafka settings for the test kit's own clients: the bootstrap
    /// address and whatever the broker demands (SCRAM-SHA-256 for SCRAM).
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        let s = self.security;
        let protocol = match (s.tls, s.scram) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if s.tls {
            config.set("ssl.ca.location", self.ca_file().to_string_lossy());
        }
        if s.tls && s.mutual_tls {
            let (cert, key) = self.client_cert();
            config
                .set("ssl.certificate.location", cert.to_string_lossy())
                .set("ssl.key.location", key.to_string_lossy());
        }
        if s.scram {
            config
                .set("sasl.mechanism", "SCRAM-SHA-256")
                .set("sasl.username", Self::SCRAM_USER)
                .set("sasl.password", Self::SCRAM_PASSWORD);
        }
        config
    }

    /// `127.0.0.1:<port>`, for `bootstrap_servers` (the proxy's or
    /// stunnel's, if any).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        if self.security.scram {
            return self.create_topic_authenticated(topic, partitions).await;
        }
        let status = tokio::process::Command::new(tansu())
            .args(["topic", "create", topic, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .status()
            .await
            .context("cannot run tansu topic create")?;
        if !status.success() {
            bail!("tansu topic create {topic} failed: {status}");
        }
        Ok(())
    }

    /// Creates a topic through the Kafka admin API: tansu's command line
    /// speaks no SASL, and an authenticating tansu refuses it.
    async fn create_topic_authenticated(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let partitions = i32::try_from(partitions).context("too many partitions")?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .with_context(|| format!("cannot create topic {topic}"))?;
        for result in results {
            if let Err((name, code)) = result {
                bail!("creating topic {name} failed: {code}");
            }
        }
        Ok(())
    }

    /// A producer that waits for the broker's acknowledgement of every record.
    pub fn producer(&self) -> anyhow::Result<KafkaProducer> {
        let inner: FutureProducer = self
            .client_config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()?;
        Ok(KafkaProducer { inner })
    }

    /// The offsets `group` has committed for partitions `0..partitions` of
    /// `topic` (-1 where it has none), read without joining the group.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        Ok((0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect())
    }

    /// The end offset of each partition `0..partitions` of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = self.client_config().create()?;
        (0..partitions)
            .map(|p| {
                let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                Ok(high)
            })
            .collect()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        // tansu first: PostgreSQL drops no database that has connections.
        self.processes.clear();
        // Kept when the test panics, like a test's MySQL database, for a post-mortem.
        if !std::thread::panicking() {
            if let Some(database) = &self.database {
                let _ = psql("postgres", &format!("DROP DATABASE IF EXISTS {database}"));
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `sql` in `database` on the local PostgreSQL as `postgres` (trusted
/// on loopback, ops/services.sh), stopping at the first error.
fn psql(database: &str, sql: &str) -> anyhow::Result<()> {
    let mut child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-w", "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run psql (run ops/services.sh)")?;
    child
        .stdin
        .take()
        .context("psql has no stdin")?
        .write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "psql -d {database} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// SQL that stores `user`'s SCRAM-SHA-256 and SCRAM-SHA-512 credentials the
/// way tansu's AlterUserScramCredentials handler does (RFC 5802: StoredKey =
/// H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword,
/// "Server Key"); mechanism 1 is SHA-256, 2 SHA-512). Written into the
/// database before tansu starts because an authenticating tansu lets no one
/// in to create the first user. The cluster row is made too: tansu
/// registers itself by name on start and keeps a row that is there.
fn scram_credentials_sql(cluster: &str, user: &str, password: &str) -> String {
    use ring::{digest, hmac, pbkdf2};
    // 4096, the iteration count Kafka's tooling uses by default.
    const ITERATIONS: NonZeroU32 = NonZeroU32::MIN.saturating_add(4095);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = format!(
        "BEGIN;\nINSERT INTO cluster (name) VALUES ({}) ON CONFLICT (name) DO NOTHING;\n",
        quote(cluster)
    );
    let mechanisms = [
        (
            1,
            pbkdf2::PBKDF2_HMAC_SHA256,
            hmac::HMAC_SHA256,
            &digest::SHA256,
        ),
        (
            2,
            pbkdf2::PBKDF2_HMAC_SHA512,
            hmac::HMAC_SHA512,
            &digest::SHA512,
        ),
    ];
    for (code, kdf, mac, hash) in mechanisms {
        let salt: [u8; 32] = rand::random();
        let mut salted = vec![0; hash.output_len()];
        pbkdf2::derive(kdf, ITERATIONS, &salt, password.as_bytes(), &mut salted);
        let key = hmac::Key::new(mac, &salted);
        let stored_key = digest::digest(hash, hmac::sign(&key, b"Client Key").as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        sql.push_str(&format!(
            "INSERT INTO scram_credential \
             (cluster, username, mechanism, salt, iterations, stored_key, server_key) \
             SELECT id, {user}, {code}, '\\x{salt}', {iterations}, '\\x{stored}', '\\x{server}' \
             FROM cluster WHERE name = {cluster};\n",
            user = quote(user),
            iterations = ITERATIONS.get(),
            salt = hex(&salt),
            stored = hex(stored_key.as_ref()),
            server = hex(server_key.as_ref()),
            cluster = quote(cluster),
        ));
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// Produces records to a [`KafkaBroker`].
pub struct KafkaProducer {
    inner: FutureProducer,
}

impl KafkaProducer {
    /// Sends one record (to `partition`, else by key) and waits for the
    /// broker's acknowledgement; returns its partition and offset.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        payload: &[u8],
    ) -> anyhow::Result<(i32, i64)> {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivered = self
            .inner
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce to {topic} failed: {e}"))?;
        Ok((delivered.partition, delivered.offset))
    }
}
