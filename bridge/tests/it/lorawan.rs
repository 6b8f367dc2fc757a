//! LoRaWAN network servers' messages through the real broker into MariaDB,
//! with the shipped routes (`ttn`, `ttn-events`, `chirpstack`,
//! `chirpstack-events`): the servers' documented examples byte for byte, and
//! a stream of uplinks whose frame counter skips three (three lost uplinks,
//! in `reading_gaps` and the metric), resets (a new session, no false gap),
//! repeats (stored once) and moves to a new DevAddr (a join).

use std::time::Duration;

use chrono::{DateTime, Utc};

use co2_testkit::{http_get, metric_value, unique, wait_until, Database, Publisher};

use crate::support::*;

const TOKEN: (&str, &str) = ("cam-1", "cam-1-token-0123456789abcdef");

const TTN_UPLINK: &[u8] = include_bytes!("../fixtures/lorawan/ttn_uplink.json");
const TTN_UPLINK_2025: &[u8] = include_bytes!("../fixtures/lorawan/ttn_uplink_2025.json");
const TTN_JOIN: &[u8] = include_bytes!("../fixtures/lorawan/ttn_join.json");
const TTN_ACK: &[u8] = include_bytes!("../fixtures/lorawan/ttn_downlink_ack.json");
const CS_UP: &[u8] = include_bytes!("../fixtures/lorawan/chirpstack_up.json");
const CS_JOIN: &[u8] = include_bytes!("../fixtures/lorawan/chirpstack_join.json");
const CS_ACK: &[u8] = include_bytes!("../fixtures/lorawan/chirpstack_ack.json");
const CS_TXACK: &[u8] = include_bytes!("../fixtures/lorawan/chirpstack_txack.json");
const CS_STATUS: &[u8] = include_bytes!("../fixtures/lorawan/chirpstack_status.json");

const TTN_APP: &str = "v3/app1@ttn/devices";
const CS_APP: &str =
    "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event";

/// The TTN example as device `device` of session `dev_addr` would send its
/// uplink number `f_cnt`, received at `at`.
fn ttn_uplink(device: &str, dev_addr: &str, f_cnt: u32, at: DateTime<Utc>) -> Vec<u8> {
    let text = String::from_utf8(TTN_UPLINK.to_vec()).unwrap();
    let edited = text
        .replace(
            "\"device_id\" : \"dev1\"",
            &format!("\"device_id\" : \"{device}\""),
        )
        .replace(
            "\"dev_addr\" : \"00BCB929\"",
            &format!("\"dev_addr\" : \"{dev_addr}\""),
        )
        .replace("\"f_cnt\" : 1,", &format!("\"f_cnt\" : {f_cnt},"))
        .replace(
            "\"received_at\" : \"2020-02-12T15:15:45.789585559Z\"",
            &format!(
                "\"received_at\" : \"{}\"",
                at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            ),
        );
    assert_ne!(edited, text);
    edited.into_bytes()
}

async fn scalar(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_servers_uplinks_and_events_are_stored_and_lost_uplinks_counted() {
    let mut s = route_rig("lorawan", TOKEN, str::to_owned).await;
    s.env.push((
        "CO2_BRIDGE__COMPLETENESS__SCAN_INTERVAL_S".into(),
        "1".into(),
    ));
    s.env
        .push(("CO2_BRIDGE__COMPLETENESS__LATE_AFTER_S".into(), "2".into()));
    let bridge = spawn_binary(&s.env, "lorawan");
    bridge.wait_ready().await;
    let publisher = Publisher::connect(s.broker.port(), &unique("lorawan"));

    // The documented examples, byte for byte, on their servers' topics.
    let examples: Vec<(String, &[u8])> = vec![
        (format!("{TTN_APP}/dev1/up"), TTN_UPLINK),
        (format!("{TTN_APP}/dev1/join"), TTN_JOIN),
        (format!("{TTN_APP}/dev1/down/ack"), TTN_ACK),
        (format!("{CS_APP}/up"), CS_UP),
        (format!("{CS_APP}/join"), CS_JOIN),
        (format!("{CS_APP}/ack"), CS_ACK),
        (format!("{CS_APP}/txack"), CS_TXACK),
        (format!("{CS_APP}/status"), CS_STATUS),
        // Refused: another device's topic, and the docs' current example (not JSON).
        (format!("{TTN_APP}/dev2/up"), TTN_UPLINK),
        (format!("{TTN_APP}/dev1/up"), TTN_UPLINK_2025),
    ];
    // co2-1's uplinks: 1..=10 without 4..=6 (lost), then a reset to 0..=2,
    // 2 again (the same uplink redelivered), then a join (a new DevAddr) and 0..=1.
    let mut stream: Vec<Vec<u8>> = Vec::new();
    // Received in the last half hour, so the status page's hour shows them.
    let mut at = Utc::now() - chrono::Duration::minutes(30);
    let mut next = |dev_addr: &str, f_cnt: u32| {
        at += chrono::Duration::seconds(7);
        ttn_uplink("co2-1", dev_addr, f_cnt, at)
    };
    for f_cnt in (1..=10).filter(|n| !(4..=6).contains(n)) {
        stream.push(next("26011F00", f_cnt));
    }
    for f_cnt in 0..=2 {
        stream.push(next("26011F00", f_cnt));
    }
    stream.push(stream.last().unwrap().clone());
    for f_cnt in 0..=1 {
        stream.push(next("26011F77", f_cnt));
    }
    for (topic, payload) in &examples {
        publisher.publish(topic, *payload).await.unwrap();
    }
    for payload in &stream {
        publisher
            .publish(&format!("{TTN_APP}/co2-1/up"), payload.clone())
            .await
            .unwrap();
    }
    // The examples again: a redelivery stores nothing new.
    for (topic, payload) in examples.iter().take(8) {
        publisher.publish(topic, *payload).await.unwrap();
    }
    let total = (examples.len() + stream.len() + 8) as u64;
    assert!(publisher.wait_acked(total, Duration::from_secs(30)).await);
    // Stored: every uplink's frame (dev1, the ChirpStack device, co2-1's 12),
    // the six events and the two refusals.
    let db = &s.db;
    let stored = wait_until(Duration::from_secs(30), || async {
        scalar(db, "SELECT COUNT(*) FROM lorawan_frames").await == 14
            && scalar(db, "SELECT COUNT(*) FROM device_events").await == 6
            && scalar(db, "SELECT COUNT(*) FROM rejected_messages").await == 2
    })
    .await;
    assert!(stored, "{}", bridge.log_text());

    // The TTN example: its two decoded fields and four radio fields, at the
    // Network Server's receive time.
    let rows: Vec<(String, String, Option<f64>)> = sqlx::query_as(
        "SELECT DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s.%f'), CAST(field AS CHAR), `value` \
         FROM readings WHERE device = 'dev1' ORDER BY id",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    let at = "2020-02-12 15:15:45.789000".to_owned();
    assert_eq!(
        rows,
        [
            (at.clone(), "temperature".into(), Some(1.0)),
            (at.clone(), "luminosity".into(), Some(0.64)),
            (at.clone(), "lorawan.rssi".into(), Some(-35.0)),
            (at.clone(), "lorawan.snr".into(), Some(5.0)),
            (at.clone(), "lorawan.gateways".into(), Some(1.0)),
            (at, "lorawan.f_cnt".into(), Some(1.0)),
        ],
        "{}",
        bridge.log_text()
    );
    // The ChirpStack example has no object: its radio metadata.
    let rows: Vec<(String, Option<f64>)> = sqlx::query_as(
        "SELECT CAST(field AS CHAR), `value` FROM readings \
         WHERE device = '0101010101010101' AND `time` = '2022-07-18 09:34:15.775' ORDER BY id",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("lorawan.rssi".into(), Some(-36.0)),
            ("lorawan.snr".into(), Some(10.5)),
            ("lorawan.gateways".into(), Some(1.0)),
            ("lorawan.f_cnt".into(), Some(0.0)),
            ("lorawan.f_port".into(), Some(1.0)),
        ]
    );

    // Joins, acks and status are device events, once each.
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(device AS CHAR), CAST(kind AS CHAR), DATE_FORMAT(`time`, '%Y-%m-%d %H:%i:%s') \
         FROM device_events ORDER BY `time`",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    let cs = "0101010101010101".to_owned();
    assert_eq!(
        events,
        [
            (
                "dev1".into(),
                "ttn_join_accept".into(),
                "2020-02-17 07:49:09".into()
            ),
            (
                "dev1".into(),
                "ttn_downlink_ack".into(),
                "2020-02-17 10:32:24".into()
            ),
            (
                cs.clone(),
                "chirpstack_join".into(),
                "2022-07-18 09:33:28".into()
            ),
            (
                cs.clone(),
                "chirpstack_status".into(),
                "2022-07-18 09:35:06".into()
            ),
            (
                cs.clone(),
                "chirpstack_txack".into(),
                "2022-07-18 09:37:48".into()
            ),
            (cs, "chirpstack_ack".into(), "2022-07-18 09:38:49".into()),
        ]
    );
    let body: String =
        sqlx::query_scalar("SELECT body FROM device_events WHERE kind = 'ttn_join_accept'")
            .fetch_one(s.db.pool())
            .await
            .unwrap();
    assert_eq!(body.as_bytes(), TTN_JOIN);

    // Refused with their reasons; nothing else.
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM rejected_messages ORDER BY id")
            .fetch_all(s.db.pool())
            .await
            .unwrap();
    assert_eq!(reasons, ["device_mismatch", "bad_json"]);

    // co2-1: 12 distinct uplinks (the repeat stored once) in three sessions.
    assert_eq!(
        scalar(
            &s.db,
            "SELECT COUNT(*) FROM lorawan_frames WHERE device = 'co2-1'"
        )
        .await,
        12
    );
    assert_eq!(
        scalar(
            &s.db,
            "SELECT COUNT(DISTINCT `time`) FROM readings WHERE device = 'co2-1'"
        )
        .await,
        12
    );
    assert_eq!(
        scalar(
            &s.db,
            "SELECT COUNT(DISTINCT epoch) FROM lorawan_frames WHERE device = 'co2-1'"
        )
        .await,
        3
    );

    // The gap is final once the grace period is over: exactly 4..=6, lost.
    let settled = wait_until(Duration::from_secs(30), || async {
        scalar(
            db,
            "SELECT COUNT(*) FROM reading_gaps WHERE state = 'final'",
        )
        .await
            == 1
            && scalar(db, "SELECT COUNT(*) FROM reading_gaps WHERE state = 'open'").await == 0
    })
    .await;
    let gaps: Vec<(String, String, u64, u64, u64, String)> = sqlx::query_as(
        "SELECT CAST(device AS CHAR), CAST(epoch AS CHAR), first_seq, last_seq, announced, \
                CAST(state AS CHAR) FROM reading_gaps ORDER BY id",
    )
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert!(settled, "{gaps:?}\n{}", bridge.log_text());
    let first_epoch: String = sqlx::query_scalar(
        "SELECT CAST(epoch AS CHAR) FROM lorawan_frames WHERE device = 'co2-1' ORDER BY `time` LIMIT 1",
    )
    .fetch_one(s.db.pool())
    .await
    .unwrap();
    assert!(first_epoch.starts_with("26011f00"), "{first_epoch}");
    assert_eq!(
        gaps,
        [("co2-1".into(), first_epoch, 4, 6, 0, "final".into())]
    );
    let http = bridge.http;
    let lost = "co2_device_readings_missing_total{cause=\"lost\",device=\"co2-1\"}";
    let counted = wait_until(Duration::from_secs(10), || async move {
        let scrape = http_get(http, "/metrics").await.unwrap().1;
        metric_value(&scrape, lost) == Some(3.0)
    })
    .await;
    let scrape = http_get(http, "/metrics").await.unwrap().1;
    assert!(counted, "{scrape}");
    // The status page's completeness counts the uplinks and the lost ones.
    let (_, body) = http_get(http, "/status.json").await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = json["completeness"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["device"] == "co2-1"))
        .cloned();
    let row = row.unwrap_or_else(|| panic!("no completeness row for co2-1: {body}"));
    assert_eq!(
        (
            row["stored"].clone(),
            row["lost"].clone(),
            row["pending"].clone()
        ),
        (12.into(), 3.into(), 0.into()),
        "{row}"
    );
    // No session, reset or join is taken for loss elsewhere.
    for device in ["dev1", "0101010101010101"] {
        let series =
            format!("co2_device_readings_missing_total{{cause=\"lost\",device=\"{device}\"}}");
        assert!(
            metric_value(&scrape, &series).unwrap_or(0.0) == 0.0,
            "{series}: {scrape}"
        );
    }
}
