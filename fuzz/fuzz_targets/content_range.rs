//! The upload `Content-Range` header: see `check_content_range` in checks/http.rs.
#![no_main]

#[path = "../checks/http.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::content_range(data));
