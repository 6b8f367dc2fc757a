//! The queue shared by async tasks.

use std::sync::Arc;

use super::Queue;
use crate::store::SpoolError;

/// A [`Queue`] shared by async tasks; every call runs on a blocking thread.
#[derive(Clone)]
pub struct QueueHandle(Arc<std::sync::Mutex<Queue>>);

impl QueueHandle {
    /// Shares `queue`.
    pub fn new(queue: Queue) -> Self {
        Self(Arc::new(std::sync::Mutex::new(queue)))
    }

    /// Runs `f` with the queue on a blocking thread.
    pub async fn with<R, F>(&self, f: F) -> Result<R, SpoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Queue) -> R + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let mut queue = inner
                .lock()
                .map_err(|_| SpoolError::Worker("queue lock poisoned".into()))?;
            Ok(f(&mut queue))
        })
        .await
        .map_err(|e| SpoolError::Worker(e.to_string()))?
    }

    /// Everything waiting (no disk access; may wait for a running queue call).
    pub fn len(&self) -> u64 {
        self.0.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
