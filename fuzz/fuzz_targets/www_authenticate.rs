//! An upstream's `WWW-Authenticate` value: see `www_authenticate` in checks/http.rs.
#![no_main]

#[path = "../checks/http.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::www_authenticate(data));
