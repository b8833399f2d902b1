//! The `Range` header against a representation length: see `check_range` in checks/http.rs.
#![no_main]

#[path = "../checks/http.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::range(data));
