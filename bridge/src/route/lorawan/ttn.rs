//! The Things Stack v3's JSON (the MQTT integration's and webhooks' format):
//! `end_device_ids.device_id` names the device (the topic's
//! `devices/<device id>` level), `uplink_message.received_at` is when the
//! Network Server received the uplink. Empty fields are omitted, so an absent
//! `f_cnt` is 0.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{kind, refusal, Event, Reception, Uplink};
use crate::model::Reason;

/// The top-level keys that name an event's kind, in the order looked for.
const EVENT_KEYS: [&str; 11] = [
    "join_accept",
    "downlink_ack",
    "downlink_nack",
    "downlink_sent",
    "downlink_failed",
    "downlink_queued",
    "downlink_queue_invalidated",
    "service_data",
    "location_solved",
    "uplink_normalized",
    "uplink_message",
];

#[derive(Deserialize)]
struct Up<'a> {
    end_device_ids: Option<Ids>,
    received_at: Option<String>,
    #[serde(borrow)]
    uplink_message: Option<UplinkMessage<'a>>,
}

#[derive(Deserialize)]
struct Ids {
    device_id: Option<String>,
    dev_addr: Option<String>,
}

#[derive(Deserialize)]
struct UplinkMessage<'a> {
    f_cnt: Option<u32>,
    f_port: Option<u32>,
    #[serde(borrow)]
    decoded_payload: Option<&'a RawValue>,
    rx_metadata: Option<Vec<RxMetadata>>,
    received_at: Option<String>,
}

#[derive(Deserialize)]
struct RxMetadata {
    gateway_ids: Option<GatewayIds>,
    rssi: Option<f64>,
    snr: Option<f64>,
}

#[derive(Deserialize)]
struct GatewayIds {
    gateway_id: Option<String>,
}

/// Reads an uplink (`.../up`); one without `uplink_message` has nothing to store.
pub(super) fn uplink(payload: &[u8]) -> Result<Uplink<'_>, Reason> {
    let up: Up<'_> = serde_json::from_slice(payload).map_err(|_| refusal(payload))?;
    let message = up.uplink_message.ok_or(Reason::NoStorableFields)?;
    let (device, dev_addr) = match up.end_device_ids {
        Some(ids) => (ids.device_id, ids.dev_addr),
        None => (None, None),
    };
    Ok(Uplink {
        device,
        // The Network Server's receive time; the Application Server's only
        // when the uplink does not carry it.
        time: message.received_at.or(up.received_at),
        dev_addr,
        f_cnt: message.f_cnt,
        f_port: message.f_port,
        decoded: message.decoded_payload,
        receptions: message
            .rx_metadata
            .unwrap_or_default()
            .into_iter()
            .map(|rx| Reception {
                gateway: rx.gateway_ids.and_then(|g| g.gateway_id),
                rssi: rx.rssi,
                snr: rx.snr,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct EventIds {
    end_device_ids: Option<Ids>,
    received_at: Option<String>,
}

/// Reads an event (`.../join`, `.../down/ack`, ...): its kind from the key
/// that holds it (`join_accept`, `downlink_ack`), else the topic's last level.
pub(super) fn event(payload: &[u8], topic: &str) -> Result<Event, Reason> {
    let top: BTreeMap<String, &RawValue> =
        serde_json::from_slice(payload).map_err(|_| refusal(payload))?;
    let ids: EventIds = serde_json::from_slice(payload).map_err(|_| Reason::BadJson)?;
    let name = EVENT_KEYS
        .iter()
        .find(|k| top.contains_key(**k))
        .copied()
        .unwrap_or_else(|| topic.rsplit('/').next().unwrap_or_default());
    Ok(Event {
        device: ids.end_device_ids.and_then(|i| i.device_id),
        time: ids.received_at,
        kind: kind("ttn", name),
    })
}
