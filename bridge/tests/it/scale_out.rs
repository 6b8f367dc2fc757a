//! Scale-out: bridges in one shared-subscription group split a stream, and a
//! member killed with SIGKILL mid-stream costs nothing: no reading lost, none
//! stored twice.

use std::time::Duration;

use co2_testkit::{http_get, unique, wait_until, Broker, Database};

use crate::support::*;

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value));
}

/// Messages a bridge took from the broker (summed over routes).
async fn received(bridge: &BridgeProcess) -> f64 {
    let Ok((200, scrape)) = http_get(bridge.http, "/metrics").await else {
        return 0.0;
    };
    scrape
        .lines()
        .filter(|l| l.starts_with("co2_bridge_messages_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bridges_in_a_shared_group_split_a_stream_and_a_sigkilled_one_loses_nothing() {
    let db = Database::create("share").await.unwrap();
    let broker = Broker::start("").await.unwrap();
    let prefix = unique("share");
    // Each member needs its own client id: the broker keeps one session per id.
    let envs: Vec<Vec<(String, String)>> = (0..3)
        .map(|i| {
            let mut env = bridge_env(&db.url(), broker.port(), &prefix, http_port());
            set(
                &mut env,
                "CO2_BRIDGE__MQTT__CLIENT_ID",
                format!("{prefix}-bridge-{i}"),
            );
            set(
                &mut env,
                "CO2_BRIDGE__MQTT__TOPICS",
                format!("$share/co2-bridges/{prefix}/+/emissions"),
            );
            env
        })
        .collect();
    let mut bridges: Vec<BridgeProcess> = envs
        .iter()
        .enumerate()
        .map(|(i, env)| spawn_binary(env, &format!("share-bridge-{i}")))
        .collect();
    for b in &bridges {
        b.wait_ready().await;
    }

    // About 2,000 readings/s for ~6 s: long enough to kill a member mid-stream.
    let (devices, per_device) = (4, 3000);
    let total = (devices * per_device) as i64;
    let stream = spawn_stream(
        broker.port(),
        &prefix,
        devices,
        per_device,
        Some(Duration::from_millis(2)),
    );
    assert!(
        wait_until(Duration::from_secs(60), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= 1500
        })
        .await
    );
    // The stream is split: every member has taken a share.
    for (i, b) in bridges.iter().enumerate() {
        assert!(
            received(b).await > 0.0,
            "bridge {i} received nothing; log:\n{}",
            b.log_text()
        );
    }

    bridges[1].process.kill().await.unwrap();
    let at_kill = db.count("co2_emissions").await.unwrap();
    assert!(
        at_kill < total,
        "stream ended before the kill; make it longer"
    );
    // The two others keep writing while the third is gone.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            db.count("co2_emissions").await.unwrap_or(0) >= at_kill + 1000
        })
        .await,
        "the surviving members stopped storing"
    );
    stream.await.unwrap();
    // Settle: whatever the survivors will store without the dead member.
    let mut settled = db.count("co2_emissions").await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = db.count("co2_emissions").await.unwrap();
        if now == settled {
            break;
        }
        settled = now;
    }
    eprintln!(
        "shared group: {settled} of {total} readings stored while one member was down \
         (Mosquitto keeps a dead member's share, and its unacknowledged messages, queued \
         for its session until it comes back)"
    );

    // The member comes back under its client id (systemd's Restart=on-failure) and
    // resumes its session: what was in flight to it and what was queued for it arrive.
    let restarted = spawn_binary(&envs[1], "share-bridge-1-restarted");
    restarted.wait_ready().await;
    assert_restart_completes(&db, &restarted, devices, per_device).await;
    bridges.remove(1);
    drop(restarted);
    drop(bridges);
}
