//! The nodes of a clustered MySQL-protocol database (`database.hosts`): the
//! pool connects to one at a time and moves to the next when that one fails.
//!
//! The pool stays one `MySqlPool` (the images page and the completeness
//! accounting share it); a failover only changes the options its future
//! connections use, and retires the connections opened before: a node that
//! left the cluster's primary component (1047, "WSREP has not yet prepared
//! node for application use") still answers pings, so the pool's own check
//! would keep handing them out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use co2_wire::endpoint::{Endpoint, Ring};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::MySqlPool;

use super::schema::mysql_error_number;

/// MySQL/MariaDB error numbers that say this node, not the statement, is the
/// problem: another node may take the write now.
const NODE_ERRORS: &[u16] = &[
    1040, // too many connections
    1047, // WSREP has not yet prepared node for application use (Galera, non-primary)
    1053, // server shutdown in progress
    1927, // connection was killed (MariaDB)
    4031, // disconnected by the server for inactivity (MySQL 8)
];

/// True when the error says the node (or the way to it) failed, as opposed
/// to the statement: a connection that broke, could not be made, or a node
/// that does not serve writes.
pub fn node_failed(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        _ => mysql_error_number(error).is_some_and(|n| NODE_ERRORS.contains(&n)),
    }
}

/// The database's nodes and when the pool last moved between them.
#[derive(Clone)]
pub struct Nodes {
    ring: Arc<Mutex<Ring<(Endpoint, MySqlConnectOptions)>>>,
    /// Time since this instant when the last failover happened: connections
    /// older than that belong to the node left behind.
    epoch: Instant,
    switched: Arc<Mutex<Option<Duration>>>,
    failovers: Arc<AtomicU64>,
}

impl Nodes {
    /// One node per endpoint, with `base`'s options otherwise; `None` when
    /// `endpoints` is empty.
    pub fn new(base: &MySqlConnectOptions, endpoints: Vec<Endpoint>) -> Option<Self> {
        let nodes = endpoints
            .into_iter()
            .map(|e| {
                let options = base.clone().host(&e.host).port(e.port);
                (e, options)
            })
            .collect();
        Some(Self {
            ring: Arc::new(Mutex::new(Ring::new(nodes, 0)?)),
            epoch: Instant::now(),
            switched: Arc::new(Mutex::new(None)),
            failovers: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The options of the node in use.
    pub fn current_options(&self) -> MySqlConnectOptions {
        self.lock_ring().current().1.clone()
    }

    /// Failovers so far.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// True when a connection of this `age` was opened before the last
    /// failover (to the node left behind) and should not be used again.
    pub fn is_stale(&self, age: Duration) -> bool {
        let switched = *self.switched.lock().unwrap_or_else(PoisonError::into_inner);
        switched.is_some_and(|at| age > self.epoch.elapsed().saturating_sub(at))
    }

    /// Points `pool`'s new connections at the next node, retires the old
    /// ones, and logs it; does nothing with a single node.
    pub fn fail_over(&self, pool: &MySqlPool, error: &str) {
        let (from, to, options) = {
            let mut ring = self.lock_ring();
            if ring.len() < 2 {
                return;
            }
            let from = ring.current().0.clone();
            let (to, options) = ring.advance().clone();
            (from, to, options)
        };
        *self.switched.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.epoch.elapsed());
        pool.set_connect_options(options);
        self.failovers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(from = %from, to = %to, error, "Database node failed; moving to the next node of the database's hosts");
    }

    fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring<(Endpoint, MySqlConnectOptions)>> {
        // The ring is always consistent (one assignment per change): a
        // panic elsewhere while it was held leaves it usable.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn connection_failures_are_node_failures_statement_errors_are_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(node_failed(&io));
        assert!(node_failed(&sqlx::Error::PoolTimedOut));
        assert!(!node_failed(&sqlx::Error::RowNotFound));
        assert!(NODE_ERRORS.contains(&1047));
        assert!(
            !NODE_ERRORS.contains(&1213),
            "a deadlock is retried on the same node"
        );
    }

    #[tokio::test]
    async fn failing_over_moves_new_connections_and_retires_old_ones() {
        let base = MySqlConnectOptions::new().database("x");
        let nodes = Nodes::new(&base, vec![endpoint(1), endpoint(2)]).unwrap();
        let pool = MySqlPool::connect_lazy_with(nodes.current_options());
        assert_eq!(pool.connect_options().get_port(), 1);
        assert!(!nodes.is_stale(Duration::from_secs(3600)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        nodes.fail_over(&pool, "test");
        assert_eq!(pool.connect_options().get_port(), 2);
        assert!(
            nodes.is_stale(Duration::from_secs(3600)),
            "opened before the failover"
        );
        assert!(!nodes.is_stale(Duration::ZERO), "opened after it");
        nodes.fail_over(&pool, "test");
        assert_eq!(pool.connect_options().get_port(), 1, "wraps round");
        assert_eq!(nodes.failovers(), 2);
    }

    #[tokio::test]
    async fn a_single_node_stays() {
        let base = MySqlConnectOptions::new();
        let nodes = Nodes::new(&base, vec![endpoint(7)]).unwrap();
        let pool = MySqlPool::connect_lazy_with(nodes.current_options());
        nodes.fail_over(&pool, "test");
        assert_eq!(pool.connect_options().get_port(), 7);
        assert!(!nodes.is_stale(Duration::from_secs(1)));
        assert_eq!(nodes.failovers(), 0);
    }
}
