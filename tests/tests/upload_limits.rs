//! Upload sessions cost bounded resources (issue 15): sessions holding data
//! do not hold file descriptors (before or after a restart), and beyond the
//! caps on open sessions (overall, and per client) a `POST` gets 429 with
//! the spec's `TOOMANYREQUESTS` error body and nothing is created.
//!
//! The cap tests set `REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX` and
//! `REGISTRY_HTTP_LIMITS_UPLOADSESSIONSPERCLIENTMAX`: they need the
//! configuration keys `http.limits.uploadsessionsmax` and
//! `http.limits.uploadsessionsperclientmax` wired into
//! `ApiSettings::upload_limits`.

use berth_tests::http::{request, HttpResponse};
use berth_tests::registry::{Registry, RegistryCommand};

fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    for (key, value) in env {
        command.env.push(((*key).into(), (*value).into()));
    }
    Some(Registry::start_with(command, dir))
}

fn post(r: &Registry, query: &str) -> HttpResponse {
    request(
        "POST",
        &r.url(&format!("/v2/limits/blobs/uploads/{query}")),
        &[],
        None,
    )
}

fn assert_too_many(response: &HttpResponse, what: &str) {
    assert_eq!(response.status, 429, "{what}: {}", response.text());
    let body = response.json();
    assert_eq!(
        body["errors"][0]["code"], "TOOMANYREQUESTS",
        "{what}: {body}"
    );
}

fn open_fds(r: &Registry) -> usize {
    let pid = r.pid().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the registry's descriptors")
        .count()
}

fn sessions_on_disk(r: &Registry) -> usize {
    let journal =
        std::fs::read_to_string(r.data_dir().join("uploads/sessions")).unwrap_or_default();
    let started = journal.lines().filter(|l| l.starts_with("+ ")).count();
    let ended = journal.lines().filter(|l| l.starts_with("- ")).count();
    started - ended
}

#[test]
fn sessions_holding_data_hold_no_descriptors_before_or_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut r) = start(dir.path(), &[]) else {
        return;
    };
    assert_eq!(post(&r, "").status, 202);
    let baseline = open_fds(&r);
    let sessions = 300;
    for i in 0..sessions {
        let started = post(&r, "");
        assert_eq!(started.status, 202, "session {i}: {}", started.text());
        let location = started.header("Location").expect("Location").to_owned();
        let patched = request("PATCH", &location, &[("Content-Range", "0-0")], Some(b"x"));
        assert_eq!(patched.status, 202, "session {i}: {}", patched.text());
    }
    // At most the engine's cache of open data files (64), plus slack for
    // connections still closing.
    let grown = open_fds(&r).saturating_sub(baseline);
    assert!(
        grown < 64 + 40,
        "{grown} more descriptors for {sessions} sessions"
    );
    r.restart();
    assert_eq!(post(&r, "").status, 202);
    let grown = open_fds(&r).saturating_sub(baseline);
    assert!(grown < 40, "{grown} more descriptors after the restart");
}

/// Needs the configuration keys (see the module docs).
#[test]
fn beyond_the_overall_cap_every_way_to_open_a_session_gets_429() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(r) = start(
        dir.path(),
        &[("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "3")],
    ) else {
        return;
    };
    let mut locations = Vec::new();
    for i in 0..3 {
        let started = post(&r, "");
        assert_eq!(started.status, 202, "session {i}: {}", started.text());
        locations.push(started.header("Location").expect("Location").to_owned());
    }
    assert_too_many(&post(&r, ""), "a fourth POST");
    let digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let monolithic = request(
        "POST",
        &r.url(&format!("/v2/limits/blobs/uploads/?digest={digest}")),
        &[("Content-Type", "application/octet-stream")],
        Some(b"hello"),
    );
    assert_too_many(&monolithic, "a monolithic POST");
    assert_too_many(
        &post(&r, &format!("?mount={digest}")),
        "a mount falling back to a session",
    );
    assert_eq!(
        sessions_on_disk(&r),
        3,
        "nothing was created beyond the cap"
    );
    // Ending a session frees its place.
    assert_eq!(request("DELETE", &locations[0], &[], None).status, 204);
    assert_eq!(post(&r, "").status, 202);
}

/// Needs the configuration keys (see the module docs).
#[test]
fn beyond_the_per_client_cap_a_post_gets_429_also_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut r) = start(
        dir.path(),
        &[
            ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSMAX", "100"),
            ("REGISTRY_HTTP_LIMITS_UPLOADSESSIONSPERCLIENTMAX", "2"),
        ],
    ) else {
        return;
    };
    for i in 0..2 {
        assert_eq!(post(&r, "").status, 202, "session {i}");
    }
    assert_too_many(&post(&r, ""), "a third POST from one client");
    // The count is kept with the sessions.
    r.restart();
    assert_too_many(&post(&r, ""), "a third POST after a restart");
    assert_eq!(sessions_on_disk(&r), 2);
}
