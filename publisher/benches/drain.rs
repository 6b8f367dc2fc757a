//! Placeholder; replaced by the drain benchmark.
fn main() {}
