//! Upload sessions across restarts and `http.secret`: a Location issued by a
//! registry keeps working after a restart with the same secret (configured
//! or generated), and is refused clearly when signed with another secret.

use berth_tests::http::request;
use berth_tests::registry::{Registry, RegistryCommand};
use sha2::{Digest as _, Sha256};

fn start(dir: &std::path::Path, secret: Option<&str>) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    if let Some(secret) = secret {
        command
            .env
            .push(("REGISTRY_HTTP_SECRET".into(), secret.into()));
    }
    Some(Registry::start_with(command, dir))
}

fn patch(location: &str, start: usize, data: &[u8]) -> berth_tests::http::HttpResponse {
    let range = format!("{}-{}", start, start + data.len() - 1);
    request("PATCH", location, &[("Content-Range", &range)], Some(data))
}

#[test]
fn sessions_resume_after_restart_with_the_same_secret() {
    for secret in [Some("shared-secret"), None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let Some(mut r) = start(dir.path(), secret) else {
            return;
        };
        let started = request("POST", &r.url("/v2/resume/blobs/uploads/"), &[], None);
        let location = started.header("Location").expect("Location").to_owned();
        assert!(location.contains("_state="), "{location}");
        assert_eq!(patch(&location, 0, b"first half, ").status, 202);
        r.restart();
        let status = request("GET", &location, &[], None);
        assert_eq!(
            (status.status, status.header("Range")),
            (204, Some("0-11")),
            "secret {secret:?}"
        );
        let location = status.header("Location").expect("Location").to_owned();
        assert_eq!(patch(&location, 12, b"second half").status, 202);
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"first half, second half"))
        );
        let done = request("PUT", &format!("{location}&digest={digest}"), &[], None);
        assert_eq!(done.status, 201, "{}", done.text());
    }
}

#[test]
fn state_signed_with_another_secret_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut r) = start(dir.path(), Some("secret-one")) else {
        return;
    };
    let started = request("POST", &r.url("/v2/lb/blobs/uploads/"), &[], None);
    let location = started.header("Location").expect("Location").to_owned();
    r.stop();
    let Some(r2) = start(dir.path(), Some("secret-two")) else {
        return;
    };
    let moved = location.replace(&r.addr(), &r2.addr());
    let res = patch(&moved, 0, b"data");
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("http.secret"),
        "{body}"
    );
    // A tampered token is refused the same way; nothing was appended.
    let tampered = moved.replace("_state=", "_state=x");
    assert_eq!(patch(&tampered, 0, b"data").status, 400);
    let path_only = moved.split('?').next().expect("path").to_owned();
    assert_eq!(
        request("GET", &path_only, &[], None).header("Range"),
        Some("0-0")
    );
}

#[test]
fn idle_uploads_are_purged() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    for (k, v) in [
        ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "1s"),
        ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL", "1s"),
    ] {
        command.env.push((k.into(), v.into()));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start_with(command, dir.path());
    let started = request("POST", &r.url("/v2/purge/blobs/uploads/"), &[], None);
    let location = started.header("Location").expect("Location").to_owned();
    assert_eq!(patch(&location, 0, b"abandoned").status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while request("GET", &location, &[], None).status != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle upload was never purged: {}",
            r.log_tail(10)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        r.log_tail(30).contains("upload purging: removed 1"),
        "{}",
        r.log_tail(10)
    );
}
