//! Which dead letters `co2-bridge dead-letters list|replay` take: the
//! command-line filters and how their values are read.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use co2_wire::DeviceId;

use crate::model::Reason;

/// The filters of `dead-letters list` and `dead-letters replay`; a letter is
/// selected when it passes every one given.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Selection {
    /// Only letters stored for this reason (repeat for several), e.g. too_far_in_future.
    #[arg(long = "reason", value_name = "R", value_parser = parse_reason)]
    pub reasons: Vec<Reason>,
    /// Only letters whose topic today's routes give to this route.
    #[arg(long, value_name = "NAME")]
    pub route: Option<String>,
    /// Only letters of this device (the topic's device level, or the device
    /// today's route decodes; the device is not a column of the dead letters).
    #[arg(long, value_name = "D", value_parser = parse_device)]
    pub device: Option<DeviceId>,
    /// Only letters received at or after T: RFC 3339, or YYYY-MM-DD[ hh:mm:ss] in UTC.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub from: Option<NaiveDateTime>,
    /// Only letters received before T (same forms as --from).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub to: Option<NaiveDateTime>,
    /// At most N letters (after every filter).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

impl Selection {
    /// True when `reason` was named with `--reason`.
    pub fn names_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r.as_str() == reason)
    }
}

/// A `reason` column value, as the metrics and `rejected_messages` name it.
pub fn parse_reason(text: &str) -> Result<Reason, String> {
    Reason::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
            format!("no reason {text:?}; reasons are {}", names.join(", "))
        })
}

/// A device id, checked as the bridge checks the topic's.
fn parse_device(text: &str) -> Result<DeviceId, String> {
    DeviceId::parse(text).map_err(|e| e.to_string())
}

/// A time in UTC: RFC 3339 (any offset, converted), `YYYY-MM-DD hh:mm:ss[.f]`
/// or `YYYY-MM-DD` (midnight), the last two read as UTC like `received_at`.
pub fn parse_time(text: &str) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.naive_utc());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return Ok(t);
    }
    if let Some(t) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t);
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-01-05T09:30:00+09:00) or \
         YYYY-MM-DD[ hh:mm:ss] in UTC"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        selection: Selection,
    }

    fn parse(args: &[&str]) -> Result<Selection, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|c| c.selection)
    }

    fn utc(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn times_are_rfc_3339_or_utc_dates_and_times() {
        assert_eq!(
            parse_time("2026-01-05T09:30:00+09:00"),
            Ok(utc("2026-01-05 00:30:00"))
        );
        assert_eq!(
            parse_time("2026-01-05T00:30:00.250Z"),
            Ok(utc("2026-01-05 00:30:00.250"))
        );
        assert_eq!(
            parse_time("2026-01-05 23:59:59"),
            Ok(utc("2026-01-05 23:59:59"))
        );
        assert_eq!(parse_time("2026-01-05"), Ok(utc("2026-01-05 00:00:00")));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-05 25:00:00",
            "05/01/2026",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_filter_parses_and_repeats_where_it_may() {
        let s = parse(&[
            "--reason",
            "too_far_in_future",
            "--reason",
            "bad_datetime",
            "--route",
            "co2",
            "--device",
            "pi-7",
            "--from",
            "2026-01-05",
            "--to",
            "2026-01-06T00:00:00Z",
            "--limit",
            "10",
        ])
        .unwrap();
        assert_eq!(
            s.reasons,
            [Reason::TooFarInFuture, Reason::BadDatetime],
            "in the order given"
        );
        assert!(s.names_reason("bad_datetime") && !s.names_reason("oversized"));
        assert_eq!(s.route.as_deref(), Some("co2"));
        assert_eq!(s.device.as_ref().map(DeviceId::as_str), Some("pi-7"));
        assert_eq!(s.from, Some(utc("2026-01-05 00:00:00")));
        assert_eq!(s.to, Some(utc("2026-01-06 00:00:00")));
        assert_eq!(s.limit, Some(10));
        assert_eq!(parse(&[]).unwrap(), Selection::default(), "no filter: all");
    }

    #[test]
    fn bad_values_are_refused_with_what_is_allowed() {
        let err = parse(&["--reason", "too_late"]).unwrap_err().to_string();
        assert!(err.contains("too_far_in_future"), "{err}");
        assert!(parse(&["--device", "a/b"]).is_err());
        assert!(parse(&["--device", &"x".repeat(65)]).is_err());
        assert!(parse(&["--limit", "0"]).is_err());
        assert!(parse(&["--limit", "-1"]).is_err());
        assert!(parse(&["--from", "soon"]).is_err());
    }
}
