//! A private three-node MariaDB Galera cluster on 127.0.0.1 (Debian's
//! `galera-4` and `rsync`), for drills that kill a node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

use crate::process::ChildProcess;
use crate::{free_port, port_open, unique, wait_until};

/// The wsrep provider library of Debian's `galera-4`.
const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";
/// The account the tests (and the bridge) use over TCP; the data
/// directory's `root` may only log in over the socket.
const USER: &str = "co2t";

/// One node: its ports, directory and process.
struct Node {
    port: u16,
    dir: PathBuf,
    process: Option<ChildProcess>,
}

/// A test-owned Galera cluster; every node is killed when it is dropped.
pub struct GaleraCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// Keep the directory (logs) when dropped: a start that failed.
    keep: bool,
}

impl GaleraCluster {
    /// Starts `size` nodes: the first bootstraps the cluster, the others join
    /// it by state transfer. Returns once every node reports the full cluster
    /// size and is synced (about 20 s for three nodes here).
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        if !Path::new(PROVIDER).exists() {
            bail!("{PROVIDER} is missing: install galera-4 and rsync (ops/services.sh does)");
        }
        let dir = std::env::temp_dir().join(unique("co2-galera"));
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push([free_port()?, free_port()?, free_port()?, free_port()?]);
        }
        let gcomm: Vec<String> = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p[1]))
            .collect();
        let mut nodes = Vec::new();
        for (n, [port, group, ist, sst]) in ports.iter().copied().enumerate() {
            let node_dir = dir.join(format!("node{n}"));
            std::fs::create_dir_all(node_dir.join("data"))?;
            let config = format!(
                "[mariadbd]\n\
                 datadir={d}/data\nsocket={d}/sock\npid-file={d}/pid\nlog-error={d}/error.log\n\
                 port={port}\nbind-address=127.0.0.1\nskip-name-resolve\n\
                 innodb_buffer_pool_size=32M\ninnodb_log_file_size=16M\n\
                 wsrep_on=ON\nwsrep_provider={PROVIDER}\nwsrep_cluster_name={name}\n\
                 wsrep_node_name=node{n}\nwsrep_node_address=127.0.0.1:{group}\n\
                 wsrep_cluster_address=gcomm://{gcomm}\n\
                 wsrep_provider_options=\"gmcast.listen_addr=tcp://127.0.0.1:{group};ist.recv_addr=127.0.0.1:{ist}\"\n\
                 wsrep_sst_receive_address=127.0.0.1:{sst}\nwsrep_sst_method=rsync\n\
                 binlog_format=ROW\ninnodb_autoinc_lock_mode=2\ndefault_storage_engine=InnoDB\n",
                d = node_dir.display(),
                name = dir.file_name().and_then(|f| f.to_str()).unwrap_or("co2t"),
                gcomm = gcomm.join(","),
            );
            std::fs::write(node_dir.join("my.cnf"), config)?;
            hand_over(&node_dir)?;
            nodes.push(Node {
                port,
                dir: node_dir,
                process: None,
            });
        }
        let mut cluster = Self {
            nodes,
            dir,
            keep: true,
        };
        cluster.install(0)?;
        cluster.launch(0, true)?;
        cluster.wait_serving(0, Duration::from_secs(60)).await?;
        // The port opens before the node is primary (1047 until then).
        let mut created = cluster.create_account();
        for _ in 0..120 {
            if created.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            created = cluster.create_account();
        }
        created?;
        for n in 1..size {
            cluster.install(n)?;
            cluster.launch(n, false)?;
        }
        for n in 0..size {
            cluster.wait_serving(n, Duration::from_secs(90)).await?;
        }
        let want = size as i64;
        for n in 0..size {
            let pool = cluster.pool(n, "mysql").await?;
            let joined = wait_until(Duration::from_secs(60), || {
                let pool = pool.clone();
                async move { status(&pool, "wsrep_cluster_size").await == Some(want) }
            })
            .await;
            pool.close().await;
            if !joined {
                bail!(
                    "node {n} never saw {size} nodes; see {}",
                    cluster.dir.display()
                );
            }
        }
        cluster.keep = false;
        Ok(cluster)
    }

    /// The MySQL port of node `n`.
    pub fn port(&self, n: usize) -> u16 {
        self.nodes.get(n).map_or(0, |node| node.port)
    }

    /// `host:port` of every node, for `database.hosts`.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// A URL of node `n` and `database`, as the test account.
    pub fn url(&self, n: usize, database: &str) -> String {
        format!("mysql://{USER}@127.0.0.1:{}/{database}", self.port(n))
    }

    /// A small pool on node `n` and `database`, for assertions.
    pub async fn pool(&self, n: usize, database: &str) -> anyhow::Result<MySqlPool> {
        MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&self.url(n, database))
            .await
            .with_context(|| format!("cannot reach Galera node {n}"))
    }

    /// Creates `database` (replicated to every node).
    pub async fn create_database(&self, database: &str) -> anyhow::Result<()> {
        let pool = self.pool(0, "mysql").await?;
        sqlx::query(&format!("CREATE DATABASE `{database}`"))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }

    /// SIGKILLs node `n`: no shutdown, no goodbye to the cluster.
    pub async fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(mut process) = self.nodes.get_mut(n).and_then(|node| node.process.take()) {
            process.kill().await?;
        }
        Ok(())
    }

    /// The wsrep status variable `name` of node `n`, as a number.
    pub async fn status(&self, n: usize, name: &str) -> Option<i64> {
        let pool = self.pool(n, "mysql").await.ok()?;
        let value = status(&pool, name).await;
        pool.close().await;
        value
    }

    fn install(&self, n: usize) -> anyhow::Result<()> {
        let node = self.node(n)?;
        let mut command = Command::new("mariadb-install-db");
        command
            .arg(format!(
                "--defaults-file={}",
                node.dir.join("my.cnf").display()
            ))
            .arg("--auth-root-authentication-method=socket")
            .args(run_as());
        let out = command
            .output()
            .context("cannot run mariadb-install-db (is mariadb-server installed?)")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed for node {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn launch(&mut self, n: usize, bootstrap: bool) -> anyhow::Result<()> {
        let node = self.node(n)?;
        let mut command = Command::new("mariadbd");
        command
            .arg(format!(
                "--defaults-file={}",
                node.dir.join("my.cnf").display()
            ))
            .args(run_as());
        if bootstrap {
            command.arg("--wsrep-new-cluster");
        }
        let log = node.dir.join("stdout.log");
        let process = ChildProcess::spawn(command, &log).context("cannot start mariadbd")?;
        if let Some(node) = self.nodes.get_mut(n) {
            node.process = Some(process);
        }
        Ok(())
    }

    async fn wait_serving(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let node = self.node(n)?;
        let port = node.port;
        if !wait_until(timeout, || port_open(port)).await {
            bail!(
                "Galera node {n} did not listen on {port}; see {}",
                node.dir.join("error.log").display()
            );
        }
        Ok(())
    }

    fn create_account(&self) -> anyhow::Result<()> {
        let node = self.node(0)?;
        let sql = format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY ''; \
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;"
        );
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", node.dir.join("sock").display()))
            .args(["-uroot", "-e", &sql])
            .output()
            .context("cannot run the mariadb client")?;
        if !out.status.success() {
            bail!(
                "cannot create the test account: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn node(&self, n: usize) -> anyhow::Result<&Node> {
        self.nodes
            .get(n)
            .with_context(|| format!("no Galera node {n}"))
    }
}

/// As root, the nodes run as `mysql` (their directories are handed to it):
/// as root, the rsync daemon that receives a state transfer drops its
/// privileges and cannot write a root-owned data directory.
fn run_as() -> Vec<String> {
    if nix::unistd::geteuid().is_root() {
        vec!["--user=mysql".to_owned()]
    } else {
        Vec::new()
    }
}

/// Hands `dir` to the `mysql` user when running as root (see [`run_as`]).
fn hand_over(dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(dir)
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!("chown -R mysql:mysql {} failed", dir.display());
    }
    Ok(())
}

async fn status(pool: &MySqlPool, name: &str) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(
        "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = UPPER(?)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                process.kill_now();
            }
        }
        if self.keep || std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
