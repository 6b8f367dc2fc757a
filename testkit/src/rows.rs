//! Waiting for the bridge to store readings: polls `co2_emissions` until it
//! holds enough rows.

use std::time::Duration;

use crate::{wait_until, Database};

/// Waits until `co2_emissions` in `db` holds at least `n` rows, or `timeout`
/// passes; returns the count then. Panics (for tests) if the table cannot
/// be counted at the end.
pub async fn wait_for_rows(db: &Database, n: i64, timeout: Duration) -> i64 {
    wait_for(db, None, n, timeout).await
}

/// As [`wait_for_rows`], counting only the rows of `device`.
pub async fn wait_for_device_rows(db: &Database, device: &str, n: i64, timeout: Duration) -> i64 {
    wait_for(db, Some(device), n, timeout).await
}

async fn wait_for(db: &Database, device: Option<&str>, n: i64, timeout: Duration) -> i64 {
    let count = || async {
        match device {
            Some(device) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM co2_emissions WHERE device = ?")
                    .bind(device)
                    .fetch_one(db.pool())
                    .await
            }
            None => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM co2_emissions")
                    .fetch_one(db.pool())
                    .await
            }
        }
    };
    // The table appears only when the bridge has migrated: until then, none.
    wait_until(timeout, || async { count().await.unwrap_or(0) >= n }).await;
    count()
        .await
        .unwrap_or_else(|e| panic!("cannot count the rows in {}: {e}", db.name()))
}
