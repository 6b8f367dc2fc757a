//! `co2-publisher doctor`: checks the path from this Pi's configuration hop
//! by hop and reports every hop as ok, unproven (nothing proves it yet:
//! no failure, with what would prove it), failed (with what to do) or
//! skipped (a hop it needs failed): the config, the broker (DNS, TCP, TLS,
//! authentication, the ACL on the readings topic, whether a subscription
//! covers it) and the clock, which
//! needs nothing from the broker: both walks run side by side, and a broken
//! broker hides nothing about the clock.
//!
//! The ACL probe is one QoS 1 publish on the device's own readings topic
//! (`<prefix>/<device>/emissions`): that is the grant readings need, and a
//! probe on a topic of its own would test another ACL line. Its payload has
//! no `|`, so a bridge stores it as a dead letter (`missing_separator`),
//! never as a reading. The verdict: Mosquitto answers a denied QoS 1 publish
//! with a PUBACK either way; in MQTT v5 (the default) its reason code is
//! 0x87 "not authorized" (0x10 "no matching subscribers" or 0 when granted;
//! seen with Mosquitto 2.0.11 and an `acl_file`); a v3.1.1 PUBACK has no
//! reason, so with `mqtt.protocol = "v311"` the doctor also subscribes to the
//! topic and passes only when its probe comes back (which needs read as well
//! as write on it); a probe acknowledged that does not come back proves
//! nothing either way (unproven).
//!
//! It connects as `<client id>-doctor` with a clean session, so it neither
//! takes over the running publisher's session nor leaves one behind; except
//! where the broker replaces client ids with the user name
//! (`use_username_as_clientid`, set on the provisioned device listeners):
//! there the doctor's connection takes the running service's for a moment
//! (the service reconnects and republishes what was unacknowledged, so no
//! reading is lost), and the service may take it back before the probe is
//! answered, which the ACL hop names. MQTT
//! carries no time, so the clock is not compared with the broker's: it is
//! checked against `clock.min_time` and the system's synchronisation state.

use std::time::Duration;

use co2_wire::doctor::{
    broker_reachable, fail, tls_fix, tls_problem, unproven, Outcome, Report, STEP_TIMEOUT,
};
use co2_wire::endpoint::Endpoint;

use crate::clock::{ClockGate, SyncState, Verdict};
use crate::config::{Protocol, Settings};
use crate::link::{self, Link, LinkEvent, LinkOptions, Matched, Meta, RumqttLink};

/// What to do about a configuration that does not load.
pub const CONFIG_FIX: &str =
    "fix that setting (co2-publisher check-config prints what the publisher sees)";

/// How long the broker has to answer the CONNECT (a TLS handshake included).
const ANSWER: Duration = Duration::from_secs(10);

/// Walks every hop of `settings` (already loaded).
pub async fn diagnose(settings: &Settings, source: &str) -> Report {
    let mut r = Report::default();
    let mut probe = settings.clone();
    probe.mqtt.client_id = Some(format!("{}-doctor", settings.client_id()));
    let checked = settings
        .device_id()
        .map_err(|e| e.to_string())
        .and_then(|device| {
            let first = settings
                .mqtt_endpoints()
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .ok_or_else(|| "mqtt.hosts: no broker".to_owned())?;
            // Reads the password and TLS files, as `run` does at start.
            let options = link::mqtt_options(&probe).map_err(|e| e.0)?;
            Ok((device, first, options))
        });
    let (device, first, options) = match checked {
        Ok(parts) => parts,
        Err(e) => {
            r.hop("config", Err(fail(e, CONFIG_FIX)));
            return r;
        }
    };
    r.hop("config", Ok(format!("{source}: valid; device {device}")));
    let mut clock_hop = Report::default();
    let (broker, ()) = tokio::join!(
        broker_walk(settings, &first, options),
        clock(&mut clock_hop, settings)
    );
    r.append(broker);
    r.append(clock_hop);
    r
}

/// The broker's hops to `node`: DNS and TCP, then over one connection TLS,
/// authentication and the ACL; the hops after one that fails are skipped.
async fn broker_walk(settings: &Settings, node: &Endpoint, options: LinkOptions) -> Report {
    let mut r = Report::default();
    // What a connection proves, in order, each needing the one before.
    let mut connected_hops = vec!["broker auth", "broker acl", "broker subscribers"];
    if settings.mqtt.tls.is_some() {
        connected_hops.insert(0, "broker tls");
    }
    if let Err(failed) = broker_reachable(&mut r, &node.host, node.port).await {
        r.skip(failed, connected_hops);
        return r;
    }
    // rustls needs one crypto provider per process (as `run` installs it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut link = RumqttLink::start(options);
    if let Err(failed) = broker(&mut r, settings, &mut link).await {
        r.skip_after(failed, &connected_hops);
    }
    if link.disconnect().is_ok() {
        let _ = tokio::time::timeout(STEP_TIMEOUT, async {
            while !matches!(link.poll().await, Ok(LinkEvent::Disconnected) | Err(_)) {}
        })
        .await;
    }
    r
}

/// TLS, authentication and the ACL on the readings topic, over `link`; the
/// name of the hop that failed to connect, if one did.
async fn broker(
    r: &mut Report,
    settings: &Settings,
    link: &mut RumqttLink,
) -> Result<(), &'static str> {
    let tls = settings.mqtt.tls.is_some();
    let connected = tokio::time::timeout(ANSWER, async {
        loop {
            match link.poll().await {
                Ok(LinkEvent::Connected) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.0),
            }
        }
    })
    .await;
    match connected {
        Err(_) => {
            r.hop(
                "broker mqtt",
                Err(fail(
                    format!("no CONNACK within {} s", ANSWER.as_secs()),
                    "is it an MQTT port (TLS on a plain listener, or the reverse)? check mqtt.port and [mqtt.tls]",
                )),
            );
            return Err("broker mqtt");
        }
        Ok(Err(e)) if e.starts_with("TLS") => {
            let problem = tls_problem(&e);
            let fix = tls_fix(&problem);
            r.hop("broker tls", Err(fail(problem, fix)));
            return Err("broker tls");
        }
        Ok(Err(e)) if e.contains("BadUserNamePassword") || e.contains("NotAuthorized") => {
            if tls {
                r.hop(
                    "broker tls",
                    Ok("certificate chain, host name and dates valid".into()),
                );
            }
            r.hop(
                "broker auth",
                Err(fail(
                    format!("the broker refused the login: {e}"),
                    "check mqtt.username and mqtt.password_file, and the broker's password file (ops/add-device.sh sets both)",
                )),
            );
            return Err("broker auth");
        }
        Ok(Err(e)) => {
            r.hop(
                "broker mqtt",
                Err(fail(
                    e,
                    "check mqtt.protocol and the broker's log for this client",
                )),
            );
            return Err("broker mqtt");
        }
        Ok(Ok(())) => {}
    }
    r.logged_in(tls, settings.mqtt.username.as_deref());
    let user = settings.mqtt.username.as_deref().unwrap_or("(anonymous)");
    let (outcome, matched) = acl(link, settings, user).await;
    if r.hop("broker acl", outcome) {
        r.hop(
            "broker subscribers",
            subscribers(matched, &settings.topic()),
        );
    } else {
        r.skip("broker acl", ["broker subscribers"]);
    }
    Ok(())
}

/// The read side, as far as the probe's PUBACK says: does a subscription
/// (a bridge's session, connected or not) cover the readings topic? The
/// broker discards a message none covers.
fn subscribers(matched: Matched, topic: &str) -> Outcome {
    match matched {
        Matched::Yes => Outcome::Ok(format!(
            "a subscription covers {topic} (a bridge's session, connected or not)"
        )),
        Matched::No => Outcome::Unproven(unproven(
            format!(
                "no client subscribes to {topic}: the broker discards what is published there, so readings sent now are lost"
            ),
            format!(
                "a subscription on it: start the bridge once with a route covering {topic} (its persistent session keeps the subscription while it is down), then run again"
            ),
        )),
        Matched::Unknown => Outcome::Unproven(unproven(
            format!("an MQTT 3.1.1 PUBACK does not say whether a client subscribes to {topic}"),
            "a PUBACK with a reason code (mqtt.protocol = \"v5\"), or the bridge's own doctor",
        )),
    }
}

/// Publishes the probe on the readings topic and reads the broker's verdict,
/// and whether its PUBACK says a subscription covers the topic.
async fn acl(link: &mut RumqttLink, settings: &Settings, user: &str) -> (Outcome, Matched) {
    let topic = settings.topic();
    let v311 = settings.mqtt.protocol == Protocol::V311;
    let grant = format!(
        "grant {user} write on {topic} in the broker's ACL (`co2-bridge acl` prints one: `pattern write {}/%u/emissions`, which needs the user name to be the device id)",
        settings.mqtt.topic_prefix
    );
    if v311 {
        if let Err(e) = link.subscribe(&topic) {
            let failed = fail(format!("cannot subscribe: {e}"), "run again");
            return (Outcome::Fail(failed), Matched::Unknown);
        }
    }
    let payload = format!("doctor probe from {}: not a reading", settings.client_id());
    if let Err(e) = link.publish(&topic, payload.into_bytes(), Meta::default()) {
        let failed = fail(format!("cannot publish the probe: {e}"), "run again");
        return (Outcome::Fail(failed), Matched::Unknown);
    }
    let (mut acked, mut back, mut matched) = (false, false, Matched::Unknown);
    let verdict = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match link.poll().await {
                Ok(LinkEvent::Acked(_, m)) if !v311 => {
                    matched = m;
                    return Ok(());
                }
                Ok(LinkEvent::Refused(_, reason)) => return Err(Ok(reason)),
                Ok(LinkEvent::Acked(..)) => acked = true,
                Ok(LinkEvent::Received(t)) if t == topic => back = true,
                Ok(_) => {}
                Err(e) => return Err(Err(e.0)),
            }
            if acked && back {
                return Ok(());
            }
        }
    })
    .await;
    let outcome = match verdict {
        Ok(Ok(())) if v311 => Ok(format!("{user} may publish on {topic} (the probe came back)")),
        Ok(Ok(())) => Ok(format!(
            "{user} may publish on {topic} (PUBACK without a refusal)"
        )),
        Ok(Err(Ok(reason))) => Err(fail(
            format!("the broker refused {user} publishing on {topic}: {reason}"),
            grant,
        )),
        // On a listener with `use_username_as_clientid` (the provisioned
        // device listeners) the doctor and the running service share one
        // client id, and the broker hands the session to the latest comer.
        Ok(Err(Err(e))) => Err(fail(
            format!("the connection closed before the broker answered the probe: {e}"),
            "if the broker's listener sets use_username_as_clientid (provisioning/mosquitto does), the running service took the connection back: stop it (systemctl stop co2-publisher) and run again",
        )),
        // A 3.1.1 broker acknowledges a denied publish too: proof either way
        // needs the probe back, or a v5 PUBACK.
        Err(_) if v311 && acked => {
            let outcome = Outcome::Unproven(unproven(
                format!(
                    "the broker acknowledged the probe on {topic}, but it did not come back within {} s: an MQTT 3.1.1 PUBACK says nothing about the ACL, so either {user} may not write there or may not read it back",
                    STEP_TIMEOUT.as_secs()
                ),
                format!("the probe coming back (grant {user} read on {topic} too), or a PUBACK with a reason code (mqtt.protocol = \"v5\", where the broker names a refusal); if it is refused: {grant}"),
            ));
            return (outcome, matched);
        }
        Err(_) => Err(fail(
            format!("no PUBACK for the probe within {} s", STEP_TIMEOUT.as_secs()),
            "check the broker's log for this client",
        )),
    };
    (outcome.into(), matched)
}

/// The clock: not before `clock.min_time`, and synchronised if the system
/// can say (unproven when it cannot).
async fn clock(r: &mut Report, settings: &Settings) {
    let gate = ClockGate::from_settings(&settings.clock);
    let unchecked = "(MQTT carries no time, so it is not compared with the broker's)";
    let outcome = match gate.check().await {
        (Verdict::BeforeFloor { now, floor }, _) => Err(fail(
            format!("this machine's clock reads {now}, before clock.min_time {floor}"),
            "set the clock (timedatectl set-ntp true, or chrony); `run` stamps nothing until it is past clock.min_time",
        )),
        (Verdict::NotSynced, _) => Err(fail(
            "the system says its clock is not synchronised (clock.sync_command)",
            "enable NTP (timedatectl set-ntp true) and let it reach a server (UDP 123), or set clock.require_sync = false",
        )),
        (Verdict::Plausible, _) => match gate.probe().await {
            SyncState::Synced => Ok(format!("synchronised, past clock.min_time {unchecked}")),
            SyncState::NotSynced => Ok(format!(
                "past clock.min_time, not synchronised (clock.require_sync is off) {unchecked}"
            )),
            SyncState::Unknown(why) => {
                r.hop(
                    "clock",
                    unproven(
                        format!("past clock.min_time; synchronisation unknown: {why} {unchecked}"),
                        "clock.sync_command answering yes (timedatectl show -p NTPSynchronized --value, with systemd-timesyncd or chrony running)",
                    ),
                );
                return;
            }
        },
    };
    r.hop("clock", outcome);
}
