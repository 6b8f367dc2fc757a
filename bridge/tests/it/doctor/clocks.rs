//! The doctor's `device clocks` hop on what a real bridge stored: devices
//! that send their local wall-clock time without an offset, as the
//! reference Python publisher does, to a bridge reading UTC. One in New
//! York is stored 5 h early, one in Seoul is dead-lettered; both are named
//! with the zone they live in. About 20 s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use co2_testkit::doctor::{failure, ok};
use co2_testkit::{unique, wait_until, Database, Publisher};

use super::{doctor, env, feed, migrated};
use crate::support::{bridge_env, InProcess};

/// `datetime.now()` formatted as the Python publisher does: no offset, no padding.
fn python_payload(wall: DateTime<Utc>, value: f64) -> String {
    format!("{}|{value}", wall.format("%Y-%-m-%-d %-H:%-M:%-S"))
}

async fn count(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_in_another_zone_are_named_with_it_and_correct_clocks_pass() {
    let db = Database::create("doctorclk").await.unwrap();
    migrated(&db).await;
    let prefix = unique("doctorclk");
    // `pi` publishes live UTC times all along: a correct clock.
    let feeder = feed(1883, format!("{prefix}/pi/emissions"), None);
    let bridge = InProcess::start(bridge_env(&db.url(), 1883, &prefix, 0)).await;
    let publisher = Publisher::connect(1883, &unique("clk"));
    let now = Utc::now();
    for i in 0..5 {
        let earlier = chrono::Duration::seconds(i);
        let ny = now - chrono::Duration::hours(5) - earlier;
        let seoul = now + chrono::Duration::hours(9) - earlier;
        publisher
            .publish(
                &format!("{prefix}/pi-ny/emissions"),
                python_payload(ny, 412.5),
            )
            .await
            .unwrap();
        publisher
            .publish(
                &format!("{prefix}/pi-seoul/emissions"),
                python_payload(seoul, 415.0),
            )
            .await
            .unwrap();
    }
    let arrived = wait_until(Duration::from_secs(30), || async {
        count(
            &db,
            "SELECT COUNT(*) FROM co2_emissions WHERE device = 'pi-ny'",
        )
        .await
            == 5
            && count(
                &db,
                "SELECT COUNT(*) FROM co2_emissions WHERE device = 'pi'",
            )
            .await
                >= 3
            && count(
                &db,
                "SELECT COUNT(*) FROM rejected_messages WHERE reason = 'too_far_in_future'",
            )
            .await
                == 5
    })
    .await;
    assert!(
        arrived,
        "the bridge did not store and dead-letter the readings"
    );
    bridge.stop().await;
    // Stored as the bridge read them: 5 h before they arrived.
    let early: i64 = count(
        &db,
        "SELECT MAX(TIMESTAMPDIFF(SECOND, received_at, date_time)) FROM co2_emissions \
         WHERE device = 'pi-ny'",
    )
    .await;
    assert!((-5 * 3600 - 5..=-5 * 3600).contains(&early), "{early}");

    let base = env(1883, &db.url(), &prefix);
    let (code, out) = doctor(&base).await;
    let f = failure(&out, "mysql device clocks");
    assert!(
        f.contains(
            "device pi-ny in co2_emissions: 5 h 00 min behind its arrival: local time of \
             UTC-05:00? set the time zone of route co2 or of this device"
        ),
        "{f}"
    );
    assert!(
        f.contains(&format!(
            "device pi-seoul (topic {prefix}/pi-seoul/emissions): 5 reading(s) dead-lettered \
             too_far_in_future, 9 h 00 min ahead of its arrival: local time of UTC+09:00? \
             set the time zone of route co2 or of this device"
        )),
        "{f}"
    );
    assert!(!f.contains("device pi "), "{f}");
    assert!(
        f.contains("co2-bridge dead-letters replay") && f.contains("co2-bridge retime"),
        "{f}"
    );
    assert_eq!(code, 1);

    // Once they are repaired, only the correct clock is left.
    sqlx::query("DELETE FROM co2_emissions WHERE device = 'pi-ny'")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM rejected_messages")
        .execute(db.pool())
        .await
        .unwrap();
    let (code, out) = doctor(&base).await;
    assert!(
        ok(&out, "mysql device clocks").contains(
            "1 device(s) sent readings in the last 15 min, none a time zone off (farthest: pi, "
        ),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");
    feeder.abort();
}
