//! The packaging files agree with the binary: the image's config.yml is
//! valid, the Dockerfile ships what the docs promise (config path, volume,
//! port, the htpasswd entry point), the compose file uses the guide's
//! variables, and the systemd unit sets the limits it should. (No image is
//! built here: the CI machines cannot pull base images.)

use std::process::Command;

use berth_tests::registry::{berth_binary, workspace_root};

fn read(path: &str) -> String {
    let full = workspace_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

#[test]
fn image_config_passes_config_check() {
    let config = workspace_root().join("packaging/config.yml");
    let out = Command::new(berth_binary())
        .args(["config", "check"])
        .arg(&config)
        .env_clear()
        .output()
        .expect("berth runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("http.addr: 0.0.0.0:5000"), "{text}");
    assert!(
        text.contains("storage.filesystem.rootdirectory: /var/lib/registry"),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "unknown keys in packaging/config.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dockerfile_ships_what_the_docs_promise() {
    let dockerfile = read("Dockerfile");
    for needle in [
        "COPY packaging/config.yml /etc/docker/registry/config.yml",
        "VOLUME [\"/var/lib/registry\"]",
        "EXPOSE 5000",
        "ln -s berth /out/usr/local/bin/htpasswd",
        "CMD [\"serve\", \"/etc/docker/registry/config.yml\"]",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle:?}");
    }
    let compose = read("docker-compose.yml");
    for needle in [
        "REGISTRY_HTTP_TLS_CERTIFICATE",
        "REGISTRY_HTTP_TLS_KEY",
        "REGISTRY_AUTH: htpasswd",
        "REGISTRY_AUTH_HTPASSWD_PATH",
        "REGISTRY_AUTH_HTPASSWD_REALM",
        "/var/lib/registry",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml lacks {needle:?}"
        );
    }
}

#[test]
fn systemd_unit_sets_limits_and_reload() {
    let unit = read("packaging/berth.service");
    for needle in [
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/berth serve /etc/docker/registry/config.yml",
    ] {
        assert!(unit.contains(needle), "berth.service lacks {needle:?}");
    }
    if let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(workspace_root().join("packaging/berth.service"))
        .output()
    {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify also complains that /usr/local/bin/berth is not installed here; nothing else may appear.
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.contains("/usr/local/bin/berth")
                    || line.contains("Failed to prepare filename")
                    || line.contains("Command "),
                "systemd-analyze: {line}"
            );
        }
    }
}

/// A bare `berth config check` uses the embedded default even where a
/// machine-wide /etc/docker/registry/config.yml exists (CI installs Debian's
/// docker-registry, which ships one); REGISTRY_CONFIGURATION_PATH names a file.
#[test]
fn configuration_sources() {
    let out = Command::new(berth_binary())
        .args(["config", "check"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("berth runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# effective configuration: the embedded default"),
        "{text}"
    );
    assert!(
        text.contains("storage.filesystem.rootdirectory: /var/lib/registry"),
        "{text}"
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        file.path(),
        "storage:\n  filesystem:\n    rootdirectory: /srv/from-env\n",
    )
    .expect("write");
    let out = Command::new(berth_binary())
        .args(["config", "check"])
        .env("REGISTRY_CONFIGURATION_PATH", file.path())
        .output()
        .expect("berth runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("storage.filesystem.rootdirectory: /srv/from-env"),
        "{text}"
    );
}
