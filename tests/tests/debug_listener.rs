//! The debug listener (`http.debug.addr`) and what the public port does not
//! serve: `/debug/...` answers 404 with the spec's JSON error body on the
//! API port, with auth on or off and however the path is spelled; health
//! and metrics are on the debug listener only, and health answers from the
//! background probe's last verdict (no disk work per request).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::http::{raw_exchange, request};
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};

/// Every spelling of a debug path on the public port: 404, JSON `errors`.
fn assert_public_debug_paths_are_404(r: &Registry, mode: &str) {
    for path in [
        "/debug/health",
        "/debug/metrics",
        "/%64ebug/metrics",
        "/%64%65bug/health",
        "/debug/pprof/",
        "/debug",
    ] {
        let exchange = raw_exchange(
            &r.addr(),
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                r.addr()
            )
            .as_bytes(),
            false,
            Duration::from_secs(10),
        );
        let response = exchange
            .response()
            .unwrap_or_else(|| panic!("{mode}: no response to {path}: {}", exchange.text()));
        assert_eq!(
            response.status,
            404,
            "{mode}: GET {path}: {}",
            exchange.text()
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("{mode}: {path}: not JSON ({e}): {}", exchange.text()));
        assert!(
            body["errors"][0]["code"].is_string(),
            "{mode}: {path}: not the spec's error body: {body}"
        );
        let text = String::from_utf8_lossy(&response.body).into_owned();
        assert!(
            !text.contains("berth_") && !text.contains("storage"),
            "{mode}: {path} leaks debug output: {text}"
        );
    }
}

fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new(berth_binary())
        .args(["htpasswd", "-Bbn", user, password])
        .output()
        .expect("berth htpasswd");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn start_with(dir: &Path, env: &[(&str, &str)]) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    for (k, v) in env {
        command.env.push((k.to_string(), v.to_string()));
    }
    if env.iter().any(|(k, _)| *k == "REGISTRY_AUTH") {
        command.ready_log_line = Some("berth listening".into());
    }
    Some(Registry::start_with(command, &dir.join("data")))
}

#[test]
fn debug_paths_are_not_served_on_the_public_port_with_auth_off_or_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(open) = start_with(dir.path(), &[]) else {
        return;
    };
    assert_public_debug_paths_are_404(&open, "auth off");
    // The same registry serves them on its debug listener.
    assert_eq!(open.health().status, 200);
    assert!(open.metrics().contains_key("berth_manifest_cache_bytes"));
    drop(open);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line("testuser", "testpassword")).expect("write");
    let path = file.display().to_string();
    let Some(secured) = start_with(
        dir.path(),
        &[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", &path),
        ],
    ) else {
        return;
    };
    assert_eq!(
        request("GET", &secured.url("/v2/"), &[], None).status,
        401,
        "auth is on"
    );
    assert_public_debug_paths_are_404(&secured, "auth on");
    assert_eq!(secured.health().status, 200);
}

#[test]
fn health_requests_do_no_disk_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One probe at start, the next an hour later.
    let Some(r) = start_with(
        dir.path(),
        &[("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "1h")],
    ) else {
        return;
    };
    let t0 = Instant::now();
    while r.metric("berth_health_probes_total") < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no probe ran at start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let writes = r.metric("berth_health_probe_writes_total");
    assert_eq!(writes, 1, "the start-up probe wrote one record");
    for _ in 0..200 {
        let health = r.health();
        assert_eq!(health.status, 200, "{}", health.text());
        assert_eq!(health.json(), serde_json::json!({}));
    }
    assert_eq!(
        r.metric("berth_health_probe_writes_total"),
        writes,
        "health requests made the probe write"
    );
    let left: Vec<_> = std::fs::read_dir(r.data_dir().join("tmp"))
        .expect("the store's tmp dir")
        .collect();
    assert!(left.is_empty(), "probe files left behind: {left:?}");
}

#[test]
fn a_failing_write_turns_health_503_naming_the_check_and_it_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(r) = start_with(
        dir.path(),
        &[
            ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "100ms"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "2"),
        ],
    ) else {
        return;
    };
    let wait = |status: u16| {
        let t0 = Instant::now();
        loop {
            let health = r.health();
            if health.status == status || t0.elapsed() > Duration::from_secs(5) {
                return health;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(wait(200).status, 200);
    // The probe writes into the store's tmp/: without it every write fails.
    let tmp = r.data_dir().join("tmp");
    std::fs::remove_dir_all(&tmp).expect("remove tmp/");
    let health = wait(503);
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    assert!(
        body["storagedriver_filesystem"]
            .as_str()
            .is_some_and(|r| r.contains("write")),
        "{body}"
    );
    assert!(
        !health.text().contains(&tmp.display().to_string()),
        "no paths in the answer: {body}"
    );
    assert!(r.metric("berth_health_probe_failures_total") >= 2);
    std::fs::create_dir(&tmp).expect("recreate tmp/");
    let health = wait(200);
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json(), serde_json::json!({}));
}

#[test]
fn prometheus_path_serves_the_metrics_on_the_debug_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(r) = start_with(
        dir.path(),
        &[
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/prom"),
        ],
    ) else {
        return;
    };
    let scraped = request("GET", &r.debug_url("/prom"), &[], None);
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        scraped.headers
    );
    let text = scraped.text();
    for series in [
        "berth_blob_bytes_spliced_total",
        "berth_upload_bytes_piped_total",
        "berth_manifest_cache_bytes",
        "berth_health_probes_total",
    ] {
        assert!(
            text.contains(&format!("\n{series} ")),
            "{series} missing: {text}"
        );
    }
    assert_eq!(request("GET", &r.url("/prom"), &[], None).status, 404);
    assert_eq!(request("GET", &r.debug_url("/v2/"), &[], None).status, 404);
}
