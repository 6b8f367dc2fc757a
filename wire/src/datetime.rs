//! A lenient parser for the datetimes real publishers send.
//!
//! chrono's format strings either demand zero padding or accept far more than
//! we want, and they cannot say *why* an input was refused, so the grammar is
//! spelled out here: `Y-M-D[ T]h:m:s[.frac][Z|±hh:mm|±hhmm|±hh]`.
//!
//! Every step works on ASCII digits it has checked before it slices: the
//! input is whatever a device sent, and a byte index inside a multi-byte
//! character would panic.

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

/// A datetime as a payload wrote it: the wall-clock time plus the offset, if
/// the text had one (read with [`WallTime::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    /// The date and time of day as written, fractions truncated to milliseconds.
    pub local: NaiveDateTime,
    /// The offset the text gave (`Z`, `+09:00`), if any.
    pub offset: Option<FixedOffset>,
}

/// Why a text is not a datetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unparsable {
    /// Not of the grammar's shape, or not a real date or time.
    Syntax,
    /// A well-formed date whose year a `DATETIME` column cannot hold (1000–9999).
    YearOutOfRange,
}

/// Longest year accepted as *syntax*: longer digit runs are not years at all,
/// shorter or longer than four digits are years out of range.
const MAX_YEAR_DIGITS: usize = 6;

/// Parses `text`, truncating fractional seconds to milliseconds (the column's precision).
pub(crate) fn parse(text: &str) -> Result<WallTime, Unparsable> {
    match parse_canonical(text) {
        Some(parsed) => Ok(parsed),
        None => parse_grammar(text),
    }
}

/// The layout nearly every publisher sends, `YYYY-MM-DD HH:MM:SS[.f…][Z]`,
/// read at fixed positions: the general grammar below costs about twenty
/// times as much, a fifth of the bridge's own work per CO2 reading. `None`
/// for anything else, valid or not, which the grammar then reads, so this
/// refuses nothing itself and reads nothing differently (the property
/// tests compare the two).
fn parse_canonical(text: &str) -> Option<WallTime> {
    let (body, offset) = match text.as_bytes().split_last() {
        Some((b'Z' | b'z', body)) => (body, Some(FixedOffset::east_opt(0)?)),
        _ => (text.as_bytes(), None),
    };
    let (head, fraction) = body.split_at_checked(19)?;
    let [y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b' ' | b'T' | b't', h0, h1, b':', mi0, mi1, b':', s0, s1] =
        *head
    else {
        return None;
    };
    let year = digits(&[y0, y1, y2, y3])?;
    let (month, day) = (digits(&[mo0, mo1])?, digits(&[d0, d1])?);
    let (hour, minute, second) = (digits(&[h0, h1])?, digits(&[mi0, mi1])?, digits(&[s0, s1])?);
    let millis = match fraction {
        [] => 0,
        [b'.' | b',', frac @ ..] if (1..=9).contains(&frac.len()) => {
            digits(frac)?;
            // Truncated to milliseconds, as the grammar does.
            let mut padded = [b'0'; 3];
            for (to, from) in padded.iter_mut().zip(frac) {
                *to = *from;
            }
            digits(&padded)?
        }
        _ => return None,
    };
    if !(1000..=9999).contains(&year) || second > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = NaiveTime::from_hms_milli_opt(hour, minute, second, millis)?;
    Some(WallTime {
        local: NaiveDateTime::new(date, time),
        offset,
    })
}

/// The value of a run of ASCII digits; `None` if any byte is not one or it
/// does not fit.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |n, &b| {
        let digit = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// The whole grammar, with a reason for every refusal.
fn parse_grammar(text: &str) -> Result<WallTime, Unparsable> {
    let (date, rest) = text.split_once([' ', 'T', 't']).ok_or(Unparsable::Syntax)?;
    let (time, offset) = split_offset(rest.trim_start()).ok_or(Unparsable::Syntax)?;
    let date = parse_date(date)?;
    let time = parse_time(time).ok_or(Unparsable::Syntax)?;
    Ok(WallTime {
        local: NaiveDateTime::new(date, time),
        offset,
    })
}

fn parse_date(text: &str) -> Result<NaiveDate, Unparsable> {
    let mut parts = text.split('-');
    let mut next = |max_len| {
        parts
            .next()
            .and_then(|p| small_uint(p, max_len))
            .ok_or(Unparsable::Syntax)
    };
    let year = next(MAX_YEAR_DIGITS)?;
    let month = next(2)?;
    let day = next(2)?;
    if parts.next().is_some() {
        return Err(Unparsable::Syntax);
    }
    if !(1000..=9999).contains(&year) {
        return Err(Unparsable::YearOutOfRange);
    }
    let year = i32::try_from(year).map_err(|_| Unparsable::YearOutOfRange)?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or(Unparsable::Syntax)
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    let (hms, frac) = match text.split_once(['.', ',']) {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (text, None),
    };
    let mut parts = hms.split(':');
    let hour = small_uint(parts.next()?, 2)?;
    let minute = small_uint(parts.next()?, 2)?;
    let second = small_uint(parts.next()?, 2)?;
    if parts.next().is_some() {
        return None;
    }
    let millis = match frac {
        None => 0,
        Some(frac) => {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Truncate, never round: rounding could carry into the next second.
            // All ASCII digits, so every byte index is a character boundary.
            let ms: String = frac.chars().chain("000".chars()).take(3).collect();
            ms.parse::<u32>().ok()?
        }
    };
    // `from_hms_milli_opt` would accept second 60 as a leap second; the DB would not.
    if second > 59 {
        return None;
    }
    NaiveTime::from_hms_milli_opt(hour, minute, second, millis)
}

/// Splits a trailing `Z` or numeric offset from the time part.
fn split_offset(text: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(time) = text.strip_suffix(['Z', 'z']) {
        return Some((time.trim_end(), FixedOffset::east_opt(0)));
    }
    let Some(pos) = text.rfind(['+', '-']) else {
        return Some((text, None));
    };
    // `pos` is the index of an ASCII sign, so both halves are whole characters.
    let (time, offset) = text.split_at(pos);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let digits = offset.get(1..)?;
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    // Only ASCII from here on: slicing by byte index is safe.
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None if digits.len() == 2 => (digits, "00"),
        None => return None,
    };
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours = small_uint(hours, 2)?;
    let minutes = small_uint(minutes, 2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let seconds = i32::try_from(hours * 3600 + minutes * 60).ok()?;
    Some((time.trim_end(), FixedOffset::east_opt(sign * seconds)))
}

/// An unsigned decimal of 1 to `max_len` ASCII digits (no sign, no spaces).
fn small_uint(text: &str, max_len: usize) -> Option<u32> {
    if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    prop_compose! {
        /// Texts of the canonical layout, mostly real dates and times, with
        /// any separator, fraction and suffix the fast path might see.
        fn canonical_layout()(
            (y, mo, d) in (990u32..10_010, 0u32..=13, 0u32..=32),
            (h, mi, s) in (0u32..=24, 0u32..=60, 0u32..=60),
            sep in r"[ Tt]",
            fraction in r"([.,][0-9]{0,10})?",
            suffix in r"[Zz+]?",
        ) -> String {
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{suffix}")
        }
    }

    proptest! {
        /// Whatever the fixed-layout reader accepts, the grammar reads the same.
        #[test]
        fn the_fast_path_agrees_with_the_grammar(text in canonical_layout()) {
            if let Some(fast) = parse_canonical(&text) {
                prop_assert_eq!(Ok(fast), parse_grammar(&text), "{}", text);
            }
        }

        /// Near misses (any character replaced) are the grammar's to read.
        #[test]
        fn near_misses_agree_too(
            text in canonical_layout(),
            at in 0usize..32,
            with in r"[ -~]|é",
        ) {
            let mut text = text;
            if let Some((i, c)) = text.char_indices().nth(at) {
                text.replace_range(i..i + c.len_utf8(), &with);
            }
            if let Some(fast) = parse_canonical(&text) {
                prop_assert_eq!(Ok(fast), parse_grammar(&text), "{}", text);
            }
        }
    }

    /// The fast path takes the forms it is for (else it saves nothing).
    #[test]
    fn the_fast_path_takes_the_common_layouts() {
        for text in [
            "2020-07-13 22:43:23",
            "2020-07-13T22:43:23",
            "2020-07-13T22:43:23Z",
            "2020-07-13 22:43:23.5",
            "2020-07-13T22:43:23.123Z",
            "2020-07-13 22:43:23,123456789",
        ] {
            assert!(parse_canonical(text).is_some(), "{text:?}");
            assert_eq!(
                parse_canonical(text).ok_or(()),
                parse_grammar(text).map_err(|_| ())
            );
        }
        for text in [
            "2020-7-13 22:43:23",
            "2020-07-13 22:43:23+02:00",
            "0999-12-31 23:59:59",
        ] {
            assert!(parse_canonical(text).is_none(), "{text:?}");
        }
    }

    fn local(text: &str) -> NaiveDateTime {
        parse(text).map(|p| p.local).unwrap_or_default()
    }

    #[test]
    fn canonical_and_unpadded_forms_agree() {
        assert_eq!(local("2020-07-13 09:03:05"), local("2020-7-13 9:3:5"));
        assert_eq!(local("2020-07-13T09:03:05"), local("2020-07-13 09:03:05"));
    }

    #[test]
    fn fraction_is_truncated_to_milliseconds() {
        let t = local("2020-07-13 22:43:23.123999");
        assert_eq!(t.and_utc().timestamp_subsec_millis(), 123);
        assert_eq!(
            local("2020-07-13 22:43:23.5")
                .and_utc()
                .timestamp_subsec_millis(),
            500
        );
    }

    #[test]
    fn offsets_are_kept() {
        let p = parse("2020-07-13T22:43:23+02:00");
        assert_eq!(p.ok().and_then(|p| p.offset), FixedOffset::east_opt(7200));
        let p = parse("2020-07-13T22:43:23-0530");
        assert_eq!(
            p.ok().and_then(|p| p.offset),
            FixedOffset::west_opt(5 * 3600 + 1800)
        );
        let p = parse("2020-07-13T22:43:23Z");
        assert_eq!(p.ok().and_then(|p| p.offset), FixedOffset::east_opt(0));
    }

    #[test]
    fn garbage_is_refused() {
        for text in [
            "",
            "2020-07-13",
            "22:43:23",
            "2020-13-01 00:00:00",
            "2020-02-30 00:00:00",
            "2020-07-13 24:00:00",
            "2020-07-13 23:60:00",
            "2020-07-13 23:59:60",
            "2020-07-13 00:00:00.",
            "2020-07-13 00:00:00.x",
            "2020-07-13 00:00:00+25:00",
            "2020-07-13 00:00:00+1",
            "+2020-07-13 00:00:00",
            "2020-07-13 -1:00:00",
            "2020-07-13 00:00:00:00",
            "٢٠٢٠-07-13 00:00:00",
            "2020-07-13 00:00:00-",
            "12345678-07-13 00:00:00",
        ] {
            assert_eq!(
                parse(text),
                Err(Unparsable::Syntax),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn years_a_datetime_column_cannot_hold_are_named() {
        for text in [
            "0-01-01 00:00:00",
            "999-12-31 23:59:59",
            "0999-12-31 23:59:59",
            "10000-01-01 00:00:00",
            "20-07-13 00:00:00",
        ] {
            assert_eq!(parse(text), Err(Unparsable::YearOutOfRange), "{text:?}");
        }
        assert!(parse("1000-01-01 00:00:00").is_ok());
        assert!(parse("9999-12-31 23:59:59.999").is_ok());
    }

    /// Regression (issue 11): a multi-byte character inside a four-byte offset
    /// made `split_at(2)` cut a character in half and panic the pipeline.
    #[test]
    fn non_ascii_inside_an_offset_is_refused_not_a_panic() {
        for text in [
            "2020-07-13 22:43:23+1é1",
            "2020-07-13 22:43:23+é1",
            "2020-07-13 22:43:23-1é",
            "2020-07-13 22:43:23+0é:00",
            "2020-07-13 22:43:23+€0",
            "2020-07-13 22:43:23+🦀",
        ] {
            assert_eq!(parse(text), Err(Unparsable::Syntax), "{text:?}");
        }
    }

    /// Every character position of every accepted form, replaced by a
    /// multi-byte character, is a refusal (and never a panic).
    #[test]
    fn a_multi_byte_character_anywhere_is_refused() {
        for form in [
            "2020-07-13 22:43:23",
            "2020-7-3 2:4:5",
            "2020-07-13T22:43:23.123",
            "2020-07-13T22:43:23Z",
            "2020-07-13T22:43:23+02:00",
            "2020-07-13T22:43:23-0530",
            "2020-07-13T22:43:23+02",
        ] {
            for (i, _) in form.char_indices() {
                for odd in ["é", "€", "🦀", "\u{0660}"] {
                    let mut text = form.to_owned();
                    text.replace_range(i..i + 1, odd);
                    assert!(parse(&text).is_err(), "{text:?}");
                    text = form.to_owned();
                    text.insert_str(i, odd);
                    assert!(parse(&text).is_err(), "{text:?}");
                }
            }
        }
    }
}
