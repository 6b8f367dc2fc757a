//! A TCP proxy a test can cut: existing connections drop and new ones are
//! refused until it is restored, like a database host dropping off the network.
//! Or stall: existing connections stay open but carry nothing more, either
//! way, while new ones work — a half-open connection behind a NAT that forgot
//! it, which neither end notices until it times out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Forwards 127.0.0.1:`port()` to an upstream address.
pub struct TcpProxy {
    port: u16,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Bumped by [`TcpProxy::stall`]: a connection accepted under an older
    /// value forwards nothing more.
    stalls: watch::Sender<u64>,
}

impl TcpProxy {
    /// Starts forwarding a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let proxy = Self {
            port,
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
            stalls: watch::Sender::new(0),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }

    /// Freezes every open connection: both sockets stay open, nothing more
    /// is forwarded on them. Connections made afterwards are forwarded.
    pub fn stall(&self) {
        self.stalls.send_modify(|n| *n += 1);
    }

    /// Accepts connections again on the same port.
    pub async fn restore(&self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("cannot re-bind proxy port {}", self.port))?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let tasks = self.tasks.clone();
        let stalls = self.stalls.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut stalled = stalls.subscribe();
                let born = *stalled.borrow_and_update();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let stall = async {
                            let _ = stalled.wait_for(|n| *n != born).await;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = stall => {}
                        }
                        // Hold both sockets open, unread, until cut or dropped.
                        std::future::pending::<()>().await;
                    }
                });
                if let Ok(mut list) = tasks.lock() {
                    list.retain(|t| !t.is_finished());
                    list.push(pipe.abort_handle());
                }
            }
        });
        if let Ok(mut list) = self.tasks.lock() {
            list.push(accept.abort_handle());
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
