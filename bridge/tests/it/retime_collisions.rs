//! `co2-bridge retime` where rows meet rows: a moved row whose new time is
//! taken by a stored row that stays is refused by default (nothing changes),
//! or resolved with keep-stored or replace; rows one shift apart move
//! without colliding with each other; a dry run changes nothing; a bad
//! shift is refused before anything runs. Against real MariaDB, with the
//! shipped routes (so `readings`, whose key holds the field, is in play).

use chrono::{NaiveDate, NaiveDateTime};
use co2_testkit::{unique, Database};

use crate::retime::retime;
use crate::support::*;

/// A migrated database and the environment of a bridge with the shipped
/// routes on it (no broker: retime does not connect to one).
async fn migrated(name: &str) -> (Database, Vec<(String, String)>) {
    let db = Database::create(name).await.unwrap();
    let mut env = bridge_env(&db.url(), 1, &unique(name), http_port());
    env.push((
        "CO2_BRIDGE_CONFIG".into(),
        routes_config(&[]).display().to_string(),
    ));
    env.push(device_listener());
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    (db, env)
}

/// 2026-01-05 at `h:m`.
fn at(h: u32, m: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 1, 5)
        .unwrap()
        .and_hms_opt(h, m, 0)
        .unwrap()
}

/// Device `pi`'s rows stored five hours early at 10:00-10:02, and rows
/// stored right at 15:01 (co2) and 15:02 (readings, field `t`), where two of
/// the early ones belong; a `h` reading at 15:00 that is no collision
/// (another field); another device at the same times; a gap of each device;
/// two announcements of `pi`, one stamped by its clock, one on arrival.
async fn seed(db: &Database) {
    for sql in [
        "INSERT INTO co2_emissions (device, date_time, emissions) VALUES \
         ('pi', '2026-01-05 10:00:00', 1), ('pi', '2026-01-05 10:01:00', 2), \
         ('pi', '2026-01-05 10:02:00', 3), ('pi', '2026-01-05 15:01:00', 9), \
         ('other', '2026-01-05 10:00:00', 5), ('other', '2026-01-05 15:00:00', 6)",
        "INSERT INTO readings (device, topic, time, field, value) VALUES \
         ('pi', 'x', '2026-01-05 10:00:00', 't', 1), ('pi', 'x', '2026-01-05 10:02:00', 't', 2), \
         ('pi', 'x', '2026-01-05 15:00:00', 'h', 7), ('pi', 'x', '2026-01-05 15:02:00', 't', 8), \
         ('other', 'x', '2026-01-05 10:00:00', 't', 4)",
        "INSERT INTO reading_gaps (device, epoch, first_seq, last_seq, first_seen, from_time, to_time) VALUES \
         ('pi', 'e', 2, 2, '2026-01-05 16:00:00', '2026-01-05 10:00:00', '2026-01-05 10:02:00'), \
         ('other', 'e', 2, 2, '2026-01-05 16:00:00', '2026-01-05 10:00:00', '2026-01-05 10:02:00')",
        r#"INSERT INTO device_events (device, time, event_id, kind, body) VALUES
         ('pi', '2026-01-05 10:00:30', '0000000000000001', 'clock_resync',
          '{"v":1,"id":"0000000000000001","kind":"clock_resync","at":"2026-01-05T10:00:30.000Z","offset_ms":5}'),
         ('pi', '2026-01-05 10:00:40', '0000000000000002', 'clock_resync',
          '{"v":1,"id":"0000000000000002","kind":"clock_resync","at":null,"offset_ms":5}')"#,
    ] {
        sqlx::query(sql).execute(db.pool()).await.unwrap();
    }
}

/// `CHECKSUM TABLE` of every table.
async fn checksums(db: &Database) -> Vec<(String, Option<i64>)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut sums = Vec::new();
    for table in tables {
        let row: (String, Option<i64>) =
            sqlx::query_as(&format!("CHECKSUM TABLE `{table}` EXTENDED"))
                .fetch_one(db.pool())
                .await
                .unwrap();
        sums.push((table, row.1));
    }
    sums
}

async fn co2(db: &Database, device: &str) -> Vec<(NaiveDateTime, f64)> {
    sqlx::query_as(
        "SELECT date_time, emissions FROM co2_emissions WHERE device = ? ORDER BY date_time",
    )
    .bind(device)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

async fn readings(db: &Database, device: &str) -> Vec<(NaiveDateTime, String, f64)> {
    sqlx::query_as(
        "SELECT time, CAST(field AS CHAR), value FROM readings WHERE device = ? ORDER BY time, field",
    )
    .bind(device)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

async fn gaps(db: &Database) -> Vec<(String, Option<NaiveDateTime>, Option<NaiveDateTime>)> {
    sqlx::query_as(
        "SELECT CAST(device AS CHAR), from_time, to_time FROM reading_gaps ORDER BY device",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

const FIVE_HOURS_BEFORE_NOON: [&str; 6] = [
    "--device",
    "pi",
    "--by",
    "+5h",
    "--to",
    "2026-01-05 12:00:00",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collision_is_refused_by_default_then_resolved_either_way() {
    let mut outcomes = Vec::new();
    for resolve in ["keep-stored", "replace"] {
        let (db, env) = migrated("retime_collide").await;
        seed(&db).await;
        let before = checksums(&db).await;
        let (code, out, err) = retime(&env, &FIVE_HOURS_BEFORE_NOON).await;
        assert_eq!(code, 1, "{out}\n{err}");
        for line in [
            "co2_emissions (device, date_time): 3 row(s) 2026-01-05 10:00:00 .. 2026-01-05 10:02:00 \
             -> 2026-01-05 15:00:00 .. 2026-01-05 15:02:00; 1 collision(s)",
            "      pi 2026-01-05 10:01:00 -> 2026-01-05 15:01:00 is taken by a row that stays",
            "readings (device, time): 2 row(s) 2026-01-05 10:00:00 .. 2026-01-05 10:02:00 \
             -> 2026-01-05 15:00:00 .. 2026-01-05 15:02:00; 1 collision(s)",
            "      pi 2026-01-05 10:02:00 -> 2026-01-05 15:02:00 is taken by a row that stays \
             (field=t, tags_key=)",
            "Refused: 2 collision(s); nothing changed.",
        ] {
            assert!(out.contains(line), "{line:?} missing from:\n{out}");
        }
        assert!(
            err.contains("--on-collision keep-stored or replace"),
            "{err}"
        );
        assert_eq!(checksums(&db).await, before, "a refusal changed something");

        let mut args = FIVE_HOURS_BEFORE_NOON.to_vec();
        args.extend(["--on-collision", resolve]);
        let (code, out, err) = retime(&env, &args).await;
        assert_eq!(code, 0, "{out}\n{err}");
        // The early rows are at their true times; the other device, the
        // stored rows' neighbours and the announcements are not touched.
        assert_eq!(
            co2(&db, "other").await,
            [(at(10, 0), 5.0), (at(15, 0), 6.0)]
        );
        assert_eq!(readings(&db, "other").await, [(at(10, 0), "t".into(), 4.0)]);
        assert_eq!(
            gaps(&db).await,
            [
                ("other".into(), Some(at(10, 0)), Some(at(10, 2))),
                ("pi".into(), Some(at(15, 0)), Some(at(15, 2)))
            ]
        );
        let events: Vec<NaiveDateTime> =
            sqlx::query_scalar("SELECT time FROM device_events ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(
            events,
            [
                at(10, 0) + chrono::Duration::seconds(30),
                at(10, 0) + chrono::Duration::seconds(40)
            ]
        );
        outcomes.push((
            resolve,
            out,
            co2(&db, "pi").await,
            readings(&db, "pi").await,
        ));
    }
    let (_, out, co2_kept, readings_kept) = &outcomes[0];
    assert!(
        out.contains("1 collision(s): 1 moving row(s) deleted, the stored ones kept"),
        "{out}"
    );
    assert!(
        out.contains("Moved 3 row(s) in 2 of 5 table(s) and 1 completeness record(s)"),
        "{out}"
    );
    assert_eq!(
        *co2_kept,
        [(at(15, 0), 1.0), (at(15, 1), 9.0), (at(15, 2), 3.0)]
    );
    assert_eq!(
        *readings_kept,
        [
            (at(15, 0), "h".into(), 7.0),
            (at(15, 0), "t".into(), 1.0),
            (at(15, 2), "t".into(), 8.0)
        ]
    );
    let (_, out, co2_replaced, readings_replaced) = &outcomes[1];
    assert!(
        out.contains("1 collision(s): 1 stored row(s) deleted, replaced by the moving ones"),
        "{out}"
    );
    assert!(out.contains("Moved 5 row(s) in 2 of 5 table(s)"), "{out}");
    assert_eq!(
        *co2_replaced,
        [(at(15, 0), 1.0), (at(15, 1), 2.0), (at(15, 2), 3.0)]
    );
    assert_eq!(
        *readings_replaced,
        [
            (at(15, 0), "h".into(), 7.0),
            (at(15, 0), "t".into(), 1.0),
            (at(15, 2), "t".into(), 2.0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_rows_one_shift_apart_do_not_collide_with_each_other() {
    let (db, env) = migrated("retime_consecutive").await;
    // Ten readings a minute apart: moving one by a minute lands it where the
    // next one is until that one has moved too.
    for i in 0..10 {
        sqlx::query("INSERT INTO co2_emissions (device, date_time, emissions) VALUES ('pi', ?, ?)")
            .bind(at(10, i))
            .bind(f64::from(i))
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO readings (device, topic, time, field, value) VALUES ('pi', 'x', ?, 't', ?)")
            .bind(at(10, i))
            .bind(f64::from(i))
            .execute(db.pool())
            .await
            .unwrap();
    }
    let original: Vec<(NaiveDateTime, f64)> = (0..10).map(|i| (at(10, i), f64::from(i))).collect();
    let later: Vec<(NaiveDateTime, f64)> = (0..10).map(|i| (at(10, i + 1), f64::from(i))).collect();
    let two_fields = |rows: Vec<(NaiveDateTime, String, f64)>| -> Vec<(NaiveDateTime, f64)> {
        rows.into_iter().map(|(t, _, v)| (t, v)).collect()
    };

    let (code, out, err) = retime(&env, &["--device", "pi", "--by", "+1m"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("co2_emissions (device, date_time): 10 row(s)"),
        "{out}"
    );
    assert!(out.contains("0 collision(s)"), "{out}");
    assert_eq!(co2(&db, "pi").await, later);
    assert_eq!(two_fields(readings(&db, "pi").await), later);

    // And back, the other way round (a negative shift as its own argument).
    let (code, out, err) = retime(&env, &["--device", "pi", "--by", "-1m"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(co2(&db, "pi").await, original);
    assert_eq!(two_fields(readings(&db, "pi").await), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing() {
    let (db, env) = migrated("retime_dry").await;
    seed(&db).await;
    let before = checksums(&db).await;
    let runs: [(&[&str], &str); 4] = [
        (&[], "A run would refuse because of the collisions."),
        (
            &["--on-collision", "keep-stored"],
            "A run would delete 2 moving row(s).",
        ),
        (
            &["--on-collision", "replace"],
            "A run would delete 2 stored row(s).",
        ),
        (
            &["--events", "--on-collision", "replace"],
            "A run would delete 2 stored row(s).",
        ),
    ];
    for (extra, then) in runs {
        let mut args = FIVE_HOURS_BEFORE_NOON.to_vec();
        args.push("--dry-run");
        args.extend(extra);
        let (code, out, err) = retime(&env, &args).await;
        assert_eq!(code, 0, "{out}\n{err}");
        let after = checksums(&db).await;
        assert_eq!(after, before, "dry run {extra:?} changed something");
        assert!(out.contains(", dry run:"), "{out}");
        assert!(
            out.contains(
                "co2_emissions (device, date_time): 3 row(s) 2026-01-05 10:00:00 .. 2026-01-05 10:02:00 \
                 -> 2026-01-05 15:00:00 .. 2026-01-05 15:02:00; 1 collision(s)"
            ),
            "{out}"
        );
        assert!(
            out.contains("reading_gaps (from_time, to_time): 1 completeness record(s)"),
            "{out}"
        );
        assert!(out.contains(then), "{then:?} missing from:\n{out}");
        if extra.contains(&"--events") {
            // Only the announcement the device's clock stamped; not the one stamped on arrival.
            assert!(
                out.contains("device_events (device, time): 1 row(s) 2026-01-05 10:00:30"),
                "{out}"
            );
        } else {
            assert!(out.contains("note: device_events: not moved"), "{out}");
        }
    }
    // The checksums do see a change: a real run.
    let mut args = FIVE_HOURS_BEFORE_NOON.to_vec();
    args.extend(["--on-collision", "replace"]);
    let (code, out, err) = retime(&env, &args).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let after = checksums(&db).await;
    let mut changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .collect();
    changed.sort_unstable();
    // The moved tables, and their rollups (recomputed in the same transaction).
    let mut expected: Vec<String> = vec![
        "co2_emissions".into(),
        "reading_gaps".into(),
        "readings".into(),
        "rollup_claims".into(),
    ];
    for tier in ["1m", "5m", "30m", "1h", "6h", "1d"] {
        expected.push(format!("co2_emissions_{tier}"));
        expected.push(format!("readings_{tier}"));
    }
    expected.sort_unstable();
    assert_eq!(changed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_shift_or_range_is_refused_before_anything_runs() {
    let (db, env) = migrated("retime_args").await;
    seed(&db).await;
    let before = checksums(&db).await;
    for (args, code, said) in [
        (&["--device", "pi", "--by", "5h"][..], 2, "+5h"),
        (&["--device", "pi", "--by", "+0h"], 2, "moves nothing"),
        (&["--device", "pi", "--by", "-49h"], 2, "more than 48 hours"),
        (&["--device", "pi", "--by", "+5.5h"], 2, "+5h30m"),
        (&["--device", "pi;", "--by", "+5h"], 1, "not a device id"),
        (
            &[
                "--device",
                "pi",
                "--by",
                "+5h",
                "--from",
                "2026-01-06",
                "--to",
                "2026-01-05",
            ],
            1,
            "is not before",
        ),
        (
            &["--device", "pi", "--by", "+5h", "--to", "noon"],
            2,
            "RFC 3339",
        ),
        (
            &["--device", "pi", "--by", "+5h", "--route", "nope"],
            1,
            "no such route",
        ),
    ] {
        let (got, out, err) = retime(&env, args).await;
        assert_eq!(got, code, "{args:?}: {out}\n{err}");
        assert!(
            err.contains(said),
            "{args:?}: {said:?} missing from:\n{err}"
        );
    }
    assert_eq!(checksums(&db).await, before);
}
