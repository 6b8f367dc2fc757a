//! The doctor reports every hop in one run: on a fresh install (nothing
//! published yet) it passes with the ACL unproven, with a closed broker port
//! and a wrong database password it names both, and the broker's 5 s listen
//! overlaps a database that does not answer instead of adding to it. About
//! 20 s.

use std::time::{Duration, Instant};

use co2_testkit::doctor::{failure, ok, skipped, summary, unproven, with};
use co2_testkit::{free_port, unique, Database};

use super::{doctor, env, migrated};

/// A fresh database's own account with every grant the bridge needs.
async fn account(db: &Database, password: &str) -> (String, String) {
    let user = format!("doc{:08x}", rand::random::<u32>());
    sqlx::query(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'"
    ))
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `{}`.* TO '{user}'@'127.0.0.1'",
        db.name()
    ))
    .execute(db.pool())
    .await
    .unwrap();
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name());
    (user, url)
}

async fn drop_account(db: &Database, user: &str) {
    sqlx::query(&format!("DROP USER '{user}'@'127.0.0.1'"))
        .execute(db.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_with_no_device_yet_passes_with_the_acl_unproven() {
    let db = Database::create("doctorfresh").await.unwrap();
    migrated(&db).await;
    let (user, url) = account(&db, "fresh-pw").await;
    let prefix = unique("doctorfresh");
    let base = with(
        env(1883, &url, &prefix),
        "CO2_BRIDGE__DATABASE__PASSWORD",
        "fresh-pw",
    );

    let (code, out) = doctor(&base).await;
    assert_eq!(code, 0, "{out}");
    let acl = unproven(&out, "broker acl");
    assert!(
        acl.contains(&format!(
            "subscribed, but nothing arrived on {prefix}/+/emissions within 5 s"
        )) && acl.contains("to prove: a message on those topics")
            && acl.contains("co2-bridge acl"),
        "{acl}"
    );
    for hop in ["tcp", "auth", "grants", "migrations", "clock"] {
        ok(&out, &format!("mysql {hop}"));
    }
    unproven(&out, "mysql device clocks");
    assert_eq!(
        summary(&out),
        "9 ok, 2 unproven (broker acl, mysql device clocks), 0 failed"
    );
    // The printed order stays config, broker, database, device clocks.
    let at = |hop: &str| out.find(&format!(" {hop} ")).unwrap();
    assert!(at("config") < at("broker dns"), "{out}");
    assert!(at("broker acl") < at("mysql tcp"), "{out}");
    assert!(at("mysql clock") < at("mysql device clocks"), "{out}");
    drop_account(&db, &user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_broker_port_and_a_wrong_database_password_are_named_in_one_run() {
    let db = Database::create("doctorboth").await.unwrap();
    migrated(&db).await;
    let (user, url) = account(&db, "right-pw").await;
    let prefix = unique("doctorboth");
    let closed = free_port().unwrap();
    let broken = with(
        env(closed, &url, &prefix),
        "CO2_BRIDGE__DATABASE__PASSWORD",
        "wrong-pw",
    );

    let (code, out) = doctor(&broken).await;
    assert_eq!(code, 1, "{out}");
    let f = failure(&out, "broker tcp");
    assert!(f.contains("start the broker"), "{f}");
    let f = failure(&out, "mysql auth");
    assert!(
        f.contains(&format!("refused {user}")) && f.contains("password"),
        "{f}"
    );
    skipped(&out, "broker auth", "broker tcp");
    skipped(&out, "broker acl", "broker tcp");
    for hop in ["grants", "migrations", "clock", "device clocks"] {
        skipped(&out, &format!("mysql {hop}"), "mysql auth");
    }
    assert_eq!(
        summary(&out),
        "3 ok, 0 unproven, 2 failed (broker tcp, mysql auth), 6 skipped"
    );
    drop_account(&db, &user).await;
}

/// A database that accepts TCP and never answers: the login waits for the
/// pool's `connect_timeout_s`. Run one after the other, the broker's 5 s
/// listen and that wait would add up; side by side, the run takes the longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_and_database_walks_run_side_by_side() {
    let db = Database::create("doctorpar").await.unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let prefix = unique("doctorpar");
    let wait_s = 8;
    let e = with(
        env(1883, &db.url_via(port), &prefix),
        "CO2_BRIDGE__DATABASE__CONNECT_TIMEOUT_S",
        &wait_s.to_string(),
    );

    let started = Instant::now();
    let (code, out) = doctor(&e).await;
    let took = started.elapsed();
    eprintln!("the doctor took {took:?}");
    holder.abort();
    assert_eq!(code, 1, "{out}");
    unproven(&out, "broker acl");
    ok(&out, "mysql tcp");
    let f = failure(&out, "mysql auth");
    assert!(
        f.contains(&format!(
            "127.0.0.1:{port} accepted the connection but gave no MySQL answer"
        )),
        "{f}"
    );
    // One after the other: at least 5 + 8 s.
    assert!(
        took >= Duration::from_secs(wait_s) && took < Duration::from_secs(wait_s + 4),
        "took {took:?}:\n{out}"
    );
}
