//! An htpasswd file: see `htpasswd` in checks/auth.rs.
#![no_main]

#[path = "../checks/auth.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::htpasswd(data));
