//! `co2-bridge export` and `GET /export` against real MariaDB: what comes
//! out is the table row for row (CSV parsed back, NDJSON parsed back), the
//! device and time filters are exact at both ends (`from` inclusive, `to`
//! exclusive), a tier export is the tier table, an export killed with
//! SIGKILL and resumed has every row exactly once (ties at one time
//! included), memory stays flat however many rows, and a slow or vanished
//! HTTP client holds up neither ingest nor readiness.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use co2_testkit::{
    http_get, http_request, unique, wait_for_rows, wait_until, Broker, ChildProcess, Database,
    Publisher,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A viewer token, as `http.viewer_tokens_file` holds it.
const VIEWER_TOKEN: &str = "viewer-0123456789abcdef";

/// A migrated database for test `name` with the shipped routes, and the environment for it.
async fn migrated(name: &str) -> (Database, Vec<(String, String)>) {
    let db = Database::create(name).await.unwrap();
    let config = routes_config(&[("cam", "camera-0123456789abcdef")]);
    let env = vec![
        ("CO2_BRIDGE__DATABASE__URL".to_owned(), db.url()),
        ("CO2_BRIDGE_CONFIG".to_owned(), config.display().to_string()),
        // The example's camera route takes HTTP ingest; no command here binds it.
        device_listener(),
    ];
    let out = bridge(&env, &["migrate"]).await;
    assert!(out.status.success(), "{}", text(&out));
    (db, env)
}

/// `co2-bridge <args>` with `env`.
async fn bridge(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `co2-bridge export <args>`'s stdout; panics unless it succeeds.
async fn export(env: &[(String, String)], args: &[&str]) -> Vec<u8> {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    let out = bridge(env, &all).await;
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

async fn exec(db: &Database, sql: &str) {
    sqlx::query(sql).execute(db.pool()).await.unwrap();
}

/// A CSV text's header and records (quotes removed).
fn csv_records(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let records = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, records)
}

/// An NDJSON text's objects.
fn ndjson_objects(bytes: &[u8]) -> Vec<serde_json::Map<String, Value>> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The rows of `readings` as the test reads them itself: each column as
/// the export should write it (times ISO 8601 UTC, bytes hex), NULL as None.
async fn readings_table(db: &Database) -> Vec<Vec<Option<String>>> {
    let iso = |c: &str, digits: u32| {
        format!(
            "CONCAT(DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.'), \
             LPAD(MICROSECOND({c}) DIV {div}, {digits}, '0'), 'Z')",
            div = 10u32.pow(6 - digits)
        )
    };
    let sql = format!(
        "SELECT CAST(id AS CHAR), CAST(device AS CHAR), topic, {time}, CAST(field AS CHAR), \
         CAST(value AS CHAR), CAST(text_value AS CHAR), CAST(kind AS CHAR), CAST(tags AS CHAR), LOWER(HEX(tags_key)), \
         {received}, CAST(redeliveries AS CHAR) FROM readings ORDER BY `time`, id",
        time = iso("`time`", 6),
        received = iso("received_at", 3)
    );
    sqlx::query_as::<_, Row12>(&sql)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| vec![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11])
        .collect()
}

type Row12 = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The names of `readings`' columns, in table order.
const READINGS_COLUMNS: [&str; 12] = [
    "id",
    "device",
    "topic",
    "time",
    "field",
    "value",
    "text_value",
    "kind",
    "tags",
    "tags_key",
    "received_at",
    "redeliveries",
];

/// Whether an exported value equals the table's: numbers and JSON by value.
fn same(column: &str, exported: Option<&str>, stored: Option<&str>) -> bool {
    match (column, exported, stored) {
        ("value", Some(a), Some(b)) => a.parse::<f64>().ok() == b.parse::<f64>().ok(),
        ("tags", Some(a), Some(b)) => {
            serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok()
        }
        (_, a, b) => a == b,
    }
}

/// Rows with what breaks naive CSV: commas, quotes, CR/LF, non-ASCII,
/// leading spaces, the empty string beside NULL; several rows at one time.
async fn tricky_readings(db: &Database) {
    exec(
        db,
        "INSERT INTO readings (device, topic, `time`, field, value, text_value, kind, tags, \
           tags_key, received_at) VALUES \
         ('hall', 'json/hall', '2024-05-01 10:00:00.000001', 'temp', 21.5, NULL, 'number', \
           '{\"room\": \"hall, \\\\\"east\\\\\"\"}', UNHEX('00ff10'), '2024-05-01 10:00:01.250'), \
         ('hall', 'json/hall', '2024-05-01 10:00:00.000001', 'note', NULL, \
           'a, \"quoted\"\\r\\nline ç 漢字 🙂', 'text', NULL, '', NULL), \
         ('hall', 'json/hall', '2024-05-01 10:00:00.000001', 'empty', NULL, '', 'text', NULL, '', NULL), \
         ('attic', 'json/attic', '2024-05-01 10:00:00.000001', 'temp', -0.125, NULL, 'number', \
           '{\"k\": [1, 2, {\"n\": null}]}', UNHEX('ab'), '2024-05-01 10:00:02.000'), \
         ('attic', 'json/attic', '2024-05-01 10:00:05', ' lead', 1e300, NULL, 'bool', NULL, '', NULL), \
         ('attic', 'json/attic', '2024-05-01 10:00:05', 'multi\nline', 0, '\"', 'text', NULL, '', \
           '2024-05-01 10:00:06.999')",
    )
    .await;
}

#[tokio::test]
async fn raw_rows_come_out_as_the_table_holds_them_in_csv_and_ndjson() {
    let (db, env) = migrated("export_round_trip").await;
    tricky_readings(&db).await;
    let stored = readings_table(&db).await;
    assert_eq!(stored.len(), 6);

    let csv = export(&env, &["--table", "readings"]).await;
    let (header, records) = csv_records(&csv);
    assert_eq!(header, READINGS_COLUMNS);
    assert_eq!(records.len(), stored.len());
    for (record, row) in records.iter().zip(&stored) {
        for ((column, exported), stored) in READINGS_COLUMNS.iter().zip(record).zip(row) {
            // CSV: an empty field is NULL or the empty string (told apart below).
            let stored = stored.as_deref().unwrap_or("");
            assert!(
                same(column, Some(exported), Some(stored)),
                "{column}: {exported:?} exported, {stored:?} stored"
            );
        }
    }
    let raw = String::from_utf8(csv.clone()).unwrap();
    // value NULL, text_value '', tags NULL, tags_key ''.
    assert!(
        raw.contains(",empty,,\"\",text,,\"\",,0\r\n"),
        "NULL vs empty: {raw}"
    );
    assert!(
        raw.contains("\"a, \"\"quoted\"\"\r\nline ç 漢字 🙂\""),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n") && raw.split("\r\n").count() > 7);

    let ndjson = export(&env, &["--table", "readings", "--format", "ndjson"]).await;
    let objects = ndjson_objects(&ndjson);
    assert_eq!(objects.len(), stored.len());
    let text = String::from_utf8(ndjson.clone()).unwrap();
    for (line, (object, row)) in text.lines().zip(objects.iter().zip(&stored)) {
        // Keys in column order (the parsed map sorts them).
        let at: Vec<usize> = READINGS_COLUMNS
            .iter()
            .map(|c| line.find(&format!("\"{c}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert_eq!(object.len(), READINGS_COLUMNS.len());
        for (column, stored) in READINGS_COLUMNS.iter().zip(row) {
            let exported = match &object[*column] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            assert!(
                same(column, exported.as_deref(), stored.as_deref()),
                "{column}: {exported:?} exported, {stored:?} stored"
            );
        }
        // Numbers are JSON numbers, JSON columns JSON.
        assert!(object["id"].is_u64() && !object["tags"].is_string());
    }
}

#[tokio::test]
async fn devices_and_time_bounds_are_exact_at_both_ends() {
    let (db, env) = migrated("export_bounds").await;
    // Three devices, a reading each at 10:00:00, 10:00:01, … 10:00:09, one
    // at 10:00:05.5 and one a millisecond before 10:00:05.
    exec(
        &db,
        "INSERT INTO co2_emissions (device, date_time, emissions) \
         SELECT CONCAT('d', d.seq), '2024-05-01 10:00:00' + INTERVAL t.seq SECOND, 400 + t.seq \
         FROM seq_0_to_9 t CROSS JOIN seq_1_to_3 d",
    )
    .await;
    exec(
        &db,
        "INSERT INTO co2_emissions (device, date_time, emissions) VALUES \
         ('d1', '2024-05-01 10:00:05.500', 1), ('d2', '2024-05-01 10:00:04.999', 2)",
    )
    .await;
    let times = |bytes: &[u8]| -> Vec<(String, String)> {
        ndjson_objects(bytes)
            .iter()
            .map(|o| {
                (
                    o["date_time"].as_str().unwrap().to_owned(),
                    o["device"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let range = [
        "--from",
        "2024-05-01T10:00:05Z",
        "--to",
        "2024-05-01 10:00:07",
        "--format",
        "ndjson",
    ];
    // One device (its unique key's order) and two (the time index's).
    let mut args = range.to_vec();
    args.extend(["--device", "d1"]);
    assert_eq!(
        times(&export(&env, &args).await),
        [
            ("2024-05-01T10:00:05.000Z".into(), "d1".into()),
            ("2024-05-01T10:00:05.500Z".into(), "d1".into()),
            ("2024-05-01T10:00:06.000Z".into(), "d1".into()),
        ]
    );
    let mut args = range.to_vec();
    args.extend(["--device", "d2,d3"]);
    let got = times(&export(&env, &args).await);
    assert_eq!(
        got,
        [
            ("2024-05-01T10:00:05.000Z".into(), "d2".into()),
            ("2024-05-01T10:00:05.000Z".into(), "d3".into()),
            ("2024-05-01T10:00:06.000Z".into(), "d2".into()),
            ("2024-05-01T10:00:06.000Z".into(), "d3".into()),
        ],
        "10:00:04.999 is before from, 10:00:07 is to itself"
    );
    // All devices, the whole table, in time order.
    let all = times(&export(&env, &["--format", "ndjson"]).await);
    assert_eq!(all.len(), 32);
    assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
    // Back-to-back ranges share no row and miss none.
    let first = export(&env, &["--to", "2024-05-01 10:00:05", "--format", "ndjson"]).await;
    let rest = export(
        &env,
        &["--from", "2024-05-01 10:00:05", "--format", "ndjson"],
    )
    .await;
    assert_eq!(
        [times(&first), times(&rest)].concat(),
        all,
        "split at 10:00:05"
    );
    // Refusals name the problem.
    let out = bridge(
        &env,
        &["export", "--from", "2024-05-02", "--to", "2024-05-01"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = bridge(&env, &["export", "--table", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no configured route writes table"));
}

/// A `co2_emissions_1h` row: device, bucket, n, total, min, max, last, last_time, numbered.
type TierRow = (String, String, u32, f64, f64, f64, f64, String, u32);

#[tokio::test]
async fn a_tier_export_is_the_tier_table() {
    let (db, env) = migrated("export_tier").await;
    exec(
        &db,
        "INSERT INTO co2_emissions (device, date_time, emissions) \
         SELECT CONCAT('d', d.seq), '2024-05-01 00:00:00' + INTERVAL t.seq * 7 MINUTE, \
         400 + MOD(t.seq * 37, 200) + 0.25 FROM seq_0_to_499 t CROSS JOIN seq_1_to_3 d",
    )
    .await;
    let out = bridge(&env, &["rollup", "rebuild"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stored: Vec<TierRow> = sqlx::query_as(
        "SELECT CAST(device AS CHAR), DATE_FORMAT(bucket, '%Y-%m-%dT%H:%i:%sZ'), n, total, min_value, \
         max_value, last_value, CONCAT(DATE_FORMAT(last_time, '%Y-%m-%dT%H:%i:%s.%f'), 'Z'), \
         numbered FROM co2_emissions_1h ORDER BY bucket, device",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(stored.len() > 100);
    let csv = export(&env, &["--tier", "1h"]).await;
    let (header, records) = csv_records(&csv);
    assert_eq!(
        header,
        [
            "device",
            "bucket",
            "n",
            "total",
            "min_value",
            "max_value",
            "last_value",
            "last_time",
            "numbered"
        ]
    );
    let exported: Vec<TierRow> = records
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1].clone(),
                r[2].parse().unwrap(),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
                r[5].parse().unwrap(),
                r[6].parse().unwrap(),
                r[7].clone(),
                r[8].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(exported, stored);
    let out = bridge(&env, &["export", "--tier", "2h"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no rollup tier \"2h\""),
        "{}",
        text(&out)
    );
}

/// `rows` CO2 rows in `devices` devices, every device at each second (so
/// `devices` rows share each time), loaded by the server from a sequence table.
async fn load_co2(db: &Database, rows: u64, devices: u64) {
    let per_statement = 500_000u64;
    let mut first = 0;
    while first < rows {
        let last = (first + per_statement).min(rows) - 1;
        exec(
            db,
            &format!(
                "INSERT INTO co2_emissions (device, date_time, emissions, received_at) \
                 SELECT CONCAT('dev-', MOD(seq, {devices})), \
                 '2024-01-01' + INTERVAL seq DIV {devices} SECOND, 400 + MOD(seq, 1000) / 4, \
                 '2024-01-01' + INTERVAL seq DIV {devices} SECOND + INTERVAL 1 SECOND \
                 FROM seq_{first}_to_{last}"
            ),
        )
        .await;
        first = last + 1;
    }
}

fn export_command(env: &[(String, String)], args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_co2-bridge"));
    command
        .arg("export")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn");
    command
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(name))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn an_export_killed_midway_resumes_with_every_row_once() {
    let (db, env) = migrated("export_resume").await;
    load_co2(&db, 300_000, 7).await;
    let ids: Vec<u64> = sqlx::query_scalar("SELECT id FROM co2_emissions ORDER BY date_time, id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    for format in ["csv", "ndjson"] {
        let path = temp_file(&format!("export-resume.{format}"));
        let output = path.display().to_string();
        // Small chunks, so the kill lands mid-stream.
        let args = [
            "--format",
            format,
            "-o",
            output.as_str(),
            "--chunk-rows",
            "500",
        ];
        let log = temp_file("export-resume.log");
        let mut first = ChildProcess::spawn(export_command(&env, &args), &log).unwrap();
        assert!(
            wait_until(Duration::from_secs(60), || async {
                file_len(&path) > 3_000_000
            })
            .await
        );
        first.kill().await.unwrap();
        let cut = file_len(&path);
        let mut resumed = args.to_vec();
        resumed.push("--resume");
        let out = export_command(&env, &resumed).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("resuming"), "{}", text(&out));
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 > cut);
        let got: Vec<u64> = match format {
            "csv" => csv_records(&bytes)
                .1
                .iter()
                .map(|r| r[0].parse().unwrap())
                .collect(),
            _ => ndjson_objects(&bytes)
                .iter()
                .map(|o| o["id"].as_u64().unwrap())
                .collect(),
        };
        eprintln!(
            "{format}: killed at {cut} bytes, {} rows after the resume",
            got.len()
        );
        assert_eq!(got.len(), ids.len(), "{format}: rows lost or doubled");
        assert!(got == ids, "{format}: not every row once in key order");
        // A finished export resumed again adds nothing and loses nothing.
        let again = export_command(&env, &resumed).output().unwrap();
        assert!(again.status.success(), "{}", text(&again));
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "{format}: a second resume changed the file"
        );
        // CSV records end in CRLF, also where the file was cut and resumed.
        if format == "csv" {
            let crlf = bytes.windows(2).filter(|w| w == b"\r\n").count();
            assert_eq!(crlf, ids.len() + 1);
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// The peak resident set of process `pid` so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn two_million_rows_export_in_flat_memory() {
    let (db, env) = migrated("export_memory").await;
    let rows = 2_000_000u64;
    load_co2(&db, rows, 100).await;
    let path = temp_file("export-memory.csv");
    let output = path.display().to_string();
    let log = temp_file("export-memory.log");
    let started = Instant::now();
    let mut child =
        ChildProcess::spawn(export_command(&env, &["-o", output.as_str()]), &log).unwrap();
    // VmHWM only grows; the last reading before the exit is the peak.
    let mut peak = 0;
    while child.is_running() {
        if let Some(kib) = peak_rss_kib(child.pid()) {
            peak = peak.max(kib);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(child.try_status().unwrap().success());
    let size = file_len(&path);
    let lines = std::fs::read(&path)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    let _ = std::fs::remove_file(&path);
    eprintln!(
        "2M rows: {size} bytes of CSV in {seconds:.1} s, peak RSS {} MiB",
        peak / 1024
    );
    assert_eq!(lines, rows + 1);
    // Holding the rows, or only the CSV text of them, would take more than
    // the file's size; a streaming export holds a few chunks.
    assert!(size > 128 << 20, "{size}");
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
}

/// A bridge binary with its operator listener on `listen`'s port, `extra` env on top.
async fn running_bridge(
    db: &Database,
    broker: &Broker,
    prefix: &str,
    listen: &str,
    extra: &[(&str, &str)],
) -> BridgeProcess {
    let port = http_port();
    let mut env = bridge_env(&db.url(), broker.port(), prefix, port);
    env.retain(|(k, _)| k != "CO2_BRIDGE__HTTP__LISTEN");
    env.push((
        "CO2_BRIDGE__HTTP__LISTEN".into(),
        format!("{listen}:{port}"),
    ));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let bridge = spawn_binary(&env, prefix);
    bridge.wait_ready().await;
    bridge
}

#[tokio::test]
async fn http_export_needs_a_viewer_token_off_loopback() {
    let db = Database::create("export_http_auth").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let tokens = temp_file("viewer.tokens");
    std::fs::write(&tokens, format!("alice {VIEWER_TOKEN}\n")).unwrap();
    let tokens = tokens.display().to_string();
    // Bound to every address, reached through loopback.
    let bridge = running_bridge(
        &db,
        &broker,
        &unique("exauth"),
        "0.0.0.0",
        &[("CO2_BRIDGE__HTTP__VIEWER_TOKENS_FILE", tokens.as_str())],
    )
    .await;
    load_co2(&db, 20_000, 4).await;
    let path =
        "/export?device=dev-1,dev-2&from=2024-01-01T00:10:00.000Z&to=2024-01-01T01:00:00.000Z";
    let (status, _) = http_request(bridge.http, "GET", path, &[], &[])
        .await
        .unwrap();
    assert_eq!(status, 401);
    let bearer = format!("Bearer {VIEWER_TOKEN}");
    let (status, _) = http_request(
        bridge.http,
        "GET",
        path,
        &[("Authorization", "Bearer wrong-0123456789abcdef")],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    let (status, body) = http_request(bridge.http, "GET", path, &[("Authorization", &bearer)], &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The same bytes as the CLI's.
    let env = vec![("CO2_BRIDGE__DATABASE__URL".to_owned(), db.url())];
    let cli = export(
        &env,
        &[
            "--device",
            "dev-1,dev-2",
            "--from",
            "2024-01-01T00:10:00Z",
            "--to",
            "2024-01-01T01:00:00Z",
        ],
    )
    .await;
    assert_eq!(body, cli);
    // 3,000 seconds of two devices.
    assert_eq!(csv_records(&body).1.len(), 6000);
    let (status, body) = http_request(
        bridge.http,
        "GET",
        "/export?table=nope",
        &[("Authorization", &bearer)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn a_slow_export_client_holds_up_neither_ingest_nor_readiness() {
    let db = Database::create("export_slow").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("exslow");
    let bridge = running_bridge(
        &db,
        &broker,
        &prefix,
        "127.0.0.1",
        &[("CO2_BRIDGE__HTTP__EXPORT_IDLE_TIMEOUT_S", "3")],
    )
    .await;
    load_co2(&db, 400_000, 10).await;
    let loaded = db.count("co2_emissions").await.unwrap();
    // Two clients (every export slot) that ask and then read nothing.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(bridge.http).await.unwrap();
        stream
            .write_all(b"GET /export?format=ndjson HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 64];
        let n = stream.read(&mut first).await.unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        stalled.push(stream);
    }
    let (status, _) = http_get(bridge.http, "/export").await.unwrap();
    assert_eq!(status, 503, "a third export waits for a slot");
    // Readings keep landing and the bridge stays ready meanwhile.
    let publisher = Publisher::connect(broker.port(), &unique("pub"));
    publish_range(&publisher, &prefix, 2, 0..50).await;
    let landed = wait_for_rows(&db, loaded + 100, Duration::from_secs(30)).await;
    assert_eq!(landed, loaded + 100);
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);
    // No export query runs while its client dawdles: the connection went
    // back to the pool once the chunk was read.
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() \
         AND COMMAND = 'Query' AND INFO LIKE 'SELECT%co2_emissions%ORDER BY%'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(running, 0);
    // Past the idle limit the stalled exports are dropped and their slots freed.
    let freed = wait_until(Duration::from_secs(20), || async {
        let path = "/export?device=dev-1&to=2024-01-01T00:00:10Z";
        matches!(http_get(bridge.http, path).await, Ok((200, _)))
    })
    .await;
    assert!(freed, "{}", bridge.log_tail(20));
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);
    drop(stalled);
    publisher.disconnect().await;
}
