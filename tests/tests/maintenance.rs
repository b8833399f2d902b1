//! `berth garbage-collect`, `berth scrub` and the online GC against real
//! data: unreferenced blobs go, everything an image needs stays pullable,
//! a busy data directory is refused, damage is reported with the tags it
//! hits.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_tests::http::request;
use berth_tests::images;
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};
use berth_tests::skopeo::Skopeo;
use sha2::{Digest as _, Sha256};

fn berth(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(berth_binary());
    c.args(args)
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", data)
        .env("REGISTRY_CONFIGURATION_PATH", "/dev/null");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("berth runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stray_blob(r: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    let res = request(
        "POST",
        &r.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")),
        &[],
        Some(data),
    );
    assert_eq!(res.status, 201);
    digest
}

#[test]
fn offline_gc_keeps_images_and_drops_strays_and_scrub_reports_damage() {
    if !RegistryCommand::from_env().is_berth {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let index = images::index(&work.path().join("index"), "latest");
    let mut r = Registry::start(&data);
    Skopeo::new().push_layout(&index, &format!("{}/gc/index:latest", r.addr()));
    let stray = stray_blob(&r, "gc/index", b"nobody references me");

    let busy = berth(&data, &["garbage-collect"], &[]);
    assert!(
        !busy.status.success() && text(&busy).contains("in use"),
        "{}",
        text(&busy)
    );
    r.stop();

    let no_grace = [("REGISTRY_STORAGE_GC_GRACEPERIOD", "0s")];
    let dry = berth(&data, &["garbage-collect", "--dry-run"], &no_grace);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains(&format!("would delete blob {stray}")),
        "{}",
        text(&dry)
    );
    let real = berth(&data, &["garbage-collect"], &no_grace);
    assert!(
        real.status.success() && text(&real).contains(&format!("deleted blob {stray}")),
        "{}",
        text(&real)
    );
    let clean = berth(&data, &["scrub"], &[]);
    assert!(
        clean.status.success() && text(&clean).contains("0 problems"),
        "{}",
        text(&clean)
    );
    assert!(
        text(&clean).contains("scrub: 100%"),
        "no progress reported: {}",
        text(&clean)
    );

    r.start_again();
    assert_eq!(
        request(
            "HEAD",
            &r.url(&format!("/v2/gc/index/blobs/{stray}")),
            &[],
            None
        )
        .status,
        404
    );
    let pulled = work.path().join("pulled/index");
    Skopeo::new().pull_to_layout(&format!("{}/gc/index:latest", r.addr()), &pulled, "latest");
    images::assert_same_blobs(&index, &pulled);
    r.stop();

    // Flip one byte in the middle of every segment file: scrub must name the damage.
    let mut flipped = 0;
    for entry in std::fs::read_dir(data.join("segments")).expect("segments dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("segment");
        if bytes.len() > 64 {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(&path, bytes).expect("write");
            flipped += 1;
        }
    }
    assert!(flipped > 0, "no segment file to damage");
    let damaged = berth(&data, &["scrub"], &[]);
    assert!(
        !damaged.status.success(),
        "scrub passed damaged data: {}",
        text(&damaged)
    );
    assert!(
        text(&damaged).contains("DAMAGED") && text(&damaged).contains("repository gc/index"),
        "{}",
        text(&damaged)
    );
}

#[test]
fn online_gc_runs_while_serving() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    command
        .env
        .push(("REGISTRY_STORAGE_GC_INTERVAL".into(), "1s".into()));
    command
        .env
        .push(("REGISTRY_STORAGE_GC_GRACEPERIOD".into(), "0s".into()));
    let work = tempfile::tempdir().expect("temp dir");
    let r = Registry::start_with(command, &work.path().join("data"));
    let index = images::index(&work.path().join("index"), "latest");
    Skopeo::new().push_layout(&index, &format!("{}/live/index:latest", r.addr()));
    let stray = stray_blob(&r, "live/index", b"collect me while serving");
    let deadline = Instant::now() + Duration::from_secs(15);
    while request(
        "HEAD",
        &r.url(&format!("/v2/live/index/blobs/{stray}")),
        &[],
        None,
    )
    .status
        != 404
    {
        assert!(
            Instant::now() < deadline,
            "the online GC never removed the stray blob: {}",
            r.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pulled = work.path().join("pulled/index");
    Skopeo::new().pull_to_layout(
        &format!("{}/live/index:latest", r.addr()),
        &pulled,
        "latest",
    );
    images::assert_same_blobs(&index, &pulled);
    assert!(r.log_tail(50).contains("online GC"), "{}", r.log_tail(20));
}

/// A second registry on a port another berth serves must refuse to start
/// (as registry:2 does), not silently share the port's connections through
/// SO_REUSEPORT.
#[test]
fn a_second_berth_on_a_busy_port_refuses_to_start() {
    if !RegistryCommand::from_env().is_berth {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let r = Registry::start(&work.path().join("first"));
    let mut second = std::process::Command::new(berth_tests::registry::berth_binary())
        .arg("serve")
        .env("REGISTRY_CONFIGURATION_PATH", "/dev/null")
        .env("REGISTRY_HTTP_ADDR", r.addr())
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            work.path().join("second"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second berth kept running on {}", r.addr());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = second.wait_with_output().expect("output");
    assert!(!status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    let v2 = request("GET", &r.url("/v2/"), &[], None);
    assert_eq!(v2.status, 200, "the first registry still serves");
}
