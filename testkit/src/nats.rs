//! A private NATS cluster with JetStream and the MQTT listener on every node
//! (`nats-server`, MQTT 3.1.1 only in 2.9), for drills that kill a node.
//!
//! NATS keeps MQTT sessions, retained messages and unacknowledged QoS 1
//! messages in JetStream streams; `mqtt.stream_replicas` makes the cluster
//! replicate them, which is what lets a client resume its session on another
//! node.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::ChildProcess;
use crate::{free_port, http_get, port_open, unique, wait_until};

struct Node {
    mqtt: u16,
    monitor: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<ChildProcess>,
}

/// A test-owned NATS cluster; every node is killed when it is dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `size` nodes whose MQTT streams keep `size` replicas; returns
    /// once every node's JetStream reports healthy.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("co2-nats"));
        std::fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push([free_port()?, free_port()?, free_port()?, free_port()?]);
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p[1]))
            .collect();
        let mut nodes = Vec::new();
        for (n, [client, cluster, mqtt, monitor]) in ports.iter().copied().enumerate() {
            let store = dir.join(format!("js{n}"));
            let config = format!(
                "server_name: node{n}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: co2t\n  listen: 127.0.0.1:{cluster}\n  routes: [{routes}]\n}}\n\
                 mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: {size}\n}}\n",
                store = store.display(),
                routes = routes.join(", "),
            );
            let path = dir.join(format!("node{n}.conf"));
            std::fs::write(&path, config)?;
            nodes.push(Node {
                mqtt,
                monitor,
                config: path,
                log: dir.join(format!("node{n}.log")),
                process: None,
            });
        }
        let mut cluster = Self { nodes, dir };
        for n in 0..size {
            cluster.launch(n)?;
        }
        for n in 0..size {
            cluster.wait_healthy(n, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    /// The MQTT port of node `n`.
    pub fn mqtt_port(&self, n: usize) -> u16 {
        self.nodes.get(n).map_or(0, |node| node.mqtt)
    }

    /// `host:port` of every node's MQTT listener, for `mqtt.hosts`.
    pub fn mqtt_hosts(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.mqtt))
            .collect()
    }

    /// SIGKILLs node `n`.
    pub async fn kill(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(mut process) = self.nodes.get_mut(n).and_then(|node| node.process.take()) {
            process.kill().await?;
        }
        Ok(())
    }

    /// Starts node `n` again with its data; returns once it is healthy.
    pub async fn restart(&mut self, n: usize) -> anyhow::Result<()> {
        self.launch(n)?;
        self.wait_healthy(n, Duration::from_secs(60)).await
    }

    fn launch(&mut self, n: usize) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get_mut(n)
            .with_context(|| format!("no NATS node {n}"))?;
        let mut command = Command::new("nats-server");
        command.arg("-c").arg(&node.config);
        node.process = Some(
            ChildProcess::spawn(command, &node.log)
                .context("cannot start nats-server (is the nats-server package installed?)")?,
        );
        Ok(())
    }

    async fn wait_healthy(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get(n)
            .with_context(|| format!("no NATS node {n}"))?;
        let (mqtt, monitor) = (node.mqtt, node.monitor);
        let healthy = wait_until(timeout, || async move {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], monitor));
            port_open(mqtt).await && matches!(http_get(addr, "/healthz").await, Ok((200, _)))
        })
        .await;
        if !healthy {
            bail!(
                "NATS node {n} is not healthy after {timeout:?}; see {}",
                node.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                process.kill_now();
            }
        }
        if std::thread::panicking() {
            eprintln!("test failed: keeping {} for inspection", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
