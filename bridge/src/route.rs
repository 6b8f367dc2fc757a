//! A route turns one MQTT message into one [`Record`]: find the device in the
//! topic, decode the payload, or say why not.
//!
//! The CO2 route (`co2/+/emissions` + the `|` payload → `co2_emissions`) is
//! the only one today and needs no configuration.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use co2_wire::{Decoder, DeviceId, TopicFilter, TopicMatch};

use crate::writer::{DeadLetter, Record};

/// The CO2 route: topic filters, default device and payload decoder.
#[derive(Debug, Clone)]
pub struct Route {
    filters: Vec<TopicFilter>,
    default_device: DeviceId,
    decoder: Decoder,
    dead_letter_bytes: usize,
}

impl Route {
    /// A route over `filters`; topics without a device level map to `default_device`.
    pub fn new(
        filters: Vec<TopicFilter>,
        default_device: DeviceId,
        decoder: Decoder,
        dead_letter_bytes: usize,
    ) -> Self {
        Self {
            filters,
            default_device,
            decoder,
            dead_letter_bytes,
        }
    }

    /// The filters to subscribe to.
    pub fn filters(&self) -> &[TopicFilter] {
        &self.filters
    }

    /// Decodes one message received at `now`.
    pub fn record(&self, topic: &str, payload: Bytes, now: DateTime<Utc>) -> Record {
        let device = match self.filters.iter().find_map(|f| f.matches(topic)) {
            Some(TopicMatch::Device(id)) => match DeviceId::parse(id) {
                Ok(device) => device,
                Err(_) => return self.dead_letter(topic, payload, "bad_device"),
            },
            Some(TopicMatch::NoDevice) => self.default_device.clone(),
            None => return self.dead_letter(topic, payload, "no_route"),
        };
        match self.decoder.decode(&payload, now) {
            Ok(reading) => Record::Reading {
                device,
                reading,
                topic: topic.to_owned(),
                payload,
            },
            Err(rejection) => self.dead_letter(topic, payload, rejection.reason()),
        }
    }

    fn dead_letter(&self, topic: &str, payload: Bytes, reason: &'static str) -> Record {
        Record::Rejected(DeadLetter::new(
            topic,
            &payload,
            reason,
            self.dead_letter_bytes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn route() -> Route {
        let filters = ["co2/+/emissions", "co2/emissions"]
            .iter()
            .map(|f| TopicFilter::parse(f).unwrap())
            .collect();
        Route::new(
            filters,
            DeviceId::parse("legacy").unwrap(),
            Decoder::default(),
            8,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn record(topic: &str, payload: &'static [u8]) -> Record {
        route().record(topic, Bytes::from_static(payload), now())
    }

    #[test]
    fn device_from_topic_or_default() {
        match record("co2/pi-7/emissions", b"2020-07-13 22:43:23|3500") {
            Record::Reading { device, .. } => assert_eq!(device.as_str(), "pi-7"),
            other => panic!("{other:?}"),
        }
        match record("co2/emissions", b"2020-07-13 22:43:23|3500") {
            Record::Reading { device, .. } => assert_eq!(device.as_str(), "legacy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_dead_letters_with_a_bounded_payload() {
        match record("co2/pi/emissions", b"2020-07-13 22:43:23|NaN") {
            Record::Rejected(d) => {
                assert_eq!(d.reason, "not_finite");
                assert_eq!(d.payload.len(), 8);
                assert_eq!(d.payload_bytes, 23);
            }
            other => panic!("{other:?}"),
        }
        let bad_device = "co2/".to_owned() + &"x".repeat(65) + "/emissions";
        match route().record(&bad_device, Bytes::from_static(b"x"), now()) {
            Record::Rejected(d) => assert_eq!(d.reason, "bad_device"),
            other => panic!("{other:?}"),
        }
    }
}
