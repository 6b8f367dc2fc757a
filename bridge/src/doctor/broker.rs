//! The broker's hops: DNS, TCP, TLS, authentication and the ACL on every
//! route's topics, to the first node of `mqtt.hosts`. It connects under its
//! own client id with a clean session, so it neither takes over the running
//! bridge's session nor leaves one behind, and subscribes without `$share/`,
//! so it takes no message away from the bridges.

use std::time::Duration;

use co2_wire::doctor::{
    broker_reachable, fail, tls_fix, tls_problem, unproven, Outcome, Report, STEP_TIMEOUT,
};
use co2_wire::endpoint::Endpoint;

use crate::config::Settings;
use crate::route::Routes;
use crate::source::mqtt::{self, MqttEvent};

/// How long the ACL hop listens for traffic on the routes' topics.
const LISTEN: Duration = Duration::from_secs(5);

/// DNS, TCP, TLS, authentication and the ACL to the broker `node` (the
/// first of `mqtt.hosts`, where the bridge's first connection starts); the
/// hops after one that fails are recorded as skipped behind it.
pub(super) async fn walk(settings: &Settings, routes: &Routes, node: &Endpoint) -> Report {
    let mut r = Report::default();
    let tls = settings.mqtt.tls.is_some();
    // What a connection proves, in order, each needing the one before.
    let mut connected_hops = vec!["broker auth", "broker acl"];
    if tls {
        connected_hops.insert(0, "broker tls");
    }
    if let Err(failed) = broker_reachable(&mut r, &node.host, node.port).await {
        r.skip(failed, connected_hops);
        return r;
    }
    let client_id = format!("{}-doctor", settings.mqtt_client_id(0));
    let (client, mut events) = match mqtt::connect_as(settings, &client_id, false) {
        Ok(pair) => pair,
        Err(e) => {
            r.hop("broker mqtt", Err(fail(e.to_string(), "fix that setting")));
            r.skip("broker mqtt", connected_hops);
            return r;
        }
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
    let failed = match connected {
        Err(_) => {
            r.hop(
                "broker mqtt",
                Err(fail(
                    format!("no CONNACK within {} s", (2 * STEP_TIMEOUT).as_secs()),
                    "is it an MQTT port (TLS on a plain listener, or the reverse)? check mqtt.port and [mqtt.tls]",
                )),
            );
            "broker mqtt"
        }
        Ok(Err(e)) if e.is_tls() => {
            let problem = tls_problem(&e.to_string());
            let fix = tls_fix(&problem);
            r.hop("broker tls", Err(fail(problem, fix)));
            "broker tls"
        }
        Ok(Err(e)) if e.is_auth() => {
            if tls {
                r.hop(
                    "broker tls",
                    Ok("certificate chain, host name and dates valid".into()),
                );
            }
            r.hop(
                "broker auth",
                Err(fail(format!("the broker refused the login: {e}"), e.hint)),
            );
            "broker auth"
        }
        Ok(Err(e)) => {
            r.hop("broker mqtt", Err(fail(e.to_string(), e.hint)));
            "broker mqtt"
        }
        Ok(Ok(())) => "",
    };
    if !failed.is_empty() {
        r.skip_after(failed, &connected_hops);
        return r;
    }
    r.logged_in(tls, settings.mqtt.username.as_deref());
    let user = settings.mqtt.username.as_deref().unwrap_or("(anonymous)");

    // Without $share/: the doctor's copies take nothing from the bridges' group.
    let topics = routes.subscriptions();
    client.subscribe(&topics);
    let (granted, arrived) = listen(&mut events, topics.len()).await;
    client.disconnect().await;
    let outcome = match granted {
        None => Outcome::Fail(fail(
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
            Outcome::Fail(fail(
                format!("the broker refused {user} the subscription to {}", refused.join(", ")),
                format!("grant {user} read on those topics in the broker's ACL (co2-bridge acl prints one that fits the routes)"),
            ))
        }
        Some(_) => acl_verdict(routes, &arrived, user),
    };
    r.hop("broker acl", outcome);
    r
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
/// they drop readings). A quiet route proves nothing either way (no device
/// may have published yet, as on every fresh install): unproven, not failed.
fn acl_verdict(routes: &Routes, arrived: &[String], user: &str) -> Outcome {
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
        return Outcome::Ok(format!("{user} receives: {}", heard.join(", ")));
    }
    let also = if heard.is_empty() {
        String::new()
    } else {
        format!(" ({user} receives: {})", heard.join(", "))
    };
    Outcome::Unproven(unproven(
        format!(
            "subscribed, but nothing arrived on {} within {} s{also}: no device may have published \
             yet, or the ACL denies {user} reading (the broker grants the subscription either way)",
            quiet.join(", "),
            LISTEN.as_secs()
        ),
        format!(
            "a message on those topics: run again while a device publishes there (co2-publisher does \
             every interval); if devices are publishing and still nothing arrives, grant {user} read on \
             those topics (co2-bridge acl prints the ACL that fits the routes)"
        ),
    ))
}
