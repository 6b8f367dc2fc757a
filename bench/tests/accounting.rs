//! The loss/duplicate accounting against a real `co2_emissions` table (the
//! bridge's own migrations) that the test fills itself.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use co2_bench::account::{account, Sent};
use co2_bench::db::{self, ScratchDb};

fn server() -> String {
    std::env::var("CO2_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_foreign_rows_are_counted_from_the_table() {
    let db = ScratchDb::create(&server(), "acct").await.unwrap();
    // A table without the unique key, as a naive consumer's would be, so a
    // reading can be stored twice.
    sqlx::query("ALTER TABLE co2_emissions DROP INDEX uq_device_date_time")
        .execute(&db.pool)
        .await
        .unwrap();
    let base = 1_767_225_600_000_i64; // 2026-01-01 00:00:00 UTC
    let sent: Vec<Sent> = (0..100)
        .map(|i| Sent {
            device: format!("tacct{:04}", i % 10),
            stamp_ms: base + i,
        })
        .collect();
    // Store all but readings 0..5, reading 10 twice, plus a foreign row under the prefix
    // and one under another prefix (ignored).
    let mut rows: Vec<(String, i64)> = sent[5..]
        .iter()
        .map(|s| (s.device.clone(), s.stamp_ms))
        .collect();
    rows.push((sent[10].device.clone(), sent[10].stamp_ms));
    rows.push(("tacct0099".into(), base));
    rows.push(("other0001".into(), base));
    for (device, t) in &rows {
        sqlx::query(
            "INSERT INTO co2_emissions (device, date_time, emissions, received_at) \
             VALUES (?, ?, 400, ?)",
        )
        .bind(device)
        .bind(
            chrono::DateTime::from_timestamp_millis(*t)
                .unwrap()
                .naive_utc(),
        )
        .bind(
            chrono::DateTime::from_timestamp_millis(t + 250)
                .unwrap()
                .naive_utc(),
        )
        .execute(&db.pool)
        .await
        .unwrap();
    }

    assert_eq!(db::count(&db.pool, "tacct").await.unwrap(), 97);
    let stored = db::rows(&db.pool, "tacct").await.unwrap();
    let a = account(&sent, &stored);
    assert_eq!(
        (a.published, a.stored, a.lost, a.duplicates, a.unexpected),
        (100, 95, 5, 1, 1)
    );
    // received_at - reading time, to the millisecond, through DATETIME(3).
    let l = a.latency.unwrap();
    assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (250, 250, 250));
    // `_` in a prefix is literal, not a LIKE wildcard.
    assert_eq!(db::count(&db.pool, "tacct_").await.unwrap(), 0);
    db.drop_now().await.unwrap();
}
