//! Hot-path micro-benchmarks (filled in as the pieces land).
fn main() {}
