//! The import's readers: any bytes as a file of lines (bounded), as CSV
//! records, and through the whole reader (CSV, NDJSON, payload lines) to
//! records of the CO2 route. No panic; line numbers count up from 1; no
//! line over the bound; every refusal is a dead letter that names its line.
#![no_main]

use std::sync::{Arc, OnceLock};

use co2_bridge::import::input::{records_of, InputFormat};
use co2_bridge::import::lines::{Line, Lines};
use co2_bridge::import::Splitter;
use co2_fuzz::{check, now, routes};
use libfuzzer_sys::fuzz_target;

/// A small bound, so that inputs the fuzzer makes reach it.
const BOUND: usize = 64;

fuzz_target!(|data: &[u8]| {
    static ROUTES: OnceLock<Arc<co2_bridge::decode::Routes>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| Arc::new(routes("")));

    let mut lines = Lines::new(std::io::BufReader::with_capacity(7, data), BOUND);
    let mut splitter = Splitter::default();
    let mut expected = 1;
    while let Some(line) = lines.next_line().expect("reading a slice cannot fail") {
        assert_eq!(line.number(), expected, "line numbers skip");
        expected += 1;
        match line {
            Line::Text { bytes, .. } => {
                assert!(bytes.len() <= BOUND, "a line over the bound");
                if let Ok(n) = splitter.split(bytes) {
                    for i in 0..n {
                        let field = splitter.field(i).expect("a counted field is there");
                        assert!(field.len() <= bytes.len());
                    }
                }
            }
            Line::TooLong { start, len, .. } => {
                assert_eq!(start.len(), BOUND);
                assert!(len > BOUND as u64);
            }
        }
    }
    assert_eq!(lines.position(), data.len() as u64);

    for format in [None, Some(InputFormat::Csv), Some(InputFormat::Ndjson), Some(InputFormat::Lines)] {
        // A CSV whose header names no time is refused as a whole: fine.
        let Ok(records) = records_of(data, format, routes.clone(), now()) else {
            continue;
        };
        let lines = data.split(|b| *b == b'\n').count() as u64;
        for (line, record) in &records {
            assert!((1..=lines).contains(line), "line {line} of {lines}");
            check(record);
            if let co2_bridge::decode::Record::Rejected { letter, .. } = record {
                let detail = letter.detail.as_deref().unwrap_or_default();
                assert!(detail.starts_with(&format!("fuzz:{line}: ")), "{detail}");
            }
        }
    }
});
