//! Property checks for the `config` fuzz target (the configuration file),
//! shared by `fuzz/fuzz_targets/config.rs` and the regression test
//! `server/tests/config_fuzz_seeds.rs` (which includes this file with
//! `#[path]`, so `cargo test` replays every seed and saved input on stable).
//! Only the public `berth::config` API is used.
#![allow(dead_code)]

use berth::config::{keys, Config, ConfigError};

/// Keys an error may name that are sections rather than table entries.
const SECTIONS: &[&str] = &["auth", "http.tls.letsencrypt"];

/// `config`: config.yml text over the embedded default gives a `Config` or
/// a one-line error naming a key, never a panic. On success the effective
/// configuration has one line per key of the table, in its order, with
/// secrets masked, and the typed sections keep their invariants.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if touches_outside(text) {
        return;
    }
    match Config::from_yaml(text, "fuzz.yml") {
        Ok(config) => check_config(text, &config),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "two-line error: {message:?}");
            match error {
                ConfigError::Invalid { key, .. } => assert!(
                    keys::find(key).is_some() || SECTIONS.contains(&key),
                    "error names {key}, which is neither a key nor a section"
                ),
                ConfigError::Yaml { .. } | ConfigError::Read { .. } => {}
                other => panic!("the key table disagrees with its readers: {other}"),
            }
        }
    }
}

fn check_config(text: &str, config: &Config) {
    let effective = config.effective();
    let lines: Vec<&str> = effective.lines().collect();
    assert_eq!(lines.len(), keys::KEYS.len(), "{effective}");
    for (line, key) in lines.iter().zip(keys::KEYS) {
        let value = line
            .strip_prefix(key.path)
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or_else(|| panic!("line {line:?} is not key {}", key.path));
        assert!(!value.chars().any(char::is_control), "{line:?}");
        if key.secret {
            assert!(
                value == "********" || value.starts_with('(') || value.starts_with("unset"),
                "secret {} shown as {value:?}",
                key.path
            );
        }
    }
    if let Some(secret) = &config.http_secret {
        if secret.len() >= 8 {
            assert!(!effective.contains(secret.as_str()), "http.secret shown");
        }
    }
    for key in &config.unknown_keys {
        assert!(
            keys::find(key).is_none(),
            "known key {key} reported unknown"
        );
    }
    assert!(config.uploads.sessions_per_client_max <= config.uploads.sessions_max);
    assert!(config.uploads.sessions_per_client_max >= 1);
    let conn = &config.conn_settings;
    assert!(conn.body_bytes_per_second_min == 0 || !conn.body_rate_window.is_zero());
    assert!(config.health.threshold >= 1 && !config.health.interval.is_zero());
    assert!(!config.login_failures.failure_window.is_zero());
    let path = &config.debug.prometheus_path;
    assert!(
        path.starts_with('/') && !path.contains(['?', ' ']),
        "{path:?}"
    );
    if let Some(debug) = config.debug.addr {
        assert!(debug != config.listen || debug.port() == 0);
    }
    // Parsing is a function of the text.
    let again = Config::from_yaml(text, "fuzz.yml").expect("parsed once, parses again");
    assert_eq!(again.effective(), effective);
    assert_eq!(again.unknown_keys, config.unknown_keys);
}

/// Inputs the parse would answer by looking outside the process: a
/// `host:port` string (resolved through DNS for `http.addr` and
/// `http.debug.addr`) or a `remoteca` file (read to validate the proxy's
/// upstream). Those paths are not fuzzed.
fn touches_outside(text: &str) -> bool {
    if text.to_ascii_lowercase().contains("remoteca") {
        return true;
    }
    let Ok(value) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) else {
        return false;
    };
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            serde_yaml_ng::Value::String(s) => {
                let resolvable = !s.starts_with(':')
                    && s.parse::<std::net::SocketAddr>().is_err()
                    && s.rsplit_once(':')
                        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
                if resolvable {
                    return true;
                }
            }
            serde_yaml_ng::Value::Sequence(items) => stack.extend(items),
            serde_yaml_ng::Value::Mapping(map) => stack.extend(map.values()),
            serde_yaml_ng::Value::Tagged(tagged) => stack.push(&tagged.value),
            _ => {}
        }
    }
    false
}
