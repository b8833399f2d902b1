//! Metadata log decoding and re-encoding: see `metalog` in checks/engine.rs.
#![no_main]

#[path = "../checks/engine.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::metalog(data));
