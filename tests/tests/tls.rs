//! HTTPS: a certificate chain (leaf + intermediate, trusted through the
//! root only), RSA PKCS#1 / PKCS#8 and EC keys, skopeo pushing and pulling
//! over TLS, mutual TLS, the minimum version, and certificate reload
//! without a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::certs::{KeyKind, Pki};
use berth_tests::cmd;
use berth_tests::registry::{Registry, RegistryCommand};

fn start_tls(dir: &Path, chain: &Path, key: &Path, extra: &[(&str, &str)]) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None; // the reference registry is not run with TLS here
    }
    command.env.push((
        "REGISTRY_HTTP_TLS_CERTIFICATE".into(),
        chain.display().to_string(),
    ));
    command
        .env
        .push(("REGISTRY_HTTP_TLS_KEY".into(), key.display().to_string()));
    for (k, v) in extra {
        command.env.push((k.to_string(), v.to_string()));
    }
    command.ready_log_line = Some("berth listening".into());
    Some(Registry::start_with(command, &dir.join("data")))
}

/// `curl` against the registry; returns (exit status success, stdout, stderr).
fn curl(args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(cmd::require_tool("curl"));
    c.args(["-sS", "--max-time", "10"]).args(args);
    let out = c.output().expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chain_and_key_formats_verify_against_the_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"));
    for (name, kind) in [
        ("ec", KeyKind::EcSec1),
        ("rsa1", KeyKind::RsaPkcs1),
        ("rsa8", KeyKind::RsaPkcs8),
    ] {
        let (chain, key) = pki.server(name, kind);
        let Some(r) = start_tls(&dir.path().join(name), &chain, &key, &[]) else {
            return;
        };
        let url = format!("https://{}/v2/", r.addr());
        let (ok, body, err) = curl(&[
            "-i",
            "--cacert",
            pki.root_cert.to_str().expect("utf-8"),
            &url,
        ]);
        assert!(ok, "{name}: {err}");
        assert!(body.starts_with("HTTP/1.1 200"), "{name}: {body}");
        assert!(
            body.contains("Docker-Distribution-API-Version: registry/2.0"),
            "{body}"
        );
        // Plain HTTP to the TLS port gets no HTTP answer.
        let (plain_ok, _, _) = curl(&[&format!("http://{}/v2/", r.addr())]);
        assert!(!plain_ok, "{name}: plain HTTP was answered on the TLS port");
    }
}

#[test]
fn skopeo_pushes_and_pulls_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (chain, key) = pki.server("registry", KeyKind::EcSec1);
    let Some(r) = start_tls(dir.path(), &chain, &key, &[]) else {
        return;
    };
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::copy(&pki.root_cert, certs.join("ca.crt")).expect("copy ca");
    let layout = berth_tests::images::index(&dir.path().join("images/index"), "latest");
    let skopeo = berth_tests::skopeo::Skopeo::new();
    let cert_dir = certs.to_str().expect("utf-8");
    let dest = format!("docker://{}/tls/index:latest", r.addr());
    skopeo.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-cert-dir",
        cert_dir,
        &layout.oci_ref(),
        &dest,
    ]);
    let pulled = dir.path().join("pulled/index");
    std::fs::create_dir_all(pulled.parent().expect("parent")).expect("mkdir");
    let src_ref = format!("oci:{}:latest", pulled.display());
    skopeo.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-cert-dir",
        cert_dir,
        &dest,
        &src_ref,
    ]);
    berth_tests::images::assert_same_blobs(&layout, &pulled);
    // Without trusting the CA, the client refuses the server.
    let untrusted = Command::new(cmd::require_tool("skopeo"))
        .args(["inspect", "--raw", &dest])
        .output()
        .expect("skopeo");
    assert!(!untrusted.status.success(), "skopeo trusted an unknown CA");
}

#[test]
fn client_certificates_and_minimum_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (chain, key) = pki.server("registry", KeyKind::EcSec1);
    let (client_cert, client_key) = pki.client("client");
    let root = pki.root_cert.to_str().expect("utf-8").to_owned();
    let Some(r) = start_tls(
        dir.path(),
        &chain,
        &key,
        &[
            ("REGISTRY_HTTP_TLS_CLIENTCAS_0", root.as_str()),
            ("REGISTRY_HTTP_TLS_MINIMUMTLS", "tls1.3"),
        ],
    ) else {
        return;
    };
    let url = format!("https://{}/v2/", r.addr());
    let (ok, _, _) = curl(&["--cacert", &root, &url]);
    assert!(!ok, "a client without a certificate was let in");
    let (ok, body, err) = curl(&[
        "--cacert",
        &root,
        "--cert",
        client_cert.to_str().expect("utf-8"),
        "--key",
        client_key.to_str().expect("utf-8"),
        &url,
    ]);
    assert!(ok && body == "{}", "{err} {body}");
    let (ok, _, _) = curl(&[
        "--cacert",
        &root,
        "--cert",
        client_cert.to_str().expect("utf-8"),
        "--key",
        client_key.to_str().expect("utf-8"),
        "--tls-max",
        "1.2",
        &url,
    ]);
    assert!(!ok, "TLS 1.2 was accepted with minimumtls tls1.3");
}

#[test]
fn a_replaced_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (chain, key) = pki.server("first-name", KeyKind::EcSec1);
    let live_chain = dir.path().join("live.crt");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&chain, &live_chain).expect("copy");
    std::fs::copy(&key, &live_key).expect("copy");
    let Some(r) = start_tls(dir.path(), &live_chain, &live_key, &[]) else {
        return;
    };
    let root = pki.root_cert.to_str().expect("utf-8").to_owned();
    let url = format!("https://{}/v2/", r.addr());
    let (_, _, err) = curl(&["-v", "--cacert", &root, &url]);
    assert!(err.contains("first-name"), "{err}");
    let (chain2, key2) = pki.server("second-name", KeyKind::RsaPkcs8);
    // Replace key then chain, as an operator (or certbot) would.
    std::fs::copy(&key2, &live_key).expect("copy");
    std::fs::copy(&chain2, &live_chain).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = curl(&["-v", "--cacert", &root, &url]);
        if ok && err.contains("second-name") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served: {err}\n{}",
            r.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
