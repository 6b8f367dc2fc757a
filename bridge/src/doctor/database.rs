//! A MySQL sink's hops: DNS, TCP, authentication, the grants the bridge
//! needs, the migrations, the clock against the database's.

use std::time::Duration;

use co2_wire::doctor::{fail, resolve, tcp, Report, STEP_TIMEOUT};
use sqlx::MySqlPool;

use crate::config::Settings;
use crate::sink::mysql::schema;

/// Largest clock difference to the database that passes.
const MAX_SKEW: Duration = Duration::from_secs(2);

/// The hops that need a login, each independent of the others.
const AFTER_LOGIN: [&str; 3] = ["grants", "migrations", "clock"];

/// The MySQL sink `name`: DNS, TCP and authentication, each needing the one
/// before; then the grants, the migrations and the clock, which need only
/// the login, so a missing grant does not hide a migration not applied. The
/// hops after a failure are recorded as skipped behind it. Returns the
/// report and, when the device clocks cannot be read, the failed hop they
/// need (the login, or the migrations that make the tables).
pub(super) async fn walk(
    settings: &Settings,
    name: &str,
    pool: &MySqlPool,
) -> (Report, Option<String>) {
    let mut r = Report::default();
    let options = pool.connect_options();
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let db = options.get_database().unwrap_or("").to_owned();
    let user = options.get_username().to_owned();
    let key = if name == crate::route::DEFAULT_SINK {
        "database.url".to_owned()
    } else {
        format!("sinks.{name}.url")
    };
    let hop = |what: &str| format!("{name} {what}");
    // Records the failed hop `what` and skips `rest` behind it.
    let blocked = |r: &mut Report, what: &str, rest: &[&str]| {
        let failed = hop(what);
        r.skip(&failed, rest.iter().map(|h| hop(h)));
        Some(failed)
    };
    let addr = match resolve(&host, port, &key).await {
        Ok(a) => a,
        Err(f) => {
            r.hop(hop("dns"), Err(f));
            let rest = [["tcp", "auth"].as_slice(), &AFTER_LOGIN].concat();
            let failed = blocked(&mut r, "dns", &rest);
            return (r, failed);
        }
    };
    let firewall = format!(
        "let this machine reach {host}:{port} (MySQL stays on loopback or a private network; check its bind-address and firewall)"
    );
    if !r.hop(
        hop("tcp"),
        tcp(
            addr,
            &key,
            "start the database, or fix the host and port in the URL",
            &firewall,
        )
        .await,
    ) {
        let rest = [["auth"].as_slice(), &AFTER_LOGIN].concat();
        let failed = blocked(&mut r, "tcp", &rest);
        return (r, failed);
    }
    let conn = tokio::time::timeout(2 * STEP_TIMEOUT, pool.acquire()).await;
    let outcome = match conn {
        // The pool's own acquire timeout (connect_timeout_s) may end first.
        Err(_) | Ok(Err(sqlx::Error::PoolTimedOut)) => Err(fail(
            format!("{host}:{port} accepted the connection but gave no MySQL answer in time"),
            format!("is it a MySQL port? check {key} (and connect_timeout_s on a slow link)"),
        )),
        Ok(Err(e)) => Err(match schema::mysql_error_number(&e) {
            Some(1045) => fail(
                format!("the server refused {user}: {e}"),
                format!("check the user in {key} and its password (database.password_file); provisioning/mysql/apply.sh sets it"),
            ),
            Some(1044 | 1049) => fail(
                format!("{user} cannot use database {db}: {e}"),
                "create the database and grant the account (provisioning/mysql/apply.sh)",
            ),
            _ => fail(e.to_string(), format!("check {key}")),
        }),
        Ok(Ok(_)) => Ok(format!("logged in as {user} to {db}")),
    };
    if !r.hop(hop("auth"), outcome) {
        let failed = blocked(&mut r, "auth", &AFTER_LOGIN);
        return (r, failed);
    }
    let mut needed = vec!["SELECT", "INSERT", "UPDATE"];
    if settings.dead_letters.retention_days > 0 {
        needed.push("DELETE");
    }
    let grants: Result<Vec<String>, sqlx::Error> =
        sqlx::query_scalar("SHOW GRANTS").fetch_all(pool).await;
    let outcome = match grants {
        Err(e) => Err(fail(
            format!("SHOW GRANTS failed: {e}"),
            "check the account",
        )),
        Ok(lines) => {
            let missing: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|p| !grants_cover(&lines, &db, p))
                .collect();
            if missing.is_empty() {
                Ok(format!("{user} has {} on {db}", needed.join(", ")))
            } else {
                Err(fail(
                    format!("{user} lacks {} on `{db}`.*", missing.join(", ")),
                    format!(
                        "GRANT {} ON `{db}`.* TO the bridge's account (provisioning/mysql/apply.sh grants exactly what it needs{})",
                        missing.join(", "),
                        if missing.contains(&"DELETE") { "; or set dead_letters.retention_days = 0" } else { "" }
                    ),
                ))
            }
        }
    };
    r.hop(hop("grants"), outcome);
    let outcome = match schema::pending_migrations(pool).await {
        Err(e) => Err(fail(format!("cannot read the migrations: {e}"), "check the account")),
        Ok(pending) if pending.is_empty() => Ok("every migration applied".to_owned()),
        Ok(pending) => Err(fail(
            format!(
                "{} migration(s) not applied: {}",
                pending.len(),
                pending.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            ),
            "run `co2-bridge migrate` with an admin account (CO2_BRIDGE__DATABASE__URL=mysql://admin@.../db)",
        )),
    };
    let migrated = r.hop(hop("migrations"), outcome);
    let outcome = match sqlx::query_scalar::<_, chrono::NaiveDateTime>("SELECT UTC_TIMESTAMP(3)")
        .fetch_one(pool)
        .await
    {
        Err(e) => Err(fail(
            format!("cannot read the database's clock: {e}"),
            "check the account",
        )),
        Ok(theirs) => {
            let skew = (chrono::Utc::now().naive_utc() - theirs).num_milliseconds() as f64 / 1000.0;
            if skew.abs() <= MAX_SKEW.as_secs_f64() {
                Ok(format!("within {skew:+.1} s of the database's"))
            } else {
                Err(fail(
                    format!("this machine's clock is {skew:+.1} s off the database's"),
                    "synchronise both clocks (timedatectl set-ntp true, or chrony): readings are stamped by the clock",
                ))
            }
        }
    };
    r.hop(hop("clock"), outcome);
    let failed = (!migrated).then(|| hop("migrations"));
    (r, failed)
}

/// True when a `SHOW GRANTS` line gives `privilege` on every table of `db`.
fn grants_cover(lines: &[String], db: &str, privilege: &str) -> bool {
    lines.iter().any(|line| {
        let Some(rest) = line.strip_prefix("GRANT ") else {
            return false;
        };
        let Some((privileges, rest)) = rest.split_once(" ON ") else {
            return false;
        };
        let object = rest.split(" TO ").next().unwrap_or("").trim();
        let on_db = object == "*.*" || {
            let name = object.strip_suffix(".*").unwrap_or("");
            let name = name
                .trim_matches('`')
                .replace("\\_", "_")
                .replace("\\%", "%");
            name == db
        };
        on_db
            && privileges
                .split(',')
                .map(str::trim)
                .any(|p| p == privilege || p == "ALL PRIVILEGES" || p == "ALL")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_on_the_database_or_everything_count_and_others_do_not() {
        let lines = vec![
            "GRANT USAGE ON *.* TO `co2_bridge`@`127.0.0.1` IDENTIFIED BY PASSWORD '*AB'"
                .to_owned(),
            "GRANT SELECT, INSERT, UPDATE ON `co2\\_x`.* TO `co2_bridge`@`127.0.0.1`".to_owned(),
            "GRANT DELETE ON `other`.* TO `co2_bridge`@`127.0.0.1`".to_owned(),
        ];
        assert!(grants_cover(&lines, "co2_x", "INSERT"));
        assert!(!grants_cover(&lines, "co2_x", "DELETE"));
        let root =
            vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION".to_owned()];
        assert!(grants_cover(&root, "anything", "DELETE"));
    }
}
