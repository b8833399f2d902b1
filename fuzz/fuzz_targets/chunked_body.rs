//! Chunked and Content-Length body decoding, whole vs. split: see `chunked_body` in checks/http.rs.
#![no_main]

#[path = "../checks/http.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::chunked_body(data));
