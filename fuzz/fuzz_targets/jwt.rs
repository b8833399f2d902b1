//! JWT decoding and claims checking, raw or signed with the configured key: see `jwt` in checks/auth.rs.
#![no_main]

#[path = "../checks/auth.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::jwt(data));
