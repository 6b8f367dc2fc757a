//! What the MySQL tables with retention hold: rows, bytes, the oldest row,
//! and the partitions retention dropped.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The storage series, by table.
pub struct Storage {
    rows: IntGaugeVec,
    bytes: IntGaugeVec,
    oldest: GaugeVec,
    dropped: IntCounterVec,
}

impl Storage {
    /// Creates and registers the series in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rows = IntGaugeVec::new(
            Opts::new(
                "co2_bridge_table_rows",
                "Rows of a table with retention (raw or rollup tier), InnoDB's estimate, after the last retention pass.",
            ),
            &["table"],
        )?;
        let bytes = IntGaugeVec::new(
            Opts::new(
                "co2_bridge_table_bytes",
                "Bytes of data and indexes of a table with retention, after the last retention pass.",
            ),
            &["table"],
        )?;
        let oldest = GaugeVec::new(
            Opts::new(
                "co2_bridge_table_oldest_timestamp_seconds",
                "Time of the oldest row kept in a table with retention (Unix seconds), after the last retention pass.",
            ),
            &["table"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "co2_bridge_partitions_dropped_total",
                "Time partitions dropped by retention, by table.",
            ),
            &["table"],
        )?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(oldest.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Self {
            rows,
            bytes,
            oldest,
            dropped,
        })
    }

    /// What `table` holds; `oldest` in Unix seconds, `None` when empty.
    pub fn held(&self, table: &str, rows: u64, bytes: u64, oldest: Option<f64>) {
        self.rows
            .with_label_values(&[table])
            .set(i64::try_from(rows).unwrap_or(i64::MAX));
        self.bytes
            .with_label_values(&[table])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        match oldest {
            Some(t) => self.oldest.with_label_values(&[table]).set(t),
            // An empty table has no oldest row: no series, rather than a 0 that reads as 1970.
            None => {
                let _ = self.oldest.remove_label_values(&[table]);
            }
        }
    }

    /// `n` partitions of `table` dropped.
    pub fn dropped(&self, table: &str, n: u64) {
        self.dropped.with_label_values(&[table]).inc_by(n);
    }
}
