//! Migrations: a seed-shaped table is adopted, and a DML-only account is told
//! to run `co2-bridge migrate` instead of failing obscurely.

use std::time::Duration;

use co2_testkit::{unique, Database};
use sqlx::Executor;

use crate::support::*;

fn migrate_with_binary(
    url: &str,
) -> impl std::future::Future<Output = std::process::Output> + Send + 'static {
    let url = url.to_owned();
    async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
            .arg("migrate")
            .env("CO2_BRIDGE__DATABASE__URL", url)
            .output()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_seed_shaped_table_is_adopted_and_keeps_every_row() {
    let db = Database::create("seed").await.unwrap();
    db.pool()
        .execute(
            "CREATE TABLE co2_emissions (date_time DATETIME, emissions DOUBLE(7,2));
             INSERT INTO co2_emissions VALUES
               ('2020-07-13 22:43:23', 3500.00), ('2020-07-13 22:43:24', 3501.50),
               ('2020-07-13 22:43:24', 3999.00), (NULL, 12.00);",
        )
        .await
        .unwrap();

    let out = migrate_with_binary(&db.url()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rows: Vec<(u64, String, String, f64, Option<String>)> = sqlx::query_as(
        "SELECT id, CAST(device AS CHAR), DATE_FORMAT(date_time, '%Y-%m-%d %H:%i:%s'), emissions,
                DATE_FORMAT(received_at, '%Y') FROM co2_emissions ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                1,
                "default".into(),
                "2020-07-13 22:43:23".into(),
                3500.0,
                None
            ),
            (
                2,
                "default".into(),
                "2020-07-13 22:43:24".into(),
                3501.5,
                None
            ),
        ]
    );
    // The rows that cannot meet the unique key / NOT NULL are moved, not lost.
    let conflicts: Vec<f64> =
        sqlx::query_scalar("SELECT emissions FROM co2_emissions_adopted_conflicts ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(conflicts, [3999.0, 12.0]);

    // Idempotent, and new rows get the new defaults.
    let again = migrate_with_binary(&db.url()).await;
    assert!(again.status.success());
    db.pool()
        .execute(
            "INSERT INTO co2_emissions (date_time, emissions) VALUES ('2021-01-01 00:00:00.5', 1)",
        )
        .await
        .unwrap();
    let (device, has_received_at): (String, bool) = sqlx::query_as(
        "SELECT CAST(device AS CHAR), received_at IS NOT NULL FROM co2_emissions WHERE date_time = '2021-01-01 00:00:00.5'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((device.as_str(), has_received_at), ("default", true));
}

#[tokio::test]
async fn a_dml_only_account_with_pending_migrations_is_told_what_to_run() {
    let db = Database::create("dml").await.unwrap();
    let user = unique("co2dml");
    let pool = db.pool();
    pool.execute(format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'").as_str())
        .await
        .unwrap();
    pool.execute(
        format!(
            "GRANT SELECT, INSERT, UPDATE ON `{}`.* TO '{user}'@'%'",
            db.name()
        )
        .as_str(),
    )
    .await
    .unwrap();
    let url = format!("mysql://{user}:pw-{user}@127.0.0.1:3306/{}", db.name());
    let env = bridge_env(&url, 1883, &unique("dml"), http_port());
    let mut bridge = spawn_binary(&env, "dml-bridge");
    let status = bridge.process.wait(Duration::from_secs(30)).await.unwrap();
    let log = bridge.log_text();
    pool.execute(format!("DROP USER '{user}'@'%'").as_str())
        .await
        .unwrap();
    assert!(!status.success());
    assert!(log.contains("co2-bridge migrate"), "{log}");
    assert!(
        !log.contains(&format!("pw-{user}")),
        "the password leaked into the log:\n{log}"
    );

    // After an admin migrates, the same account runs.
    let out = migrate_with_binary(&db.url()).await;
    assert!(out.status.success());
}

#[tokio::test]
async fn bridges_started_together_on_a_fresh_database_migrate_one_at_a_time() {
    let db = Database::create("race").await.unwrap();
    let runs: Vec<_> = (0..4).map(|_| migrate_with_binary(&db.url())).collect();
    for out in futures_join_all(runs).await {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(applied, shipped as i64);
}

/// Runs futures concurrently (each spawns a process, so they overlap for real).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: Vec<F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
