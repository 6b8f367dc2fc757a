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

mod broker;
mod clocks;
mod database;

pub use co2_wire::doctor::{Failure, Hop, Report};

use co2_wire::doctor::fail;

use crate::config::Settings;
use crate::route::Routes;
use crate::source::mqtt;

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
    if !broker::walk(&mut r, settings, &routes).await {
        return r;
    }
    for (name, pool) in &built.mysql_pools {
        if !database::walk(&mut r, settings, name, pool).await {
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
