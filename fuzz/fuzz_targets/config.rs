//! The configuration file (config.yml text): see `config_file` in checks/config.rs.
#![no_main]

#[path = "../checks/config.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_file(data));
