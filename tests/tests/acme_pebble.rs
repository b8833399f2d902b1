//! `http.tls.letsencrypt` against Pebble (Let's Encrypt's test ACME server,
//! Debian package `pebble`) on loopback: berth obtains a certificate with
//! the TLS-ALPN-01 challenge on its own port, serves it, keeps it in the
//! cache file, and serves the cached one after a restart without the ACME
//! server. pebble-challtestsrv answers Pebble's DNS lookups.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::certs::{KeyKind, Pki};
use berth_tests::cmd;
use berth_tests::registry::{free_port, Registry, RegistryCommand};

/// Kills a helper daemon when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        cmd::terminate(&mut self.0, Duration::from_secs(5), false);
    }
}

fn spawn(program: &str, args: &[String], env: &[(&str, &str)], log: &Path) -> Daemon {
    let out = cmd::append_file(log);
    let err = out.try_clone().expect("dup log");
    let mut c = Command::new(cmd::require_tool(program));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        c.env(k, v);
    }
    cmd::die_with_parent(&mut c, libc::SIGTERM);
    Daemon(
        c.spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
    )
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd::require_tool("curl"))
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn certificate_obtained_from_pebble_served_cached_and_reused() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (pebble_cert, pebble_key) = pki.server("pebble", KeyKind::EcSec1);
    let (pebble_port, pebble_management, dns_port, challtest_management) =
        (free_port(), free_port(), free_port(), free_port());
    let cache = dir.path().join("acme/cache.json");
    for (k, v) in [
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE",
            cache.display().to_string(),
        ),
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL",
            "admin@berth.test".to_string(),
        ),
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS_0",
            "berth.test".to_string(),
        ),
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL",
            format!("https://127.0.0.1:{pebble_port}/dir"),
        ),
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYCA",
            pki.root_cert.display().to_string(),
        ),
    ] {
        command.env.push((k.into(), v));
    }
    command.ready_log_line = Some("berth listening".into());
    let mut r = Registry::start_with(command, &dir.path().join("data"));

    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let _dns = spawn(
        "pebble-challtestsrv",
        &[
            "-dns01".into(),
            format!("127.0.0.1:{dns_port}"),
            "-http01".into(),
            String::new(),
            "-https01".into(),
            String::new(),
            "-tlsalpn01".into(),
            String::new(),
            "-management".into(),
            format!("127.0.0.1:{challtest_management}"),
            "-defaultIPv4".into(),
            "127.0.0.1".into(),
            "-defaultIPv6".into(),
            String::new(),
        ],
        &[],
        &logs.join("challtestsrv.log"),
    );
    let config = dir.path().join("pebble.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{pebble_port}"),
            "managementListenAddress": format!("127.0.0.1:{pebble_management}"),
            "certificate": pebble_cert, "privateKey": pebble_key,
            "httpPort": 5002, "tlsPort": r.port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        }}))
        .expect("json"),
    )
    .expect("pebble config");
    let pebble = spawn(
        "pebble",
        &[
            "-config".into(),
            config.display().to_string(),
            "-dnsserver".into(),
            format!("127.0.0.1:{dns_port}"),
        ],
        &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")],
        &logs.join("pebble.log"),
    );

    // Wait for berth to obtain and serve the certificate (it retries until Pebble is up).
    let resolve = format!("berth.test:{}:127.0.0.1", r.port());
    let url = format!("https://berth.test:{}/v2/", r.port());
    let roots = dir.path().join("pebble-roots.pem");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (got_root, root) = curl(&[
            "-k",
            &format!("https://127.0.0.1:{pebble_management}/roots/0"),
        ]);
        if got_root && root.contains("BEGIN CERTIFICATE") {
            std::fs::write(&roots, &root).expect("roots");
            let (ok, body) = curl(&[
                "--cacert",
                roots.to_str().expect("utf-8"),
                "--resolve",
                &resolve,
                &url,
            ]);
            if ok && body == "{}" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no ACME certificate served within 90 s\n--- berth ---\n{}\n--- pebble ---\n{}",
            r.log_tail(400)
                .lines()
                .filter(|l| !l.contains("TLS handshake"))
                .collect::<Vec<_>>()
                .join("\n"),
            cmd::tail_file(&logs.join("pebble.log"), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(std::fs::read_to_string(&cache)
        .expect("cache file")
        .contains("BEGIN CERTIFICATE"));

    // Restart without Pebble: the cached certificate is served at once.
    drop(pebble);
    r.restart();
    let (ok, body) = curl(&[
        "--cacert",
        roots.to_str().expect("utf-8"),
        "--resolve",
        &resolve,
        &url,
    ]);
    assert!(
        ok && body == "{}",
        "cached certificate not served after restart: {body}\n{}",
        r.log_tail(20)
    );
    assert!(
        r.log_tail(40).contains("cached certificate"),
        "{}",
        r.log_tail(20)
    );
}
