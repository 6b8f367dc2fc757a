//! The broker's hops: DNS, TCP, TLS, authentication and the ACL on every
//! route's topics, to the first node of `mqtt.hosts`.

use std::time::Duration;

use co2_wire::doctor::{fail, tls_fix, tls_problem, Failure, Report, STEP_TIMEOUT};

use crate::config::Settings;
use crate::route::Routes;
use crate::source::mqtt::{self, MqttEvent};

/// How long the ACL hop listens for traffic on the routes' topics.
const LISTEN: Duration = Duration::from_secs(5);

/// DNS, TCP, TLS, authentication and the ACL to the broker: the first node
/// of `mqtt.hosts` (where the bridge's first connection starts).
pub(super) async fn walk(r: &mut Report, settings: &Settings, routes: &Routes) -> bool {
    let m = match settings.mqtt_endpoints() {
        Ok(nodes) => match nodes.into_iter().next() {
            Some(first) => first,
            None => return r.hop("config", Err(fail("mqtt.hosts is empty", "name a broker"))),
        },
        Err(e) => return r.hop("config", Err(fail(e.to_string(), "fix that setting"))),
    };
    if co2_wire::doctor::broker_reachable(r, &m.host, m.port)
        .await
        .is_err()
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
