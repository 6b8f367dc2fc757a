//! `co2-bridge import` against real MariaDB: an export imported into an
//! empty database is the same table row for row (CSV and NDJSON) with exact
//! rollups; an import killed with SIGKILL and rerun stores every row once;
//! a hostile file stores its good lines and dead-letters each bad one with
//! its line number; standard input takes payload lines; a seed-shape table
//! on another database is copied, resumably, without a double row.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_testkit::{wait_until, Database};
use tokio::io::AsyncWriteExt;

/// A migrated database for test `name`, and the environment for the bridge.
async fn migrated(name: &str) -> (Database, Vec<(String, String)>) {
    let db = Database::create(name).await.unwrap();
    let env = vec![("CO2_BRIDGE__DATABASE__URL".to_owned(), db.url())];
    let out = bridge(&env, &["migrate"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    (db, env)
}

/// `co2-bridge <args>` with `env` and, if given, `stdin`.
async fn bridge(
    env: &[(String, String)],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    let mut child = command(env, args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).await.unwrap();
        drop(pipe);
    }
    child.wait_with_output().await.unwrap()
}

fn command(env: &[(String, String)], args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"));
    c.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("CO2_BRIDGE_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file of `bytes` in a fresh temporary directory (kept with the value).
fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (dir, path)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A time `minutes` after a base two days ago (whole seconds, UTC).
fn at(base: DateTime<Utc>, seconds: i64) -> String {
    (base + chrono::TimeDelta::seconds(seconds))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn base() -> DateTime<Utc> {
    let now = Utc::now() - chrono::TimeDelta::days(2);
    DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(3600), 0).unwrap()
}

type Row = (String, String, f64);

/// (device, date_time with milliseconds, emissions) of every row, in key order.
async fn rows(db: &Database) -> Vec<Row> {
    sqlx::query_as(
        "SELECT CAST(device AS CHAR), DATE_FORMAT(date_time, '%Y-%m-%d %H:%i:%s.%f'), emissions \
         FROM co2_emissions ORDER BY device, date_time",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

async fn rollups_verify(env: &[(String, String)]) {
    let out = bridge(env, &["rollup", "verify"], None).await;
    assert!(out.status.success(), "rollup verify: {}", text(&out));
}

/// A line of the summary: `label` and its count, as printed.
fn said(label: &str, n: u64) -> String {
    format!("{label:<18}{n:>12}")
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test]
async fn an_export_imported_into_an_empty_database_is_the_same_table() {
    let (source, source_env) = migrated("imp_src").await;
    let b = base();
    let mut values = Vec::new();
    for d in 0..3 {
        for i in 0..400i64 {
            // Milliseconds, a fraction that must survive, numbered for some.
            let t = format!("{}.{:03}", at(b, i * 37 + d), (i * 7) % 1000);
            let seq = if d == 0 {
                format!("'00000000000000a{d}', {}", i + 1)
            } else {
                "NULL, NULL".to_owned()
            };
            values.push(format!(
                "('dev-{d}', '{t}', {}, {seq})",
                400.0 + (i as f64) * 1.25 + d as f64 * 0.01
            ));
        }
    }
    sqlx::query(&format!(
        "INSERT INTO co2_emissions (device, date_time, emissions, seq_epoch, seq) VALUES {}",
        values.join(", ")
    ))
    .execute(source.pool())
    .await
    .unwrap();
    let want = rows(&source).await;
    assert_eq!(want.len(), 1200);
    let dir = tempfile::tempdir().unwrap();
    for format in ["csv", "ndjson"] {
        let path = dir.path().join(format!("all.{format}"));
        let out = bridge(
            &source_env,
            &["export", "--format", format, "-o", path_str(&path)],
            None,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));

        let (target, env) = migrated(&format!("imp_dst_{format}")).await;
        let out = bridge(&env, &["import", path_str(&path)], None).await;
        assert!(out.status.success(), "{format}: {}", text(&out));
        assert!(text(&out).contains(&said("stored", 1200)), "{}", text(&out));
        assert_eq!(rows(&target).await, want, "{format}");
        // The readings' numbers came along.
        assert_eq!(
            scalar(
                &target,
                "SELECT COUNT(*) FROM co2_emissions WHERE seq IS NOT NULL"
            )
            .await,
            400
        );
        rollups_verify(&env).await;
        assert_eq!(
            scalar(
                &target,
                "SELECT CAST(SUM(n) AS SIGNED) FROM co2_emissions_1m"
            )
            .await,
            1200
        );

        // Again: nothing stored twice.
        let out = bridge(&env, &["import", path_str(&path)], None).await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&said("already present", 1200)),
            "{}",
            text(&out)
        );
        assert_eq!(rows(&target).await, want);
        rollups_verify(&env).await;
    }
}

#[tokio::test]
async fn an_import_killed_midway_and_run_again_stores_every_row_once() {
    let (db, env) = migrated("imp_kill").await;
    let b = base() - chrono::TimeDelta::days(20);
    let total = 300_000i64;
    let mut csv = String::from("date_time,emissions\n");
    for i in 0..total {
        csv.push_str(&format!(
            "{}.{:03},{}\n",
            at(b, i / 4),
            (i % 4) * 250,
            400 + i % 1000
        ));
    }
    let (_dir, path) = file("seed.csv", csv.as_bytes());
    let args = [
        "import",
        "--device",
        "pi-kill",
        "--chunk-rows",
        "2000",
        path_str(&path),
    ];
    let mut child = command(&env, &args).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) > 10_000
        })
        .await,
        "the import never got going"
    );
    child.kill().await.unwrap();
    let _ = child.wait().await;
    let cut = db.count("co2_emissions").await.unwrap();
    assert!(cut < total, "the kill came too late ({cut} rows)");

    let out = bridge(&env, &args, None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("co2_emissions").await.unwrap(), total);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(DISTINCT device, date_time) FROM co2_emissions"
        )
        .await,
        total
    );
    rollups_verify(&env).await;
    assert_eq!(
        scalar(&db, "SELECT CAST(SUM(n) AS SIGNED) FROM co2_emissions_1m").await,
        total
    );
}

#[tokio::test]
async fn a_hostile_file_stores_its_good_lines_and_dead_letters_the_rest() {
    let (db, env) = migrated("imp_hostile").await;
    let b = base();
    let mut text_in = Vec::new();
    text_in.extend_from_slice(b"\xEF\xBB\xBFdevice,date_time,emissions\r\n"); // 1
    text_in.extend_from_slice(format!("pi-1,{},412.5\r\n", at(b, 0)).as_bytes()); // 2
    text_in.extend_from_slice(b"\r\n"); // 3: blank
    text_in.extend_from_slice(format!("pi-1,{},abc\r\n", at(b, 1)).as_bytes()); // 4: bad number
    text_in.extend_from_slice(b"pi-1,yesterday,400\r\n"); // 5: bad datetime
    text_in.extend_from_slice(b"pi-1,2999-01-01 00:00:00,400\r\n"); // 6: far future
    text_in.extend_from_slice(format!("pi-1,{},1e9\r\n", at(b, 2)).as_bytes()); // 7: out of range
    text_in.extend_from_slice(b"pi-1\r\n"); // 8: too few fields
    text_in.extend_from_slice(b"pi-1,0001-01-01 00:00:00,400\r\n"); // 9: time out of range
    text_in.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024)); // 10: 10 MB
    text_in.extend_from_slice(b"\r\n");
    text_in.extend_from_slice(format!("bad device!,{},400\n", at(b, 3)).as_bytes()); // 11
    text_in.extend_from_slice(format!("pi-2,{},NaN\n", at(b, 4)).as_bytes()); // 12
    text_in.extend_from_slice(format!("pi-2,\"{}\",\"500\"\n", at(b, 5)).as_bytes()); // 13: quoted, good
    text_in.extend_from_slice(format!("pi-1,{},413\n", at(b, 6)).as_bytes()); // 14
    let (_dir, path) = file("hostile.csv", &text_in);
    let out = bridge(&env, &["import", path_str(&path)], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&said("rejected", 9)), "{}", text(&out));
    assert_eq!(db.count("co2_emissions").await.unwrap(), 3);
    let letters: Vec<(String, String, String, u32)> = sqlx::query_as(
        "SELECT topic, CAST(reason AS CHAR), detail, payload_bytes FROM rejected_messages ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let name = path.display().to_string();
    let lines: Vec<u64> = letters
        .iter()
        .map(|(topic, _, detail, _)| {
            assert_eq!(topic, "import/co2");
            let rest = detail
                .strip_prefix(&format!("{name}:"))
                .unwrap_or_else(|| panic!("{detail}"));
            rest.split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(lines, [4, 5, 6, 7, 8, 9, 10, 11, 12], "{letters:?}");
    let reason = |line: u64| {
        letters[lines.iter().position(|l| *l == line).unwrap()]
            .1
            .clone()
    };
    assert_eq!(reason(4), "bad_number");
    assert_eq!(reason(5), "bad_datetime");
    assert_eq!(reason(6), "too_far_in_future");
    assert_eq!(reason(7), "out_of_range");
    assert_eq!(reason(10), "oversized");
    assert_eq!(reason(11), "bad_device");
    let long = &letters[lines.iter().position(|l| *l == 10).unwrap()];
    assert!(long.2.contains("10485760 bytes"), "{long:?}");
    // Run again: the same lines are refused and said so, and neither the
    // rows nor their dead letters are stored twice.
    let again = bridge(&env, &["import", path_str(&path)], None).await;
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains(&said("rejected", 9)),
        "{}",
        text(&again)
    );
    assert_eq!(db.count("co2_emissions").await.unwrap(), 3);
    assert_eq!(db.count("rejected_messages").await.unwrap(), 9);
}

#[tokio::test]
async fn standard_input_takes_the_devices_payload_lines() {
    let (db, env) = migrated("imp_stdin").await;
    let b = base();
    let input = format!(
        "{}|400.5\n\n{}|401\nnot a payload\n{}Z|402\n",
        at(b, 0),
        at(b, 60),
        at(b, 120).replace(' ', "T")
    );
    let out = bridge(
        &env,
        &["import", "--device", "pi-9", "--format", "lines", "-"],
        Some(input.as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(db.count("co2_emissions").await.unwrap(), 3);
    let detail: String = sqlx::query_scalar("SELECT detail FROM rejected_messages")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(detail.starts_with("stdin:4: missing_separator"), "{detail}");
    // A dry run decodes and counts, and writes nothing.
    let (dry, dry_env) = migrated("imp_stdin_dry").await;
    let out = bridge(
        &dry_env,
        &["import", "--device", "pi-9", "--dry-run", "-"],
        Some(input.as_bytes()),
    )
    .await;
    assert!(
        text(&out).contains(&said("would store", 3)),
        "{}",
        text(&out)
    );
    assert_eq!(dry.count("co2_emissions").await.unwrap(), 0);
    assert_eq!(dry.count("rejected_messages").await.unwrap(), 0);
}

#[tokio::test]
async fn a_seed_table_on_another_database_is_copied_once_and_resumably() {
    let legacy = Database::create("imp_legacy").await.unwrap();
    sqlx::query("CREATE TABLE co2_emissions (date_time DATETIME, emissions DOUBLE(7,2))")
        .execute(legacy.pool())
        .await
        .unwrap();
    let b = base();
    let mut values = Vec::new();
    for i in 0..50i64 {
        values.push(format!("('{}', {})", at(b, i * 60), 400 + i));
        // The seed has no unique key: the same reading twice, now and then.
        if i % 7 == 0 {
            values.push(format!("('{}', {})", at(b, i * 60), 400 + i));
        }
    }
    values.push("(NULL, 5)".to_owned());
    sqlx::query(&format!(
        "INSERT INTO co2_emissions VALUES {}",
        values.join(", ")
    ))
    .execute(legacy.pool())
    .await
    .unwrap();
    let (db, env) = migrated("imp_from_mysql").await;
    let url = legacy.url();
    // Pages of 4: groups of one time cross page ends.
    let args = [
        "import",
        "--from-mysql",
        &url,
        "--device",
        "sub-py",
        "--chunk-rows",
        "4",
    ];
    let out = bridge(&env, &args, None).await;
    // The NULL date_time is skipped by key order on date_time (it has no place in it).
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("co2_emissions").await.unwrap(), 50);
    assert!(
        text(&out).contains(&said("already present", 8)),
        "{}",
        text(&out)
    );
    let progress: String = sqlx::query_scalar("SELECT last_key FROM import_progress")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(progress.starts_with(&at(b, 49 * 60)), "{progress}");
    rollups_verify(&env).await;

    // Rerun: it goes on after the last key, so reads nothing.
    let out = bridge(&env, &args, None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&said("lines read", 0)),
        "{}",
        text(&out)
    );
    // Rows added to the legacy table since are taken by the next run.
    sqlx::query(&format!(
        "INSERT INTO co2_emissions VALUES ('{}', 999)",
        at(b, 50 * 60)
    ))
    .execute(legacy.pool())
    .await
    .unwrap();
    let out = bridge(&env, &args, None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.count("co2_emissions").await.unwrap(), 51);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(DISTINCT device, date_time) FROM co2_emissions"
        )
        .await,
        51
    );
    // A table with an id reads in id order; rows without a time are dead letters.
    sqlx::query("ALTER TABLE co2_emissions ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST")
        .execute(legacy.pool())
        .await
        .unwrap();
    let (db2, env2) = migrated("imp_from_mysql_id").await;
    let out = bridge(&env2, &args, None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(db2.count("co2_emissions").await.unwrap(), 51);
    assert_eq!(db2.count("rejected_messages").await.unwrap(), 1);
}

/// `--time-zone`: a file written in local time (what the reference
/// publisher's log holds) is stored at the right UTC instants; a time with
/// an offset keeps it; `auto` is refused, as a file teaches no offset.
#[tokio::test]
async fn a_file_in_local_time_is_read_in_the_zone_it_names() {
    let (db, env) = migrated("imp_zone").await;
    let b = base();
    let two_hours = 2 * 3600;
    let input = format!(
        "{}|400\n{}|401\n{}Z|402\n",
        at(b, two_hours),
        at(b, two_hours + 60),
        at(b, 120).replace(' ', "T")
    );
    let out = bridge(
        &env,
        &[
            "import",
            "--device",
            "pi-z",
            "--format",
            "lines",
            "--time-zone",
            "+02:00",
            "-",
        ],
        Some(input.as_bytes()),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stamp = |s: i64| format!("{}.000000", at(b, s));
    assert_eq!(
        rows(&db).await,
        [
            ("pi-z".to_owned(), stamp(0), 400.0),
            ("pi-z".to_owned(), stamp(60), 401.0),
            ("pi-z".to_owned(), stamp(120), 402.0),
        ]
    );
    let out = bridge(
        &env,
        &["import", "--device", "pi-z", "--time-zone", "auto", "-"],
        Some(input.as_bytes()),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--time-zone"), "{}", text(&out));
}
