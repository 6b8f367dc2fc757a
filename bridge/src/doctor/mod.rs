//! `co2-bridge doctor`: checks the path from this machine's configuration
//! hop by hop and stops at the first hop that fails, naming it and what to
//! do: the config, the broker (DNS, TCP, TLS, authentication, the ACL on
//! every route's topics), every MySQL sink (TCP, authentication, the grants
//! the bridge needs, the migrations, the clock against the database's),
//! every other sink; then what travels the path: the clocks of the devices
//! whose readings reached each MySQL sink lately (`clocks`). It connects under its own client id with a clean
//! session, so it neither takes over the running bridge's session nor leaves
//! one behind, and subscribes without `$share/`, so it takes no message away
//! from the bridges.

mod clocks;

use std::time::Duration;

use co2_wire::doctor::{fail, resolve, tcp, tls_fix, tls_problem, STEP_TIMEOUT};
pub use co2_wire::doctor::{Failure, Hop, Report};
use sqlx::MySqlPool;

use crate::config::Settings;
use crate::route::Routes;
use crate::sink::mysql::schema;
use crate::source::mqtt::{self, MqttEvent};

/// How long the ACL hop listens for traffic on the routes' topics.
const LISTEN: Duration = Duration::from_secs(5);

/// Largest clock difference to the database that passes.
const MAX_SKEW: Duration = Duration::from_secs(2);

/// What to do about a configuration that does not load.
pub const CONFIG_FIX: &str =
    "fix that setting (co2-bridge check-config prints what the bridge sees)";

/// Walks every hop of `settings` (already parsed), stopping at the first failure.
pub async fn diagnose(settings: &Settings, source: &str) -> Report {
    let mut r = Report::default();
    let parts = match settings.validate().and_then(|()| {
        let mut routes = Routes::from_settings(settings)?;
        routes.load_tokens()?;
        let built = crate::sink::from_settings(settings, &routes)?;
        mqtt::connect(settings, 0)?; // reads the password and TLS files
        Ok((routes, built))
    }) {
        Ok(parts) => parts,
        Err(e) => {
            r.hop("config", Err(fail(e.to_string(), CONFIG_FIX)));
            return r;
        }
    };
    let (routes, built) = parts;
    if !r.hop("config", Ok(format!("{source}: valid"))) {
        return r;
    }
    if !broker(&mut r, settings, &routes).await {
        return r;
    }
    for (name, pool) in &built.mysql_pools {
        if !database(&mut r, settings, name, pool).await {
            return r;
        }
    }
    for i in 0..built.sinks.len() {
        let Some(sink) = built.sinks.get(i) else {
            continue;
        };
        let name = built.sinks.name(i);
        if sink.kind() == "mysql" {
            continue;
        }
        let up = sink.probe().await;
        let outcome = match up {
            true => Ok(format!("{} answers", sink.kind())),
            false => Err(fail(
                format!("sink {name} ({}) does not answer", sink.kind()),
                format!("check [sinks.{name}] (url, credentials) and that the server runs"),
            )),
        };
        if !r.hop(format!("sink {name}"), outcome) {
            return r;
        }
    }
    // Last, as it judges the devices rather than the path: a device in the
    // wrong zone must not hide a sink that is down.
    for (name, pool) in &built.mysql_pools {
        let outcome = clocks::check(pool, name, &routes).await;
        pool.close().await;
        if !r.hop(format!("{name} device clocks"), outcome) {
            return r;
        }
    }
    r
}

/// DNS, TCP, TLS, authentication and the ACL to the broker: the first node
/// of `mqtt.hosts` (where the bridge's first connection starts).
async fn broker(r: &mut Report, settings: &Settings, routes: &Routes) -> bool {
    let m = match settings.mqtt_endpoints() {
        Ok(nodes) => match nodes.into_iter().next() {
            Some(first) => first,
            None => return r.hop("config", Err(fail("mqtt.hosts is empty", "name a broker"))),
        },
        Err(e) => return r.hop("config", Err(fail(e.to_string(), "fix that setting"))),
    };
    if co2_wire::doctor::broker_reachable(r, &m.host, m.port)
        .await
        .is_none()
    {
        return false;
    }
    let client_id = format!("{}-doctor", settings.mqtt_client_id(0));
    let (client, mut events) = match mqtt::connect_as(settings, &client_id, false) {
        Ok(pair) => pair,
        Err(e) => return r.hop("config", Err(fail(e.to_string(), "fix that setting"))),
    };
    let connected = tokio::time::timeout(2 * STEP_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(MqttEvent::Connected { .. }) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let tls = settings.mqtt.tls.is_some();
    match connected {
        Err(_) => {
            return r.hop(
                "broker mqtt",
                Err(fail(
                    format!("no CONNACK within {} s", (2 * STEP_TIMEOUT).as_secs()),
                    "is it an MQTT port (TLS on a plain listener, or the reverse)? check mqtt.port and [mqtt.tls]",
                )),
            )
        }
        Ok(Err(e)) if e.is_tls() => {
            let problem = tls_problem(&e.to_string());
            let fix = tls_fix(&problem);
            return r.hop("broker tls", Err(fail(problem, fix)));
        }
        Ok(Err(e)) if e.is_auth() => {
            if tls {
                r.hop("broker tls", Ok("certificate chain, host name and dates valid".into()));
            }
            return r.hop(
                "broker auth",
                Err(fail(format!("the broker refused the login: {e}"), e.hint)),
            );
        }
        Ok(Err(e)) => return r.hop("broker mqtt", Err(fail(e.to_string(), e.hint))),
        Ok(Ok(())) => {}
    }
    r.logged_in(tls, settings.mqtt.username.as_deref());
    let user = settings.mqtt.username.as_deref().unwrap_or("(anonymous)");

    // Without $share/: the doctor's copies take nothing from the bridges' group.
    let topics = routes.subscriptions();
    client.subscribe(&topics);
    let (granted, arrived) = listen(&mut events, topics.len()).await;
    client.disconnect().await;
    let outcome = match granted {
        None => Err(fail(
            "the broker did not answer the subscription",
            "check the broker's log for this client",
        )),
        Some(g) if g.iter().any(|ok| !ok) => {
            let refused: Vec<&str> = topics
                .iter()
                .zip(&g)
                .filter(|(_, ok)| !**ok)
                .map(|(t, _)| t.as_str())
                .collect();
            Err(fail(
                format!("the broker refused {user} the subscription to {}", refused.join(", ")),
                format!("grant {user} read on those topics in the broker's ACL (co2-bridge acl prints one that fits the routes)"),
            ))
        }
        Some(_) => acl_verdict(routes, &arrived, user),
    };
    r.hop("broker acl", outcome)
}

/// Waits for the SUBACK, then gathers the topics of what arrives for [`LISTEN`].
async fn listen(events: &mut mqtt::EventLoop, filters: usize) -> (Option<Vec<bool>>, Vec<String>) {
    let mut granted: Option<Vec<bool>> = None;
    let mut arrived = Vec::new();
    let suback = tokio::time::Instant::now() + STEP_TIMEOUT;
    let mut until = suback;
    loop {
        let Ok(next) = tokio::time::timeout_at(until, events.poll()).await else {
            return (granted, arrived);
        };
        match next {
            Ok(MqttEvent::Subscribed(g)) if granted.is_none() => {
                if g.len() != filters || g.iter().any(|ok| !ok) {
                    return (Some(g), arrived);
                }
                granted = Some(g);
                until = tokio::time::Instant::now() + LISTEN;
            }
            Ok(MqttEvent::Publish { topic, .. }) if arrived.len() < 10_000 => {
                arrived.push(String::from_utf8_lossy(&topic).into_owned());
            }
            Ok(_) => {}
            Err(_) => return (granted, arrived),
        }
    }
}

/// Mosquitto grants a subscription even where its ACL denies reading, so
/// only traffic proves the bridge's user may read: every route must have
/// seen a message (announcements excepted: publishers send them only when
/// they drop readings).
fn acl_verdict(routes: &Routes, arrived: &[String], user: &str) -> Result<String, Failure> {
    let mut quiet = Vec::new();
    let mut heard = Vec::new();
    for route in routes.iter() {
        let filters: Vec<&str> = route.filters().iter().map(|f| f.subscription()).collect();
        let seen = arrived
            .iter()
            .find(|t| route.filters().iter().any(|f| f.matches(t).is_some()));
        match (seen, route.name()) {
            (Some(t), name) => heard.push(format!("{name} ({t})")),
            (None, crate::route::EVENTS_ROUTE) => {}
            (None, _) => quiet.extend(filters),
        }
    }
    if quiet.is_empty() {
        Ok(format!("{user} receives: {}", heard.join(", ")))
    } else {
        Err(fail(
            format!(
                "subscribed, but nothing arrived on {} within {} s",
                quiet.join(", "),
                LISTEN.as_secs()
            ),
            format!(
                "the broker accepts a subscription even where its ACL denies reading, so only a message proves it: \
                 make a device publish there (co2-publisher does every interval) and run again; if devices are \
                 publishing, grant {user} read on those topics (co2-bridge acl prints the ACL that fits the routes)"
            ),
        ))
    }
}

/// The MySQL sink `name`: TCP, authentication, grants, migrations, clock.
async fn database(r: &mut Report, settings: &Settings, name: &str, pool: &MySqlPool) -> bool {
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
    let addr = match resolve(&host, port, &key).await {
        Ok(a) => a,
        Err(f) => return r.hop(hop("dns"), Err(f)),
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
        return false;
    }
    let conn = tokio::time::timeout(2 * STEP_TIMEOUT, pool.acquire()).await;
    let outcome = match conn {
        Err(_) => Err(fail(
            format!("no answer from {host}:{port} within {} s", (2 * STEP_TIMEOUT).as_secs()),
            "is it a MySQL port? check the URL",
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
        return false;
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
    if !r.hop(hop("grants"), outcome) {
        return false;
    }
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
    if !r.hop(hop("migrations"), outcome) {
        return false;
    }
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
    r.hop(hop("clock"), outcome)
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
