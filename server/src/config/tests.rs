//! Tests of the configuration: sources, sections, errors naming their key,
//! the effective configuration and the README's table.

use super::*;
use std::path::{Path, PathBuf};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_default_matches_registry2() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(c.root_directory, PathBuf::from("/var/lib/registry"));
    assert!(!c.delete_enabled);
    assert_eq!(c.driver, DriverChoice::Auto);
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
}

#[test]
fn environment_overrides_keys_by_path() {
    let c = Config::load(
        None,
        env(&[
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:5001"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/tmp/x"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_RUNTIME_DRIVER", "poll"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:5001".parse().unwrap());
    assert_eq!(c.root_directory, PathBuf::from("/tmp/x"));
    assert!(c.delete_enabled);
    assert_eq!(c.driver, DriverChoice::Poll);
}

#[test]
fn file_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "version: 0.1\nhttp:\n  addr: 127.0.0.1:6000\n  secret: s\nstorage:\n  delete:\n    enabled: true\n").unwrap();
    let c = Config::load(Some(&path), env(&[("REGISTRY_HTTP_ADDR", ":7000")])).unwrap();
    assert_eq!(c.listen.port(), 7000);
    assert!(c.delete_enabled);
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    assert_eq!(c.http_secret.as_deref(), Some("s"));
}

#[test]
fn durations_follow_go_syntax() {
    use std::time::Duration;
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    for bad in ["", "30", "s", "1x", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    let c = Config::load(None, env(&[("REGISTRY_HTTP_DRAINTIMEOUT", "5s")])).unwrap();
    assert_eq!(c.drain_timeout, Duration::from_secs(5));
    assert!(Config::load(None, env(&[("REGISTRY_HTTP_DRAINTIMEOUT", "soon")])).is_err());
}

#[test]
fn tls_settings_from_env_with_indexed_lists() {
    let c = Config::load(
        None,
        env(&[
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ("REGISTRY_HTTP_TLS_CLIENTCAS_1", "/certs/b.pem"),
            ("REGISTRY_HTTP_TLS_CLIENTCAS_0", "/certs/a.pem"),
            ("REGISTRY_HTTP_TLS_MINIMUMTLS", "tls1.3"),
        ]),
    )
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
    assert_eq!(
        tls.client_cas,
        vec![PathBuf::from("/certs/a.pem"), PathBuf::from("/certs/b.pem")]
    );
    assert_eq!(tls.minimum, crate::tls::MinimumVersion::Tls13);
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    let err = Config::load(None, env(&[("REGISTRY_HTTP_TLS_CERTIFICATE", "/x")])).unwrap_err();
    assert!(err.to_string().contains("http.tls.key"), "{err}");
    let err = Config::load(
        None,
        env(&[
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/x"),
            ("REGISTRY_HTTP_TLS_KEY", "/y"),
            ("REGISTRY_HTTP_TLS_MINIMUMTLS", "tls1.0"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("http.tls.minimumtls"), "{err}");
}

#[test]
fn auth_section_from_env_in_any_order() {
    let vars = [
        ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
        ("REGISTRY_AUTH", "htpasswd"),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
    ];
    let expected = AuthConfig::Htpasswd {
        realm: "Registry Realm".into(),
        path: PathBuf::from("/auth/htpasswd"),
    };
    for order in [[0, 1, 2], [1, 0, 2], [2, 0, 1], [1, 2, 0]] {
        let c = Config::load(
            None,
            order
                .iter()
                .map(|&i| (vars[i].0.to_string(), vars[i].1.to_string())),
        )
        .unwrap();
        assert_eq!(c.auth, expected, "{order:?}");
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }
    let err = Config::load(
        None,
        env(&[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/x"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("auth.htpasswd.realm"), "{err}");
    let err = Config::load(None, env(&[("REGISTRY_AUTH", "silly")])).unwrap_err();
    assert!(err.to_string().contains("auth"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "auth:\n  htpasswd:\n    realm: r\n    path: /p\n").unwrap();
    assert_eq!(
        Config::load(Some(&path), env(&[("REGISTRY_AUTH", "")]))
            .unwrap()
            .auth,
        AuthConfig::None
    );
}

#[test]
fn proxy_section_from_env_with_registry2_names_and_berth_extras() {
    let c = Config::load(
        None,
        env(&[
            ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
            ("REGISTRY_PROXY_USERNAME", "ci"),
            ("REGISTRY_PROXY_PASSWORD", "s3cret"),
            ("REGISTRY_PROXY_TTL", "72h"),
            ("REGISTRY_PROXY_TAGTTL", "30s"),
            ("REGISTRY_PROXY_MAXSIZE", "500GiB"),
            ("REGISTRY_PROXY_LOCALPREFIX", "/local/"),
        ]),
    )
    .expect("config");
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    let p = c.proxy.clone().expect("proxy mode");
    assert_eq!(p.upstream.remote_url, "https://registry-1.docker.io");
    assert_eq!(p.upstream.credentials, Some(("ci".into(), "s3cret".into())));
    assert_eq!(
        p.limits.max_age,
        Some(std::time::Duration::from_secs(72 * 3600))
    );
    assert_eq!(p.limits.max_bytes, Some(500 << 30));
    assert_eq!(p.tag_ttl, std::time::Duration::from_secs(30));
    assert_eq!(p.local_prefix.as_deref(), Some("local"));
    let effective = c.effective();
    assert!(
        effective.contains("proxy.password: ********"),
        "{effective}"
    );
    assert!(!effective.contains("s3cret"), "{effective}");

    let defaults = Config::load(None, env(&[("REGISTRY_PROXY_REMOTEURL", "http://up:5000")]))
        .expect("config")
        .proxy
        .expect("proxy mode");
    assert_eq!(
        defaults.limits.max_age,
        Some(std::time::Duration::from_secs(168 * 3600))
    );
    assert_eq!(defaults.limits.max_bytes, None);
    assert_eq!(defaults.local_prefix, None);
    assert!(Config::load(None, env(&[]))
        .expect("config")
        .proxy
        .is_none());
}

#[test]
fn bad_proxy_values_name_their_key() {
    for (key, value, named) in [
        (
            "REGISTRY_PROXY_REMOTEURL",
            "registry-1.docker.io",
            "proxy.remoteurl",
        ),
        ("REGISTRY_PROXY_TTL", "a week", "proxy.ttl"),
        ("REGISTRY_PROXY_MAXSIZE", "lots", "proxy.maxsize"),
        (
            "REGISTRY_PROXY_EVICTIONINTERVAL",
            "0",
            "proxy.evictioninterval",
        ),
    ] {
        let mut pairs = vec![(key, value)];
        if key != "REGISTRY_PROXY_REMOTEURL" {
            pairs.push(("REGISTRY_PROXY_REMOTEURL", "http://up:5000"));
        }
        let error = Config::load(None, env(&pairs)).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains(named)),
            "{key}={value}: {error:?}"
        );
    }
}

#[test]
fn sizes_take_decimal_and_binary_units() {
    assert_eq!(parse_size("1073741824"), Some(1 << 30));
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("2 GB"), Some(2_000_000_000));
    assert_eq!(parse_size("10KiB"), Some(10240));
    assert_eq!(parse_size("1.5GB"), None);
    assert_eq!(parse_size("5 apples"), None);
    assert_eq!(parse_size("99999999999TiB"), None, "overflow");
}

#[test]
fn effective_config_masks_secrets() {
    let c = Config::load(None, env(&[("REGISTRY_HTTP_SECRET", "hunter2")])).unwrap();
    let text = c.effective();
    assert!(text.contains("http.secret: ********"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("http.addr: 0.0.0.0:5000"), "{text}");
}

#[test]
fn invalid_values_name_their_key() {
    let err = Config::load(None, env(&[("REGISTRY_STORAGE_DELETE_ENABLED", "maybe")])).unwrap_err();
    assert!(err.to_string().contains("storage.delete.enabled"), "{err}");
    let err = Config::load(None, env(&[("REGISTRY_HTTP_ADDR", "nowhere")])).unwrap_err();
    assert!(err.to_string().contains("http.addr"), "{err}");
    let err = Config::load(None, env(&[("REGISTRY_RUNTIME_DRIVER", "kqueue")])).unwrap_err();
    assert!(err.to_string().contains("runtime.driver"), "{err}");
    let err = Config::load(Some(Path::new("/nonexistent/config.yml")), env(&[])).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/config.yml"), "{err}");
}
