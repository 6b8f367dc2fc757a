//! Completeness per device over a time range, for the status page.

use std::time::Duration;

use sqlx::{MySqlPool, Row};

/// One device's completeness over a time range (the dashboard's Completeness panel, from the same tables).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceCompleteness {
    /// The device.
    pub device: String,
    /// Numbered readings stored.
    pub stored: u64,
    /// Missing, and the publisher said it dropped them.
    pub announced: u64,
    /// Missing, not announced: lost between the publisher and the table.
    pub lost: u64,
    /// Missing but still inside the grace period (may arrive late).
    pub pending: u64,
    /// Readings stored without a number (never counted as gaps).
    pub unnumbered: u64,
}

impl DeviceCompleteness {
    /// Numbered readings there should be: stored plus every kind of missing.
    pub fn expected(&self) -> u64 {
        self.stored + self.announced + self.lost + self.pending
    }

    /// Stored out of expected, in percent (`None` with nothing numbered).
    pub fn percent(&self) -> Option<f64> {
        let expected = self.expected();
        (expected > 0).then(|| 100.0 * self.stored as f64 / expected as f64)
    }
}

/// Completeness per device over the last `window`, readings counted by their
/// own time and gaps by the readings around them (as the dashboard panel does).
pub async fn summary(
    pool: &MySqlPool,
    window: Duration,
) -> Result<Vec<DeviceCompleteness>, sqlx::Error> {
    let window_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT s.device, s.stored, s.unnumbered, \
           CAST(COALESCE(g.announced, 0) AS UNSIGNED), CAST(COALESCE(g.lost, 0) AS UNSIGNED), \
           CAST(COALESCE(g.pending, 0) AS UNSIGNED) \
         FROM (SELECT device, CAST(SUM(stored) AS UNSIGNED) AS stored, \
                 CAST(SUM(unnumbered) AS UNSIGNED) AS unnumbered FROM ( \
               SELECT CAST(device AS CHAR) AS device, COUNT(seq) AS stored, \
                 SUM(seq IS NULL) AS unnumbered \
               FROM co2_emissions WHERE date_time >= UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND \
               GROUP BY device \
               UNION ALL SELECT CAST(device AS CHAR), COUNT(*), 0 FROM lorawan_frames \
               WHERE `time` >= UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND GROUP BY device) u \
               GROUP BY device) s \
         LEFT JOIN (SELECT CAST(device AS CHAR) AS device, \
                 SUM(IF(state = 'final', announced, 0)) AS announced, \
                 SUM(IF(state = 'final', last_seq - first_seq + 1 - announced, 0)) AS lost, \
                 SUM(IF(state = 'open', last_seq - first_seq + 1, 0)) AS pending \
               FROM reading_gaps WHERE state <> 'filled' \
                 AND to_time >= UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND GROUP BY device) g \
           ON g.device = s.device \
         ORDER BY s.device",
    )
    .bind(window_us)
    .bind(window_us)
    .bind(window_us)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeviceCompleteness {
                device: row.try_get(0)?,
                stored: row.try_get(1)?,
                unnumbered: row.try_get(2)?,
                announced: row.try_get(3)?,
                lost: row.try_get(4)?,
                pending: row.try_get(5)?,
            })
        })
        .collect()
}
