//! `co2-bridge import`: readings from files into the bridge's tables
//! through the same route decoding and sink as live readings. First, its
//! readers: bounded lines, CSV records and headers, NDJSON rows.

pub mod csv;
pub mod lines;
pub mod ndjson;
