//! Every long-lived task of the bridge runs under the supervisor. If one ends
//! while the bridge is not shutting down (a panic, or a loop that returned),
//! the bridge must not carry on half alive: the most reported failure of the
//! tools this one replaces is a dead parser task while health checks stay
//! green. The owner of the [`Ended`] receiver turns readiness false naming
//! the task and exits non-zero, so that systemd or compose restart the
//! bridge; the broker redelivers whatever was not acknowledged.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A supervised task that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The task's name, e.g. `commit` or `mqtt ingress 0`.
    pub task: String,
    /// The panic message, if it panicked.
    pub panic: Option<String>,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.panic {
            Some(message) => write!(f, "task {:?} panicked: {message}", self.task),
            None => write!(f, "task {:?} ended", self.task),
        }
    }
}

/// Spawns named tasks and reports each one's end.
#[derive(Clone)]
pub struct Supervisor {
    ended: mpsc::UnboundedSender<Ended>,
}

impl Supervisor {
    /// A supervisor and the receiver of its tasks' ends.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Ended>) {
        install_panic_hook();
        let (ended, rx) = mpsc::unbounded_channel();
        (Self { ended }, rx)
    }

    /// Spawns `future` as task `name`; its end (return or panic) is reported.
    pub fn spawn<F>(&self, name: impl Into<String>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = name.into();
        let ended = self.ended.clone();
        tokio::spawn(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(output) => {
                    let _ = ended.send(Ended { task, panic: None });
                    output
                }
                Err(payload) => {
                    let panic = Some(panic_message(payload.as_ref()));
                    let _ = ended.send(Ended { task, panic });
                    // The JoinHandle still sees the panic (the hook does not run again).
                    std::panic::resume_unwind(payload)
                }
            }
        })
    }
}

/// Logs every panic as one structured line instead of the default print.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = panic_message(info.payload());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(panic = %message, %location, "Panic");
        }));
    });
}

/// The text of a panic payload (`&str` or `String`, as `panic!` makes them).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_return_and_a_panic_by_name() {
        let (supervisor, mut ended) = Supervisor::new();
        supervisor.spawn("quiet", async {});
        let first = ended.recv().await.unwrap();
        assert_eq!(
            first,
            Ended {
                task: "quiet".into(),
                panic: None
            }
        );
        let handle = supervisor.spawn("loud", async { panic!("boom {}", 7) });
        assert!(handle.await.unwrap_err().is_panic());
        let second = ended.recv().await.unwrap();
        assert_eq!(second.task, "loud");
        assert_eq!(second.panic.as_deref(), Some("boom 7"));
        assert_eq!(second.to_string(), "task \"loud\" panicked: boom 7");
    }
}
