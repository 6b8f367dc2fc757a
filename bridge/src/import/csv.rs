//! CSV rows of an import: a line split into fields (RFC 4180 quoting, as
//! the export writes it), and the header that says which field is the
//! time, the value, the device and the reading's number.
//!
//! A record is one line: the shapes imported (a device, a time, a number)
//! never hold a line break, and reading line by line is what keeps memory
//! bounded and every refusal tied to a line number. A quoted field that
//! spans lines makes both lines malformed, and each is a dead letter.

use csv_core::{ReadRecordResult, Reader};

/// Fields per record at most (the widest export, `readings`, has 12).
pub const MAX_FIELDS: usize = 64;

/// Header names of the time column, in the order they are looked for: the
/// export's `co2_emissions` and the seed (`date_time`), the long tables
/// (`time`), the delimited ones (`measured_at`), and common spellings.
const TIME_NAMES: &[&str] = &["date_time", "time", "measured_at", "datetime", "timestamp"];

/// Header names of the value column.
const VALUE_NAMES: &[&str] = &["emissions", "value", "co2", "ppm"];

/// Splits CSV lines into fields, reusing its buffers from line to line.
pub struct Splitter {
    reader: Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    count: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Self {
            reader: Reader::new(),
            out: Vec::new(),
            ends: vec![0; MAX_FIELDS],
            count: 0,
        }
    }
}

/// Why a line is not a CSV record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// More than [`MAX_FIELDS`] fields.
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
}

impl Splitter {
    /// Splits `line` (without its line end); returns the number of fields.
    pub fn split(&mut self, line: &[u8]) -> Result<usize, SplitError> {
        self.reader.reset();
        self.count = 0;
        // Unquoting only shrinks a field, so the line's length is enough.
        if self.out.len() < line.len() {
            self.out.resize(line.len(), 0);
        }
        let (mut input, mut out_at, mut ends_at) = (line, 0, 0);
        // The line, then an empty input that ends the record: two calls,
        // a few more if csv-core stops early; never an endless loop.
        for _ in 0..=line.len() + 2 {
            let (result, read, wrote, ended) = self.reader.read_record(
                input,
                self.out.get_mut(out_at..).unwrap_or_default(),
                self.ends.get_mut(ends_at..).unwrap_or_default(),
            );
            input = input.get(read..).unwrap_or_default();
            out_at += wrote;
            ends_at += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::Record | ReadRecordResult::End => break,
                ReadRecordResult::OutputEndsFull => return Err(SplitError::TooManyFields),
                // Cannot happen (see above); ends the record where it is.
                ReadRecordResult::OutputFull => break,
            }
        }
        self.count = ends_at;
        Ok(ends_at)
    }

    /// Field `i` of the last line split.
    pub fn field(&self, i: usize) -> Option<&[u8]> {
        if i >= self.count {
            return None;
        }
        let end = *self.ends.get(i)?;
        let start = match i {
            0 => 0,
            _ => *self.ends.get(i - 1)?,
        };
        self.out.get(start..end)
    }
}

/// Which field holds what, from the header and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The reading's time.
    pub time: usize,
    /// Its value.
    pub value: usize,
    /// Its device, if the file names one per row.
    pub device: Option<usize>,
    /// Its number (`seq_epoch`, `seq`), as the export writes it.
    pub seq: Option<(usize, usize)>,
}

/// Column names given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Named<'a> {
    /// `--time-column`.
    pub time: Option<&'a str>,
    /// `--value-column`.
    pub value: Option<&'a str>,
    /// `--device-column`.
    pub device: Option<&'a str>,
}

impl Columns {
    /// The columns of a header (its fields, trimmed), names from `named`
    /// first, else the names the export and the seed use. Fails with what
    /// is missing.
    pub fn from_header(header: &[String], named: &Named<'_>) -> Result<Self, String> {
        let find = |name: &str| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
        };
        let pick = |flag: Option<&str>, names: &[&str], what: &str| match flag {
            Some(name) => find(name).ok_or_else(|| {
                format!(
                    "the header has no column {name:?} (header: {})",
                    header.join(",")
                )
            }),
            None => names.iter().find_map(|n| find(n)).ok_or_else(|| {
                format!(
                    "the header names no {what} column (looked for {}; header: {}); \
                     name it with --{what}-column",
                    names.join(", "),
                    header.join(",")
                )
            }),
        };
        if find("field").is_some() && named.value.is_none() {
            return Err(
                "the header has a `field` column (the long readings table's shape, a \
                 field per row): only the time|value shape of the CO2 route is imported; \
                 choose the value column with --value-column to import one field"
                    .to_owned(),
            );
        }
        let device = match named.device {
            Some(name) => Some(find(name).ok_or_else(|| {
                format!(
                    "the header has no column {name:?} (header: {})",
                    header.join(",")
                )
            })?),
            None => find("device"),
        };
        Ok(Self {
            time: pick(named.time, TIME_NAMES, "time")?,
            value: pick(named.value, VALUE_NAMES, "value")?,
            device,
            seq: find("seq_epoch").zip(find("seq")),
        })
    }

    /// The names the time column goes by (for NDJSON keys too).
    pub fn time_names() -> &'static [&'static str] {
        TIME_NAMES
    }

    /// The names the value column goes by (for NDJSON keys too).
    pub fn value_names() -> &'static [&'static str] {
        VALUE_NAMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(line: &[u8]) -> Vec<Vec<u8>> {
        let mut s = Splitter::default();
        let n = s.split(line).unwrap();
        (0..n).map(|i| s.field(i).unwrap().to_vec()).collect()
    }

    #[test]
    fn quoted_fields_as_the_export_writes_them() {
        assert_eq!(
            fields(b"7,\"a,\"\"b\"\"\",,\"\",x"),
            vec![
                b"7".to_vec(),
                b"a,\"b\"".to_vec(),
                Vec::new(),
                Vec::new(),
                b"x".to_vec()
            ]
        );
        assert_eq!(fields(b"a"), vec![b"a".to_vec()]);
        let mut s = Splitter::default();
        assert_eq!(
            s.split(&b",".repeat(MAX_FIELDS)),
            Err(SplitError::TooManyFields)
        );
        // A line cut inside quotes leaves no state behind for the next one.
        s.split(b"\"open,1").unwrap();
        assert_eq!(fields(b"a,b"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(s.split(b"a,b").unwrap(), 2);
        assert_eq!(s.field(1), Some(&b"b"[..]));
        assert_eq!(s.field(2), None);
    }

    fn header(text: &str) -> Vec<String> {
        text.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn headers_of_the_export_the_seed_and_named_columns() {
        let export = header("id,device,date_time,emissions,received_at,redeliveries,seq_epoch,seq");
        let c = Columns::from_header(&export, &Named::default()).unwrap();
        assert_eq!(
            c,
            Columns {
                time: 2,
                value: 3,
                device: Some(1),
                seq: Some((6, 7))
            }
        );
        let seed =
            Columns::from_header(&header("Date_Time, emissions"), &Named::default()).unwrap();
        assert_eq!((seed.time, seed.value, seed.device), (0, 1, None));
        let named = Named {
            time: Some("when"),
            value: Some("ppm2"),
            device: Some("room"),
        };
        let c = Columns::from_header(&header("room,when,ppm2"), &named).unwrap();
        assert_eq!((c.time, c.value, c.device), (1, 2, Some(0)));
        let err = Columns::from_header(&header("a,b"), &Named::default()).unwrap_err();
        assert!(err.contains("--time-column"), "{err}");
        let readings = header("id,device,topic,time,field,value,text_value");
        assert!(Columns::from_header(&readings, &Named::default()).is_err());
    }

    proptest! {
        /// Any bytes: no panic, at most MAX_FIELDS fields, each no longer than the line.
        #[test]
        fn any_line_splits_without_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut s = Splitter::default();
            if let Ok(n) = s.split(&line) {
                prop_assert!(n <= MAX_FIELDS);
                for i in 0..n {
                    prop_assert!(s.field(i).is_some_and(|f| f.len() <= line.len()));
                }
            }
        }

        /// Fields without quotes or commas come back as they were.
        #[test]
        fn plain_fields_round_trip(parts in proptest::collection::vec("[a-z0-9 .:-]{0,8}", 1..10)) {
            let line = parts.join(",");
            // An empty line is no record at all (the import skips it as blank).
            prop_assume!(!line.is_empty());
            let got = fields(line.as_bytes());
            let want: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
