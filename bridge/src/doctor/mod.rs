//! `co2-bridge doctor`: checks the path from this machine's configuration
//! hop by hop and reports every hop as ok, unproven (nothing proves it
//! yet, e.g. no device has published: no failure), failed (with what to
//! do) or skipped (a hop it needs failed): the config, the broker (DNS,
//! TCP, TLS, authentication, the ACL on every route's topics), every MySQL
//! sink (TCP, authentication, the grants the bridge needs, the migrations,
//! the clock against the database's), every other sink; then what travels
//! the path: the clocks of the devices whose readings reached each MySQL
//! sink lately (`clocks`). The broker, the databases and the other sinks
//! need nothing from each other, so a failure in one hides nothing in the
//! others, and their walks run side by side (the ACL hop listens for 5 s);
//! the report keeps a fixed order.

mod broker;
mod clocks;
mod database;

pub use co2_wire::doctor::{Failure, Hop, Report};

use co2_wire::doctor::fail;
use futures_util::future::join_all;
use sqlx::MySqlPool;

use crate::config::{ConfigError, Settings};
use crate::route::Routes;
use crate::sink::Sinks;
use crate::source::mqtt;

/// What to do about a configuration that does not load.
pub const CONFIG_FIX: &str =
    "fix that setting (co2-bridge check-config prints what the bridge sees)";

/// Walks every hop of `settings` (already parsed).
pub async fn diagnose(settings: &Settings, source: &str) -> Report {
    let mut r = Report::default();
    let parts = settings.validate().and_then(|()| {
        let mut routes = Routes::from_settings(settings)?;
        routes.load_tokens()?;
        let built = crate::sink::from_settings(settings, &routes)?;
        mqtt::connect(settings, 0, None)?; // reads the password and TLS files
        let node = settings
            .mqtt_endpoints()?
            .into_iter()
            .next()
            .ok_or_else(|| ConfigError::Invalid {
                key: "mqtt.hosts".to_owned(),
                message: "is empty: name a broker".to_owned(),
            })?;
        Ok((routes, built, node))
    });
    let (routes, built, node) = match parts {
        Ok(parts) => parts,
        Err(e) => return Report::config_failed(&e.to_string(), CONFIG_FIX),
    };
    r.hop("config", Ok(format!("{source}: valid")));
    let databases = join_all(
        built
            .mysql_pools
            .iter()
            .map(|(name, pool)| database_and_clocks(settings, name, pool, &routes)),
    );
    let (broker, databases, sinks) = tokio::join!(
        broker::walk(settings, &routes, &node),
        databases,
        other_sinks(&built.sinks)
    );
    r.append(broker);
    let mut clocks = Report::default();
    for (path, devices) in databases {
        r.append(path);
        clocks.append(devices);
    }
    r.append(sinks);
    // Last, as they judge the devices rather than the path.
    r.append(clocks);
    for (_, pool) in &built.mysql_pools {
        pool.close().await;
    }
    r
}

/// The MySQL sink `name`'s hops, and its `device clocks` hop (printed last).
async fn database_and_clocks(
    settings: &Settings,
    name: &str,
    pool: &MySqlPool,
    routes: &Routes,
) -> (Report, Report) {
    let (path, blocked) = database::walk(settings, name, pool).await;
    let mut devices = Report::default();
    let hop = format!("{name} device clocks");
    match blocked {
        Some(failed) => devices.skip(&failed, [hop]),
        None => {
            devices.hop(hop, clocks::check(pool, name, routes).await);
        }
    }
    (path, devices)
}

/// Every sink but the MySQL ones (walked hop by hop): does it answer?
async fn other_sinks(sinks: &Sinks) -> Report {
    let probes = (0..sinks.len()).filter_map(|i| {
        let sink = sinks.get(i).filter(|s| s.kind() != "mysql")?;
        let name = sinks.name(i);
        Some(async move { (name, sink.kind(), sink.probe().await) })
    });
    let mut r = Report::default();
    for (name, kind, up) in join_all(probes).await {
        let outcome = match up {
            true => Ok(format!("{kind} answers")),
            false => Err(fail(
                format!("sink {name} ({kind}) does not answer"),
                format!("check [sinks.{name}] (url, credentials) and that the server runs"),
            )),
        };
        r.hop(format!("sink {name}"), outcome);
    }
    r
}
