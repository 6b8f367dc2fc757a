//! `co2-bridge dead-letters replay` on `time_zone = "auto"`: a live Pi in
//! Seoul sends local times without an offset; the bridge holds its first
//! readings as `time_zone_unknown` while it learns the offset from their
//! pacing, then stores the rest. Once learned (and kept in the state
//! directory), a replay stores the held readings in that zone.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use co2_testkit::{unique, wait_until, Database, Publisher};

use crate::dead_letter_replay::{dead_letters, letters_by_reason, seoul_payloads, SHARED_BROKER};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_held_while_an_auto_zone_was_learned_are_stored_in_it() {
    let db = Database::create("replay_auto").await.unwrap();
    let prefix = unique("replay-auto");
    let state = std::env::temp_dir().join(unique("co2-replay-state"));
    let mut env = bridge_env(&db.url(), SHARED_BROKER, &prefix, 0);
    env.push(("CO2_BRIDGE__WIRE__TIME_ZONE".into(), "auto".into()));
    env.push(("CO2_BRIDGE__STATE__DIR".into(), state.display().to_string()));
    let bridge = InProcess::start(env.clone()).await;

    // A live device: one reading every 1.5 s, stamped with Seoul's wall clock.
    let publisher = Publisher::connect(SHARED_BROKER, &unique("auto-pi"));
    let mut sent = Vec::new();
    for i in 0..6 {
        let reading = (Utc::now().timestamp(), 450.5 + f64::from(i));
        let payload = seoul_payloads(&[reading]).remove(0);
        publisher
            .publish(&format!("{prefix}/pi-auto/emissions"), payload)
            .await
            .unwrap();
        sent.push(reading);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(publisher.wait_acked(6, Duration::from_secs(30)).await);
    publisher.disconnect().await;
    let settled = wait_until(Duration::from_secs(30), || async {
        let letters = db.count("rejected_messages").await.unwrap_or(0);
        letters + db.count("co2_emissions").await.unwrap_or(0) >= 6
    })
    .await;
    assert!(settled);
    let held = letters_by_reason(&db).await;
    assert!(
        matches!(&held[..], [(reason, n)] if reason == "time_zone_unknown" && *n > 0),
        "{held:?}"
    );
    // The bridge keeps what it learned on disk every few seconds.
    let learned = state.join("learned-time-zones.json");
    assert!(
        wait_until(Duration::from_secs(30), || async { learned.exists() }).await,
        "nothing learned: {held:?}"
    );

    let (code, out) = dead_letters(&env, &["replay"]).await;
    assert_eq!(code, 0, "{out}");
    let want: BTreeSet<(String, i64, i64)> = sent
        .iter()
        .map(|(t, v)| ("pi-auto".to_owned(), t * 1000, (v * 100.0).round() as i64))
        .collect();
    let (got, rows) = stored_in(db.pool()).await;
    assert_eq!(got, want, "every reading at its UTC time");
    assert_eq!(rows, 6);
    assert_eq!(db.count("rejected_messages").await.unwrap(), 0);
    bridge.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}
