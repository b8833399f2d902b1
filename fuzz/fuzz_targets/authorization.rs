//! An `Authorization` header value (Basic and Bearer): see `authorization` in checks/auth.rs.
#![no_main]

#[path = "../checks/auth.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::authorization(data));
