//! Raw HTTP bytes in, raw HTTP bytes out, through the bridge's own listeners
//! without a socket: for the HTTP fuzz target and for tests that send what no
//! well-behaved client would.
//!
//! The routers are the ones [`crate::Bridge`] serves, built by the same code
//! from the same settings, and each connection is set up by the same
//! [`connection_builder`]. Two things differ, and only where the fuzz target
//! needs them to: behind ingest, each delivery is decoded and answered at
//! once instead of being batched and stored (the decoders have fuzz targets
//! of their own; here the question is what a request can do to the HTTP
//! layer); and the client's end of the pipe is closed once the request is
//! written, with half-closed connections allowed, so an exchange ends as
//! soon as its answers are written rather than at the idle timeout.

use std::time::Duration;

use axum::Router;
use chrono::Utc;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::app::{Bridge, RunError};
use crate::config::Settings;
use crate::http::server::{connection_builder, Limits};
use crate::model::Record;
use crate::route::Routes;
use crate::source::{Ack, Delivery, HttpOutcome};

/// How long one exchange may take before it counts as a stall. Nothing in
/// it waits on a peer (the client's bytes are all there, the decoder answers
/// at once), so the limit is generous and reaching it is a bug.
const STALL: Duration = Duration::from_secs(10);

/// Why an [`Exchange`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No Tokio runtime.
    #[error("cannot start a Tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The bridge of these settings cannot be built.
    #[error(transparent)]
    Bridge(#[from] RunError),
}

/// The bridge's HTTP listeners, served over in-memory pipes.
pub struct Exchange {
    runtime: Runtime,
    operator: Router,
    devices: Option<Router>,
    limits: Limits,
}

impl Exchange {
    /// Builds the bridge of `settings` (which must name no secrets or files
    /// it cannot read) and its routers; spawns the decoder behind ingest.
    pub fn new(settings: Settings) -> Result<Self, ExchangeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (operator, devices, limits) = runtime.block_on(async {
            let bridge = Bridge::build(settings).await?;
            let (tx, rx) = mpsc::channel(64);
            let (operator, devices, routes, limits) = bridge.into_routers(&tx);
            tokio::spawn(answer(rx, routes));
            Ok::<_, RunError>((operator, devices, limits))
        })?;
        Ok(Self {
            runtime,
            operator,
            devices,
            limits,
        })
    }

    /// What the operator listener answers to `request`.
    pub fn operator(&self, request: &[u8]) -> Vec<u8> {
        self.talk(&self.operator, request)
    }

    /// What the device listener answers to `request` (nothing if it is off).
    pub fn devices(&self, request: &[u8]) -> Vec<u8> {
        match &self.devices {
            Some(router) => self.talk(router, request),
            None => Vec::new(),
        }
    }

    /// Serves one connection that sends `request` and then half-closes.
    /// A panic anywhere in serving it is raised here, and so is a stall.
    fn talk(&self, router: &Router, request: &[u8]) -> Vec<u8> {
        let mut builder = connection_builder(&self.limits);
        builder.half_close(true);
        let service = TowerToHyperService::new(router.clone());
        let request = request.to_vec();
        self.runtime.block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let served = tokio::spawn(async move {
                // An error is the client's (a malformed request, say): answered or closed.
                let _ = builder
                    .serve_connection(TokioIo::new(server), service)
                    .await;
            });
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let sent = tokio::spawn(async move {
                // The server may close before reading everything; that is its right.
                let _ = to_server.write_all(&request).await;
                let _ = to_server.shutdown().await;
            });
            let mut answer = Vec::new();
            let read = tokio::time::timeout(STALL, from_server.read_to_end(&mut answer)).await;
            assert!(
                read.is_ok(),
                "the connection was still open after {STALL:?}"
            );
            for task in [served, sent] {
                if let Err(e) = task.await {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
            answer
        })
    }
}

/// Stands in for the pipeline: decodes each delivery and answers it, stored or
/// rejected, as the commit task would once the batch is written.
async fn answer(mut rx: mpsc::Receiver<Delivery>, routes: std::sync::Arc<Routes>) {
    while let Some(delivery) = rx.recv().await {
        if !delivery.ack.claim() {
            continue;
        }
        let records = routes.records(&delivery.origin, delivery.payload, delivery.seq, Utc::now());
        let stored = records
            .iter()
            .any(|r| matches!(r, Record::Decoded { .. } | Record::Absorbed { .. }));
        let outcome = match records.first() {
            Some(Record::Rejected { letter, .. }) if !stored => {
                HttpOutcome::Rejected(letter.reason)
            }
            _ => HttpOutcome::Stored,
        };
        if let Ack::Http(reply) = delivery.ack {
            reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TOKEN: &str = "0123456789abcdef0123";

    fn exchange() -> (Exchange, tempfile::NamedTempFile) {
        let mut tokens = tempfile::NamedTempFile::new().unwrap();
        writeln!(tokens, "dht1 {TOKEN}").unwrap();
        let config = format!(
            r#"
            [database]
            url = "mysql://nobody@127.0.0.1:9/none"
            [http]
            listen = "127.0.0.1:0"
            device_listen = "127.0.0.1:0"
            [[routes]]
            name = "climate"
            topics = ["climate/{{device}}"]
            decoder = "json"
            table = "readings"
            [routes.http]
            tokens_file = "{}"
            "#,
            tokens.path().display()
        );
        let settings: Settings = toml::from_str(&config).unwrap();
        (Exchange::new(settings).unwrap(), tokens)
    }

    fn post(body: &str, token: &str) -> Vec<u8> {
        format!(
            "POST /ingest/climate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn statuses(answer: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(answer)
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|a| a.chars().take(3).collect())
            .collect()
    }

    #[test]
    fn ingest_answers_from_the_decoder() {
        let (x, _tokens) = exchange();
        let good = post(r#"{"temperature": 21.5}"#, TOKEN);
        assert_eq!(statuses(&x.devices(&good)), ["201"]);
        let bad = post(r#"{"temperature": "#, TOKEN);
        let answer = x.devices(&bad);
        assert_eq!(statuses(&answer), ["400"]);
        assert!(String::from_utf8_lossy(&answer).contains("rejected: bad_json"));
        assert_eq!(
            statuses(&x.devices(&post("{}", "wrong-token-wrong-token"))),
            ["401"]
        );
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (x, _tokens) = exchange();
        let mut requests = post(r#"{"humidity": 40}"#, TOKEN);
        requests.extend(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
        requests.extend(post(r#"{"humidity": 41}"#, TOKEN));
        assert_eq!(statuses(&x.devices(&requests)), ["201", "404", "201"]);
    }

    #[test]
    fn a_body_shorter_than_declared_is_not_stored() {
        let (x, _tokens) = exchange();
        let mut short = post(r#"{"humidity": 40}"#, TOKEN);
        short.truncate(short.len() - 3);
        assert_eq!(statuses(&x.devices(&short)), ["400"]);
        let mut long = post(&"1".repeat(2_000_000), TOKEN);
        long.truncate(100_000);
        assert_eq!(statuses(&x.devices(&long)), ["413"]);
    }

    #[test]
    fn the_operator_listener_answers_garbage_with_400() {
        let (x, _tokens) = exchange();
        assert_eq!(
            statuses(&x.operator(b"\x00\xffGET / HTTP/1.1\r\n\r\n")),
            ["400"]
        );
        assert_eq!(
            statuses(&x.operator(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")),
            ["200"]
        );
    }
}
