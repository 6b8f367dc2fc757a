//! Batched JSON against the real broker and MariaDB, through the shipped
//! routes example: the 36 inputs of Telegraf's json_v2 parser corpus with and
//! without `json.batch`, an array of 1,000 readings across a kill -9, and an
//! array over the bound beside readings that keep landing.

use std::time::Duration;

use co2_testkit::{http_get, metric_value, unique, wait_until, Publisher};

use crate::support::*;

const TOKEN: (&str, &str) = ("cam-1", "cam-1-token-0123456789abcdef");

/// The corpus, by file name (see the fixture's README).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/telegraf-json_v2"
    );
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

async fn count_by(db: &co2_testkit::Database, sql: &str) -> Vec<(String, i64)> {
    sqlx::query_as(sql).fetch_all(db.pool()).await.unwrap()
}

/// Each input on a plain JSON route (`zigbee2mqtt/<n>`, one message each)
/// and on a batching one (`buffered/<n>`): the plain route stores 33 and
/// refuses the 2 arrays and the one of 90 fields; the batching route stores
/// every element of the 2 arrays as a reading too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telegraf_corpus() {
    let s = route_rig("telegraf", TOKEN, str::to_owned).await;
    let bridge = InProcess::start_with(s.env.clone(), Some(&s.config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("telegraf"));
    let files = corpus();
    assert_eq!(files.len(), 36);
    for (i, (_, payload)) in files.iter().enumerate() {
        publisher
            .publish(&format!("zigbee2mqtt/tg-{i}"), payload.clone())
            .await
            .unwrap();
        publisher
            .publish(&format!("buffered/tb-{i}"), payload.clone())
            .await
            .unwrap();
    }
    assert!(publisher.wait_acked(72, Duration::from_secs(30)).await);
    let received = |route: &'static str| {
        let bridge = &bridge;
        async move {
            let scrape = bridge.scrape().await;
            metric_value(
                &scrape,
                &format!("co2_bridge_messages_received_total{{route=\"{route}\"}}"),
            )
            .unwrap_or(0.0)
        }
    };
    assert!(
        wait_until(Duration::from_secs(30), || async {
            received("zigbee2mqtt").await >= 36.0 && received("buffered").await >= 36.0
        })
        .await
    );
    // Received counts at intake: wait until what was received is written.
    let written = || async {
        let scrape = bridge.scrape().await;
        metric_value(&scrape, "co2_bridge_pending_messages").unwrap_or(1.0) == 0.0
    };
    assert!(wait_until(Duration::from_secs(30), written).await);
    let stored = count_by(
        &s.db,
        "SELECT SUBSTRING_INDEX(topic, '/', 1), COUNT(DISTINCT device)
           FROM readings GROUP BY 1 ORDER BY 1",
    )
    .await;
    let refused = count_by(
        &s.db,
        "SELECT CONCAT(SUBSTRING_INDEX(topic, '/', 1), ' ', reason), COUNT(*)
           FROM rejected_messages GROUP BY 1 ORDER BY 1",
    )
    .await;
    let name_of = |topic: &str| {
        let i: usize = topic.rsplit('-').next().unwrap().parse().unwrap();
        files[i].0.clone()
    };
    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT topic, reason FROM rejected_messages ORDER BY topic")
            .fetch_all(s.db.pool())
            .await
            .unwrap();
    let letters: Vec<String> = letters
        .iter()
        .map(|(t, r)| format!("{t} {} {r}", name_of(t)))
        .collect();
    eprintln!("stored devices per route: {stored:?}\nrefused: {letters:#?}");
    assert_eq!(
        stored,
        [("buffered".to_owned(), 35), ("zigbee2mqtt".to_owned(), 33)]
    );
    assert_eq!(
        refused,
        [
            ("buffered too_many_fields".to_owned(), 1),
            ("zigbee2mqtt not_an_object".to_owned(), 2),
            ("zigbee2mqtt too_many_fields".to_owned(), 1),
        ]
    );
    // Every element of the two arrays is a reading of its own: as many
    // distinct receive stamps as elements (they carry no time).
    for (name, elements) in [
        ("nested_and_nonnested_tags__input", 2),
        ("nested_array_of_objects__input", 2),
    ] {
        let i = files.iter().position(|(n, _)| n == name).unwrap();
        let times: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT `time`) FROM readings WHERE topic = ?")
                .bind(format!("buffered/tb-{i}"))
                .fetch_one(s.db.pool())
                .await
                .unwrap();
        assert_eq!(times, elements, "{name}");
    }
}

/// One reading of the 1,000 in message `i`'s array.
fn minute(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(1_714_557_600 + 60 * i as i64, 0).unwrap();
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Fifty buffered arrays of 1,000 readings, the bridge killed in the middle:
/// every reading once, none twice (each element carries its time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_stores_every_element_of_large_batches_exactly_once() {
    let mut rig = route_rig("killbatch", TOKEN, str::to_owned).await;
    // About one array a batch, so the table grows in steps a kill can land between.
    rig.env
        .push(("CO2_BRIDGE__BATCH__MAX_BYTES".into(), "50000".into()));
    let drill = Drill {
        rig,
        table: "readings",
        message: |m| {
            let elements: Vec<String> = (0..1000)
                .map(|k| {
                    format!(
                        r#"{{"time":"{}","co2":{}}}"#,
                        minute(m * 1000 + k),
                        400 + k % 50
                    )
                })
                .collect();
            (
                format!("buffered/gw-{}", m % 2),
                format!("[{}]", elements.join(",")).into_bytes(),
            )
        },
        messages: 50,
        rows: 50_000,
        kill_at: 5000,
        distinct: "SELECT COUNT(DISTINCT device, `time`) FROM readings",
        exact: true,
    };
    sigkill_drill("killbatch", drill).await;
}

/// An array one element over the bound is one dead letter; the readings
/// beside it land, and the bridge stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_bound_is_one_dead_letter_and_others_land() {
    let s = route_rig("batchbound", TOKEN, str::to_owned).await;
    let bridge = InProcess::start_with(s.env.clone(), Some(&s.config)).await;
    let publisher = Publisher::connect(s.broker.port(), &unique("bound"));
    let array = |n: usize| {
        let elements: Vec<String> = (0..n)
            .map(|k| format!(r#"{{"time":"{}","co2":1}}"#, minute(k)))
            .collect();
        format!("[{}]", elements.join(","))
    };
    publisher
        .publish("buffered/big", array(1001))
        .await
        .unwrap();
    publisher.publish("buffered/ok", array(1000)).await.unwrap();
    publisher
        .publish(
            "buffered/mixed",
            r#"[{"co2": 1}, 7, {"co2": "high", "time": "soon"}]"#,
        )
        .await
        .unwrap();
    assert!(publisher.wait_acked(3, Duration::from_secs(30)).await);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            s.db.count("rejected_messages").await.unwrap_or(0) >= 3
                && s.db.count("readings").await.unwrap_or(0) >= 1001
        })
        .await
    );
    let letters: Vec<(String, String, u32, Option<String>)> = sqlx::query_as(
        "SELECT topic, reason, payload_bytes, detail FROM rejected_messages ORDER BY id",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(
        (letters[0].0.as_str(), letters[0].1.as_str()),
        ("buffered/big", "too_many_elements")
    );
    assert_eq!(letters[0].2 as usize, array(1001).len());
    assert_eq!(
        (letters[1].1.as_str(), letters[1].2, letters[1].3.as_deref()),
        ("not_an_object", 1, Some("element 2 of 3"))
    );
    assert_eq!(
        (letters[2].1.as_str(), letters[2].3.as_deref()),
        ("bad_datetime", Some("element 3 of 3"))
    );
    assert_eq!(s.db.count("readings").await.unwrap(), 1001);
    assert_eq!(http_get(bridge.http, "/readyz").await.unwrap().0, 200);
}
