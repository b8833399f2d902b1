//! Tests of the configuration: sources, sections, errors naming their key,
//! the effective configuration and the README's table.

use super::*;
use std::path::{Path, PathBuf};

use super::keys;

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

#[test]
fn readme_table_is_the_key_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md beside the workspace");
    let begin = readme
        .find("<!-- config-keys:begin")
        .and_then(|i| readme[i..].find('\n').map(|j| i + j + 1))
        .expect("README.md has the config-keys:begin marker");
    let end = readme
        .find("<!-- config-keys:end -->")
        .expect("README.md has the config-keys:end marker");
    assert!(
        readme[begin..end] == keys::markdown_table(),
        "README.md's configuration table differs from server/src/config/keys.rs: run scripts/config-table"
    );
}

#[test]
fn key_table_is_well_formed() {
    let mut paths = std::collections::HashSet::new();
    let mut envs = std::collections::HashSet::new();
    assert!(keys::KEYS[0].doc.is_some(), "the first key starts a row");
    for key in keys::KEYS {
        assert!(paths.insert(key.path), "{} twice", key.path);
        assert!(envs.insert(key.env()), "{} twice", key.env());
        assert_eq!(key.path, key.path.to_ascii_lowercase(), "{}", key.path);
        assert!(!key.path.contains('_'), "{}: `_` joins env names", key.path);
        assert_eq!(keys::find(key.path).map(|k| k.path), Some(key.path));
    }
    // The table's defaults are the ones the server's own types assume.
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.head_limits(), berth_http::Limits::default());
    let conn = crate::conn::ConnSettings::default();
    assert_eq!(c.conn_settings.head_read_timeout, conn.head_read_timeout);
    assert_eq!(c.conn_settings.idle_timeout, conn.idle_timeout);
    assert_eq!(
        c.conn_settings.body_progress_timeout,
        conn.body_progress_timeout
    );
    assert_eq!(
        c.conn_settings.connections_per_loop_max,
        conn.connections_per_loop_max
    );
    assert_eq!(c.drain_timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.gc_grace_period, std::time::Duration::from_secs(3600));
    assert_eq!(c.log_level, "info");
    assert_eq!(c.threads, 0);
}

#[test]
fn effective_config_has_one_line_per_key_in_table_order() {
    let c = Config::load(None, env(&[("REGISTRY_PROXY_PASSWORD", "pw")])).unwrap();
    let text = c.effective();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), keys::KEYS.len(), "{text}");
    for (line, key) in lines.iter().zip(keys::KEYS) {
        assert!(line.starts_with(&format!("{}: ", key.path)), "{line}");
    }
    assert!(text.contains("proxy.password: ********"), "{text}");
    assert!(!text.contains("pw"), "{text}");
    assert!(
        text.contains("http.secret: (generated, kept in the data directory)"),
        "{text}"
    );
    assert!(text.contains("http.draintimeout: 30s"), "{text}");
    assert!(text.contains("http.limits.idletimeoutms: 120000"), "{text}");
}

#[test]
fn unknown_keys_come_from_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(
        &path,
        "storage:\n  s3:\n    bucket: b\nhttp:\n  debug:\n    addr: 127.0.0.1:5001\n  limits:\n    uploadsessionsmax: 5\n    nosuchlimit: 1\nhealth:\n  storagedriver:\n    enabled: false\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), env(&[])).unwrap();
    assert_eq!(
        c.unknown_keys,
        vec![
            "storage.s3.bucket".to_string(),
            "http.limits.nosuchlimit".to_string()
        ]
    );
    assert_eq!(
        c.uploads,
        UploadLimits {
            sessions_max: 5,
            sessions_per_client_max: 5
        },
        "the default per-client cap follows a lower total"
    );
}

#[test]
fn new_limits_and_health_keys_have_their_defaults() {
    use std::time::Duration;
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(
        c.uploads,
        UploadLimits {
            sessions_max: 10_000,
            sessions_per_client_max: 1_000
        }
    );
    assert_eq!(c.conn_settings.discard_body_bytes_max, 65_536);
    assert_eq!(
        (
            c.conn_settings.body_bytes_per_second_min,
            c.conn_settings.body_rate_window
        ),
        (1024, Duration::from_secs(30))
    );
    assert_eq!(
        c.debug,
        DebugConfig {
            addr: None,
            prometheus_enabled: false,
            prometheus_path: "/metrics".into()
        }
    );
    assert_eq!(
        c.login_failures,
        FailureSettings {
            failures_max: 10,
            failure_window: Duration::from_secs(60)
        }
    );
    assert_eq!(
        c.health,
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            threshold: 3,
            free_bytes_min: 512 << 20
        }
    );
    let text = c.effective();
    for line in [
        "http.limits.uploadsessionsmax: 10000",
        "http.limits.uploadsessionsperclientmax: 1000",
        "http.limits.discardbodybytesmax: 65536",
        "http.limits.bodybytespersecondmin: 1024",
        "http.limits.bodyratewindowms: 30000",
        "http.debug.prometheus.enabled: false",
        "http.debug.prometheus.path: /metrics",
        "auth.htpasswd.failuresmax: 10",
        "auth.htpasswd.failurewindow: 1m",
        "http.debug.addr: unset",
        "health.storagedriver.enabled: true",
        "health.storagedriver.interval: 10s",
        "health.storagedriver.threshold: 3",
        "health.storagedriver.freebytesmin: 536870912",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
}

#[test]
fn new_keys_are_set_by_env_and_file() {
    use std::time::Duration;
    let c = Config::load(
        None,
        env(&[
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:5000"),
            ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "50"),
            ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSPERCLIENTMAX", "50"),
            ("REGISTRY_HTTP_LIMITS_DISCARDBODYBYTESMAX", "0"),
            ("REGISTRY_HTTP_LIMITS_BODYBYTESPERSECONDMIN", "0"),
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:5001"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/prom"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "r"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/p"),
            ("REGISTRY_AUTH_HTPASSWD_FAILURESMAX", "3"),
            ("REGISTRY_AUTH_HTPASSWD_FAILUREWINDOW", "5m"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "2s"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "5"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_FREEBYTESMIN", "2GB"),
        ]),
    )
    .unwrap();
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    assert!(matches!(c.auth, AuthConfig::Htpasswd { .. }));
    assert_eq!(c.uploads.sessions_max, 50);
    assert_eq!(c.uploads.sessions_per_client_max, 50);
    assert_eq!(c.conn_settings.discard_body_bytes_max, 0);
    assert_eq!(
        c.conn_settings.body_bytes_per_second_min, 0,
        "0 turns the minimum rate off"
    );
    assert_eq!(c.debug.addr, Some("127.0.0.1:5001".parse().unwrap()));
    assert!(c.debug.prometheus_enabled);
    assert_eq!(c.debug.prometheus_path, "/prom");
    assert_eq!(c.login_failures.failures_max, 3);
    assert_eq!(c.login_failures.failure_window, Duration::from_secs(300));
    let probe = c.health;
    assert!(probe.enabled);
    assert_eq!(probe.interval, Duration::from_secs(2));
    assert_eq!(probe.threshold, 5);
    assert_eq!(probe.free_bytes_min, 2_000_000_000);

    let c = Config::from_yaml(
        "http:\n  limits:\n    bodybytespersecondmin: 10\n    bodyratewindowms: 1000\nhealth:\n  storagedriver:\n    enabled: false\n",
        "test",
    )
    .unwrap();
    assert_eq!(
        (
            c.conn_settings.body_bytes_per_second_min,
            c.conn_settings.body_rate_window
        ),
        (10, Duration::from_secs(1))
    );
    assert!(!c.health.enabled);
    let c = Config::from_yaml(
        "auth:\n  htpasswd:\n    realm: r\n    path: /p\n    failuresmax: 0\n",
        "test",
    )
    .unwrap();
    assert_eq!(c.login_failures.failures_max, 0, "0 turns the limit off");
}

#[test]
fn bad_new_values_name_their_key() {
    for (pairs, named) in [
        (
            vec![("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "0")],
            "http.limits.uploadsessionsmax",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "many")],
            "http.limits.uploadsessionsmax",
        ),
        (
            vec![
                ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "10"),
                ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSPERCLIENTMAX", "11"),
            ],
            "http.limits.uploadsessionsperclientmax",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSPERCLIENTMAX", "0")],
            "http.limits.uploadsessionsperclientmax",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_DISCARDBODYBYTESMAX", "-1")],
            "http.limits.discardbodybytesmax",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_DISCARDBODYBYTESMAX", "64KiB")],
            "http.limits.discardbodybytesmax",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_BODYBYTESPERSECONDMIN", "fast")],
            "http.limits.bodybytespersecondmin",
        ),
        (
            vec![("REGISTRY_HTTP_LIMITS_BODYRATEWINDOWMS", "0")],
            "http.limits.bodyratewindowms",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_ADDR", "nowhere")],
            "http.debug.addr",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_ADDR", ":5000")],
            "http.debug.addr",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "yes please")],
            "http.debug.prometheus.enabled",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "metrics")],
            "http.debug.prometheus.path",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/metrics?x=1")],
            "http.debug.prometheus.path",
        ),
        (
            vec![("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/debug/health")],
            "http.debug.prometheus.path",
        ),
        (
            vec![("REGISTRY_AUTH_HTPASSWD_FAILURESMAX", "-1")],
            "auth.htpasswd.failuresmax",
        ),
        (
            vec![("REGISTRY_AUTH_HTPASSWD_FAILUREWINDOW", "0")],
            "auth.htpasswd.failurewindow",
        ),
        (
            vec![("REGISTRY_AUTH_HTPASSWD_FAILUREWINDOW", "a while")],
            "auth.htpasswd.failurewindow",
        ),
        (
            vec![("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "sometimes")],
            "health.storagedriver.enabled",
        ),
        (
            vec![("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "0")],
            "health.storagedriver.interval",
        ),
        (
            vec![("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "0")],
            "health.storagedriver.threshold",
        ),
        (
            vec![("REGISTRY_HEALTH_STORAGEDRIVER_FREEBYTESMIN", "lots")],
            "health.storagedriver.freebytesmin",
        ),
    ] {
        let mut pairs = pairs;
        if named.starts_with("auth.htpasswd.") {
            pairs.extend([
                ("REGISTRY_AUTH_HTPASSWD_REALM", "r"),
                ("REGISTRY_AUTH_HTPASSWD_PATH", "/p"),
            ]);
        }
        let error = Config::load(None, env(&pairs)).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains(named) && !e.contains('\n')),
            "{pairs:?}: {error:?}"
        );
    }
}

#[test]
fn reading_outside_the_table_is_a_typed_error() {
    let root = source::parse_yaml(EMBEDDED_DEFAULT, "default").unwrap();
    let src = source::Source::new(&root);
    assert!(matches!(
        src.get("storage.s3.bucket"),
        Err(ConfigError::NotInTable {
            key: "storage.s3.bucket"
        })
    ));
    let err = src.flag("http.addr").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Mistyped {
                key: "http.addr",
                ..
            }
        ),
        "{err}"
    );
    assert!(!src.flag("storage.delete.enabled").unwrap());
}

/// Every key of the table is read by some section (else it would be
/// accepted without a warning and then ignored); `version` alone is read
/// and ignored on purpose, as registry:2 does.
#[test]
fn every_key_in_the_table_is_read_by_a_section() {
    let configs = [
        "",
        "http:\n  tls:\n    certificate: /c\n    key: /k\nauth:\n  htpasswd:\n    realm: r\n    path: /p\nproxy:\n  remoteurl: http://up:5000\n",
        "http:\n  tls:\n    letsencrypt:\n      cachefile: /c\n      hosts: [h]\nauth:\n  token:\n    realm: r\n    service: s\n    issuer: i\n    jwks: /j\n",
    ];
    let mut read = std::collections::BTreeSet::new();
    for text in configs {
        let mut root = source::parse_yaml(EMBEDDED_DEFAULT, "default").unwrap();
        source::merge(&mut root, source::parse_yaml(text, "test").unwrap());
        let src = source::Source::new(&root);
        if let Err(e) = Config::from_source(&src) {
            panic!("{text}: {e}");
        }
        read.extend(src.keys_read());
    }
    let unread: Vec<&str> = keys::KEYS
        .iter()
        .map(|k| k.path)
        .filter(|p| !read.contains(p) && *p != "version")
        .collect();
    assert!(unread.is_empty(), "keys no section reads: {unread:?}");
}
