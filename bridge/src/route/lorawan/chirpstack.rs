//! ChirpStack v4's JSON (the Protocol Buffers JSON mapping of its
//! integration events). The device is `deviceInfo.devEui`, because that is
//! what the topic names (`application/<id>/device/<DevEUI>/event/up`);
//! `deviceName` is free text ("Test device") and not an id. ChirpStack writes
//! EUIs in lower case, the payload's is read so. `time` is when the network
//! server received the uplink; zero values are omitted, so an absent `fCnt`
//! is 0.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{kind, refusal, Event, Reception, Uplink};
use crate::model::Reason;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Up<'a> {
    time: Option<String>,
    device_info: Option<DeviceInfo>,
    dev_addr: Option<String>,
    f_cnt: Option<u32>,
    f_port: Option<u32>,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    rx_info: Option<Vec<RxInfo>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceInfo {
    dev_eui: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RxInfo {
    gateway_id: Option<String>,
    rssi: Option<f64>,
    snr: Option<f64>,
}

/// Reads an uplink (`event/up`).
pub(super) fn uplink(payload: &[u8]) -> Result<Uplink<'_>, Reason> {
    let up: Up<'_> = serde_json::from_slice(payload).map_err(|_| refusal(payload))?;
    Ok(Uplink {
        device: dev_eui(up.device_info),
        time: up.time,
        dev_addr: up.dev_addr,
        f_cnt: up.f_cnt,
        f_port: up.f_port,
        decoded: up.object,
        receptions: up
            .rx_info
            .unwrap_or_default()
            .into_iter()
            .map(|rx| Reception {
                gateway: rx.gateway_id,
                rssi: rx.rssi,
                snr: rx.snr,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIds {
    time: Option<String>,
    device_info: Option<DeviceInfo>,
}

/// Reads an event (`event/join`, `event/ack`, `event/txack`, `event/status`,
/// ...): the payload does not say which, the topic's last level does.
pub(super) fn event(payload: &[u8], topic: &str) -> Result<Event, Reason> {
    // An object, whatever else it holds.
    let _: BTreeMap<String, &RawValue> =
        serde_json::from_slice(payload).map_err(|_| refusal(payload))?;
    let ids: EventIds = serde_json::from_slice(payload).map_err(|_| Reason::BadJson)?;
    Ok(Event {
        device: dev_eui(ids.device_info),
        time: ids.time,
        kind: kind("chirpstack", topic.rsplit('/').next().unwrap_or_default()),
    })
}

fn dev_eui(info: Option<DeviceInfo>) -> Option<String> {
    info.and_then(|i| i.dev_eui).map(|e| e.to_ascii_lowercase())
}
