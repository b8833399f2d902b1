//! Arbitrary bytes into `parse_request_head`: see `request_head` in checks/http.rs.
#![no_main]

#[path = "../checks/http.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::request_head(data));
