//! Wrong passwords cannot starve good ones: with htpasswd auth, failed
//! logins from one address are answered 401 until the limit (10 a minute by
//! default), then 429 `TOOMANYREQUESTS` without running bcrypt (the
//! `berth_auth_bcrypt_verifications_total` counter stops), a repeated wrong
//! password costs no bcrypt, the burst is logged once, and a user whose
//! credentials are already verified keeps getting 200 throughout.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use berth_tests::http::request;
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};

/// The default `auth.htpasswd.failuresmax`.
const FAILURES_MAX: u64 = 10;
const BCRYPT: &str = "berth_auth_bcrypt_verifications_total";

fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new(berth_binary())
        .args(["htpasswd", "-Bbn", "-C", "4", user, password])
        .output()
        .expect("berth htpasswd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn start(dir: &Path, htpasswd: &Path) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    command.with_htpasswd(&htpasswd);
    command.ready_log_line = Some("berth listening".into());
    Some(Registry::start_with(command, &dir.join("data")))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn status(r: &Registry, authorization: &str) -> u16 {
    request(
        "GET",
        &r.url("/v2/"),
        &[("Authorization", authorization)],
        None,
    )
    .status
}

#[test]
fn wrong_passwords_get_401_then_429_without_bcrypt_while_a_good_user_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        htpasswd_line("alice", "alicepw") + &htpasswd_line("victim", "victimpw"),
    )
    .expect("write");
    let Some(r) = start(dir.path(), &file) else {
        return;
    };
    let good = basic("alice", "alicepw");
    assert_eq!(status(&r, &good), 200, "the good user logs in (cached now)");
    let start = r.metric(BCRYPT);

    // The same wrong password three times: remembered, no bcrypt, and not
    // counted again.
    for _ in 0..3 {
        assert_eq!(status(&r, &basic("victim", "guess-0")), 401);
    }
    assert_eq!(
        r.metric(BCRYPT),
        start + 1,
        "a repeated wrong password ran bcrypt"
    );
    // Nine more wrong passwords reach the limit of ten failures.
    for i in 1..FAILURES_MAX {
        assert_eq!(
            status(&r, &basic("victim", &format!("guess-{i}"))),
            401,
            "attempt {i}"
        );
        if i % 3 == 0 {
            assert_eq!(status(&r, &good), 200, "the good user was refused");
        }
    }
    assert_eq!(r.metric(BCRYPT), start + FAILURES_MAX);

    // Past the limit: 429 with the spec's error, no bcrypt, for this user
    // and for any user from this address (even an unknown one, even the
    // right password of a user not yet verified); the good user's cached
    // credentials still pass.
    for i in 0..40 {
        let user = ["victim", "nobody", "victim"][i % 3];
        let password = if i == 2 {
            "victimpw".to_string()
        } else {
            format!("more-{i}")
        };
        let response = request(
            "GET",
            &r.url("/v2/"),
            &[("Authorization", &basic(user, &password))],
            None,
        );
        assert_eq!(response.status, 429, "attempt {i} by {user}");
        assert_eq!(response.json()["errors"][0]["code"], "TOOMANYREQUESTS");
        let retry: u64 = response
            .header("Retry-After")
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        if i % 5 == 0 {
            assert_eq!(status(&r, &good), 200, "the good user was refused");
        }
    }
    assert_eq!(
        r.metric(BCRYPT),
        start + FAILURES_MAX,
        "a refused login ran bcrypt"
    );
    assert!(r.metric("berth_auth_logins_refused_total") >= 40);

    // One log line for the burst (per user and per address), not one per
    // request.
    let log = std::fs::read_to_string(r.log_path()).expect("log");
    let by_user = log
        .matches("failed logins for user \"victim\" from 1 addresses")
        .count();
    let by_address = log
        .lines()
        .filter(|l| l.contains("failed logins from ") && l.contains(" for 1 users in the last"))
        .count();
    assert_eq!((by_user, by_address), (1, 1), "{log}");
    assert!(!log.contains("authentication failed for user"), "{log}");
}
