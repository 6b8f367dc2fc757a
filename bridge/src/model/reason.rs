//! Why a message was dead-lettered: one typed list, which the metrics
//! pre-register and the fuzz targets check every rejection against.

use co2_wire::Rejection;

/// A reason a message is stored in the dead letters instead of its target.
///
/// [`Reason::as_str`] is the `reason` metric label and column value: stable
/// snake_case names that dashboards and alerts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The payload is larger than the route allows.
    Oversized,
    /// The payload is not valid UTF-8.
    NotUtf8,
    /// A CO2 payload without `|`.
    MissingSeparator,
    /// A datetime that is not one.
    BadDatetime,
    /// A number that is not one.
    BadNumber,
    /// NaN or infinity.
    NotFinite,
    /// A CO2 value outside the configured range (the column's, by default).
    OutOfRange,
    /// Stamped further ahead than `wire.max_future_s`.
    TooFarInFuture,
    /// A time a `DATETIME` column cannot hold (years 1000–9999).
    TimeOutOfRange,
    /// Older than the raw rows are kept (`retention.raw_days`): stored, it
    /// would be dropped with its partition, and its rollup bucket would be
    /// recomputed from it alone.
    BeyondRetention,
    /// The device id in the topic, payload or token is not a valid id.
    BadDevice,
    /// The payload names another device than its topic or HTTP token does.
    DeviceMismatch,
    /// The payload names a device on a topic that names none, and the route
    /// does not trust payloads to (`trust_payload_device`).
    UntrustedDevice,
    /// No route matches the topic.
    NoRoute,
    /// The store refused the message as it is (found by splitting the batch).
    DbRejected,
    /// A delimited payload with the wrong number of fields.
    FieldCount,
    /// A text field longer than its column (delimited: 255 characters; JSON
    /// and bare values: 16,383).
    FieldTooLong,
    /// Not JSON.
    BadJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No longer produced: it meant "a JSON object without a number" while
    /// strings and booleans were dropped; they are stored now, and a message
    /// with nothing storable is [`Reason::NoStorableFields`]. Still registered,
    /// so series and alerts that name it keep existing (at zero).
    NoNumericFields,
    /// A JSON key that cannot be a field name (empty, over 64 characters with
    /// its dotted path, control characters or spaces at either end).
    BadFieldName,
    /// A JSON message with more fields than the route allows.
    TooManyFields,
    /// A message with nothing to store: only nulls, empty objects or arrays,
    /// none of a mapped route's keys, or an empty bare value.
    NoStorableFields,
    /// JSON nested deeper than the route allows (`json.max_depth`).
    TooDeep,
    /// Two values of one message under one field name (a repeated key, or
    /// `"a.b"` beside `{"a": {"b": ..}}`): which one is right cannot be known.
    DuplicateField,
    /// A named topic level (a tag) that is empty, longer than 64 characters
    /// or holds a control character.
    BadTag,
    /// A bare-value payload that is a JSON object or array, not one value.
    NotAValue,
    /// A binary payload that is not an image.
    NotAnImage,
    /// Base64 that does not decode.
    BadBase64,
    /// A JSON image message without its data field.
    NoDataField,
    /// An HTTP ingest request without a valid token.
    Unauthorized,
    /// The decoder panicked on the message (a bug); it did not stop the others.
    DecoderPanic,
    /// The message crashed the bridge twice and is not handled again.
    CrashedBridge,
    /// An announcement on an events topic that is not one.
    BadEvent,
    /// A time sent without an offset from a device whose zone is learned
    /// (`time_zone = "auto"`) and not known yet, or whose offset seems to
    /// have changed: held rather than stored at a guessed time (the
    /// dead letter's detail says which; `dead-letters replay` stores it
    /// once the zone is known).
    TimeZoneUnknown,
    /// A batch with more elements than the route allows (`json.max_elements`).
    TooManyElements,
    /// A batch's member (`json.batch_field`) that is not an array.
    BadBatch,
    /// A Home Assistant discovery announcement whose `value_template` is not
    /// one of the forms the bridge evaluates (`{{ value }}`, `{{ value_json.x }}`,
    /// `{{ value_json['x'] }}` with `| float`, `| int`, `| round(n)`); the
    /// announcement and its sensor's state messages are dead-lettered, the
    /// template is never run.
    UnsupportedTemplate,
    /// A discovery announcement beyond `discovery.max_sensors` (or beyond
    /// `discovery.max_sensors_per_topic` on one state topic).
    TooManySensors,
    /// A discovery announcement that cannot be used: not JSON, too large, no
    /// device, or a state topic that is empty or holds a wildcard.
    BadAnnouncement,
}

impl Reason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [Reason; 40] = [
        Reason::Oversized,
        Reason::NotUtf8,
        Reason::MissingSeparator,
        Reason::BadDatetime,
        Reason::BadNumber,
        Reason::NotFinite,
        Reason::OutOfRange,
        Reason::TooFarInFuture,
        Reason::TimeOutOfRange,
        Reason::BeyondRetention,
        Reason::BadDevice,
        Reason::DeviceMismatch,
        Reason::UntrustedDevice,
        Reason::NoRoute,
        Reason::DbRejected,
        Reason::FieldCount,
        Reason::FieldTooLong,
        Reason::BadJson,
        Reason::NotAnObject,
        Reason::NoNumericFields,
        Reason::BadFieldName,
        Reason::TooManyFields,
        Reason::NoStorableFields,
        Reason::TooDeep,
        Reason::DuplicateField,
        Reason::BadTag,
        Reason::NotAValue,
        Reason::NotAnImage,
        Reason::BadBase64,
        Reason::NoDataField,
        Reason::Unauthorized,
        Reason::DecoderPanic,
        Reason::CrashedBridge,
        Reason::BadEvent,
        Reason::TimeZoneUnknown,
        Reason::TooManyElements,
        Reason::BadBatch,
        Reason::UnsupportedTemplate,
        Reason::TooManySensors,
        Reason::BadAnnouncement,
    ];

    /// The stable snake_case name: metric label, `rejected_messages.reason`, HTTP answer.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::NotUtf8 => "not_utf8",
            Reason::MissingSeparator => "missing_separator",
            Reason::BadDatetime => "bad_datetime",
            Reason::BadNumber => "bad_number",
            Reason::NotFinite => "not_finite",
            Reason::OutOfRange => "out_of_range",
            Reason::TooFarInFuture => "too_far_in_future",
            Reason::TimeOutOfRange => "time_out_of_range",
            Reason::BeyondRetention => "beyond_retention",
            Reason::BadDevice => "bad_device",
            Reason::DeviceMismatch => "device_mismatch",
            Reason::UntrustedDevice => "untrusted_device",
            Reason::NoRoute => "no_route",
            Reason::DbRejected => "db_rejected",
            Reason::FieldCount => "field_count",
            Reason::FieldTooLong => "field_too_long",
            Reason::BadJson => "bad_json",
            Reason::NotAnObject => "not_an_object",
            Reason::NoNumericFields => "no_numeric_fields",
            Reason::BadFieldName => "bad_field_name",
            Reason::TooManyFields => "too_many_fields",
            Reason::NoStorableFields => "no_storable_fields",
            Reason::TooDeep => "too_deep",
            Reason::DuplicateField => "duplicate_field",
            Reason::BadTag => "bad_tag",
            Reason::NotAValue => "not_a_value",
            Reason::NotAnImage => "not_an_image",
            Reason::BadBase64 => "bad_base64",
            Reason::NoDataField => "no_data_field",
            Reason::Unauthorized => "unauthorized",
            Reason::DecoderPanic => "decoder_panic",
            Reason::CrashedBridge => "crashed_bridge",
            Reason::BadEvent => "bad_event",
            Reason::TimeZoneUnknown => "time_zone_unknown",
            Reason::TooManyElements => "too_many_elements",
            Reason::BadBatch => "bad_batch",
            Reason::UnsupportedTemplate => "unsupported_template",
            Reason::TooManySensors => "too_many_sensors",
            Reason::BadAnnouncement => "bad_announcement",
        }
    }
}

impl From<Rejection> for Reason {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Oversized => Reason::Oversized,
            Rejection::NotUtf8 => Reason::NotUtf8,
            Rejection::MissingSeparator => Reason::MissingSeparator,
            Rejection::BadDatetime => Reason::BadDatetime,
            Rejection::BadNumber => Reason::BadNumber,
            Rejection::NotFinite => Reason::NotFinite,
            Rejection::OutOfRange => Reason::OutOfRange,
            Rejection::TooFarInFuture => Reason::TooFarInFuture,
            Rejection::TimeOutOfRange => Reason::TimeOutOfRange,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_snake_case_and_cover_the_wire_reasons() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let name = r.as_str();
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(seen.insert(name), "{name} twice");
        }
        for r in Rejection::ALL {
            assert_eq!(Reason::from(r).as_str(), r.reason());
        }
    }
}
