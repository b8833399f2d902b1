//! htpasswd basic auth configured with the deployment guide's variables:
//! challenges, wrong and missing credentials, the open load-balancer probe,
//! reload on file change, start refused for a bad file or missing key,
//! `berth htpasswd` output (also invoked as `htpasswd`) and its
//! interoperability with Apache's htpasswd, skopeo with credentials, and
//! docker login/push/pull over TLS with htpasswd (dockerd trusting the test
//! CA through /etc/docker/certs.d).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_tests::certs::{KeyKind, Pki};
use berth_tests::cmd;
use berth_tests::http::request;
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};

fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new(berth_binary())
        .args(["htpasswd", "-Bbn", user, password])
        .output()
        .expect("berth htpasswd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with(&format!("{user}:$2y$05$")), "{text}");
    text
}

fn start(dir: &Path, htpasswd: &Path, tls: Option<(&Path, &Path)>) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    command.with_htpasswd(&htpasswd);
    if let Some((chain, key)) = tls {
        command.env.push((
            "REGISTRY_HTTP_TLS_CERTIFICATE".into(),
            chain.display().to_string(),
        ));
        command
            .env
            .push(("REGISTRY_HTTP_TLS_KEY".into(), key.display().to_string()));
    }
    command.ready_log_line = Some("berth listening".into());
    Some(Registry::start_with(command, &dir.join("data")))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn challenges_credentials_and_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line("testuser", "testpassword")).expect("write");
    let Some(r) = start(dir.path(), &file, None) else {
        return;
    };

    let anonymous = request("GET", &r.url("/v2/"), &[], None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("WWW-Authenticate"),
        Some("Basic realm=\"Registry Realm\"")
    );
    assert_eq!(
        anonymous.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    assert_eq!(anonymous.json()["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(
        request("GET", &r.url("/"), &[], None).status,
        200,
        "the load-balancer probe must stay open"
    );

    let wrong = basic("testuser", "nope");
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &wrong)], None).status,
        401
    );
    let nobody = basic("nobody", "testpassword");
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &nobody)], None).status,
        401
    );
    let good = basic("testuser", "testpassword");
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &good)], None).status,
        200
    );

    // A refused push changes nothing.
    let refused = request("POST", &r.url("/v2/x/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"), &[], Some(b"hello"));
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.json()["errors"][0]["detail"],
        serde_json::json!([
            {"Type": "repository", "Class": "", "Name": "x", "Action": "pull"},
            {"Type": "repository", "Class": "", "Name": "x", "Action": "push"},
        ]),
        "registry:2 names the accesses the request needed"
    );
    let catalog = request(
        "GET",
        &r.url("/v2/_catalog"),
        &[("Authorization", &good)],
        None,
    );
    assert_eq!(catalog.json()["repositories"], serde_json::json!([]));
    // Cached credentials (the second request skips bcrypt) still answer.
    for _ in 0..3 {
        assert_eq!(
            request("GET", &r.url("/v2/"), &[("Authorization", &good)], None).status,
            200
        );
    }

    // The file is rewritten in place: within about two seconds the old
    // password stops working (it was cached) and the new one works.
    let rotated = basic("testuser", "rotated");
    std::fs::write(&file, htpasswd_line("testuser", "rotated")).expect("rewrite");
    let written = Instant::now();
    while request("GET", &r.url("/v2/"), &[("Authorization", &good)], None).status != 401 {
        assert!(
            written.elapsed() < Duration::from_millis(2500),
            "the old password still works after the file changed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &rotated)], None).status,
        200
    );

    // A broken file is refused and the users before it are kept.
    std::fs::write(&file, "testuser:plaintext\n").expect("break");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &rotated)], None).status,
        200,
        "a bad reload dropped the users"
    );
    assert!(
        r.log_tail(50).contains("htpasswd reload failed"),
        "{}",
        r.log_tail(50)
    );

    // The file is replaced by a rename (a new inode, as editors and
    // Kubernetes secrets do it): a second user appears, the first stays.
    let tmp = dir.path().join("htpasswd.new");
    std::fs::write(
        &tmp,
        htpasswd_line("testuser", "rotated") + &htpasswd_line("second", "pw2"),
    )
    .expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    let second = basic("second", "pw2");
    let renamed = Instant::now();
    while request("GET", &r.url("/v2/"), &[("Authorization", &second)], None).status != 200 {
        assert!(
            renamed.elapsed() < Duration::from_millis(2500),
            "the renamed-in file was not read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        request("GET", &r.url("/v2/"), &[("Authorization", &rotated)], None).status,
        200
    );
    let log = r.log_tail(50);
    assert!(
        log.contains(" testuser GET /v2/ 200"),
        "the access log names the user: {log}"
    );
}

/// Runs `berth serve` with htpasswd variables `env` (pairs to set; an empty
/// value removes the variable) and returns its failure output. The start
/// must fail.
fn refused_start(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(berth_binary());
    command
        .arg("serve")
        .env("REGISTRY_CONFIGURATION_PATH", "/dev/null")
        .env("REGISTRY_AUTH", "htpasswd")
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.join("data"),
        )
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("berth runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "berth started with {env:?}: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[test]
fn a_bad_htpasswd_file_or_missing_key_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    // A comment, a bcrypt line, the empty line `htpasswd -n` prints, then
    // line 4: an Apache SHA-1 line (registry:2 supports only bcrypt).
    std::fs::write(
        &file,
        format!(
            "# users\n{}alice:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
            htpasswd_line("testuser", "pw")
        ),
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let stderr = refused_start(
        dir.path(),
        &[
            ("REGISTRY_AUTH_HTPASSWD_REALM", "r"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", path),
        ],
    );
    assert!(
        stderr.contains(path) && stderr.contains("line 4") && stderr.contains("bcrypt"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let missing = dir.path().join("no-such-htpasswd");
    let stderr = refused_start(
        dir.path(),
        &[
            ("REGISTRY_AUTH_HTPASSWD_REALM", "r"),
            (
                "REGISTRY_AUTH_HTPASSWD_PATH",
                missing.to_str().expect("utf-8"),
            ),
        ],
    );
    assert!(
        stderr.contains(missing.to_str().expect("utf-8")),
        "{stderr}"
    );

    let stderr = refused_start(dir.path(), &[("REGISTRY_AUTH_HTPASSWD_PATH", path)]);
    assert!(stderr.contains("auth.htpasswd.realm"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let stderr = refused_start(dir.path(), &[("REGISTRY_AUTH_HTPASSWD_REALM", "r")]);
    assert!(stderr.contains("auth.htpasswd.path"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// The image links `htpasswd` to berth for the registry:2 guide's
/// `docker run --entrypoint htpasswd <image> -Bbn testuser testpassword`.
#[test]
fn invoked_as_htpasswd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("htpasswd");
    std::os::unix::fs::symlink(berth_binary(), &link).expect("symlink");
    for args in [
        &["-Bbn", "testuser", "testpassword"][..],
        &["-nbB", "testuser", "testpassword"],
        &["-B", "-b", "-n", "testuser", "testpassword"],
    ] {
        let out = Command::new(&link)
            .args(args)
            .output()
            .expect("htpasswd link runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("testuser:$2y$05$") && stdout.ends_with("\n\n"),
            "{args:?}: {stdout:?}"
        );
    }
    let out = Command::new(&link)
        .args(["-Bbn", "-C", "7", "u", "p"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("u:$2y$07$"));
    for args in [&["-bn", "u", "p"][..], &["-c", "file", "u"], &["-Bbn", "u"]] {
        let out = Command::new(&link).args(args).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            out.stdout.is_empty()
                && String::from_utf8_lossy(&out.stderr).contains("usage: htpasswd -Bbn"),
            "{args:?}"
        );
    }
}

/// Apache's `htpasswd -Bbn` output is accepted by berth, and berth's is
/// verified by Apache's `htpasswd -vb` (apache2-utils).
#[test]
fn apache_htpasswd_lines_work_both_ways() {
    let apache = cmd::require_tool("htpasswd");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    let mut lines = String::new();
    for (user, password, cost) in [
        ("apache5", "testpassword", "5"),
        ("apache10", "pass:word", "10"),
    ] {
        let out = cmd::run(Command::new(&apache).args(["-Bbn", "-C", cost, user, password]));
        lines.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    lines.push_str(&htpasswd_line("berthuser", "berthpassword"));
    std::fs::write(&file, &lines).expect("write");
    let out = Command::new(&apache)
        .args([
            "-vb",
            file.to_str().expect("utf-8"),
            "berthuser",
            "berthpassword",
        ])
        .output()
        .expect("htpasswd -v");
    assert!(
        out.status.success(),
        "Apache does not verify berth's line: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&apache)
        .args(["-vb", file.to_str().expect("utf-8"), "berthuser", "wrong"])
        .output()
        .expect("htpasswd -v");
    assert!(!out.status.success(), "Apache verified a wrong password");

    let Some(r) = start(dir.path(), &file, None) else {
        return;
    };
    for (user, password) in [
        ("apache5", "testpassword"),
        ("apache10", "pass:word"),
        ("berthuser", "berthpassword"),
    ] {
        assert_eq!(
            request(
                "GET",
                &r.url("/v2/"),
                &[("Authorization", &basic(user, password))],
                None
            )
            .status,
            200,
            "{user}"
        );
        assert_eq!(
            request(
                "GET",
                &r.url("/v2/"),
                &[("Authorization", &basic(user, "wrong"))],
                None
            )
            .status,
            401,
            "{user}"
        );
    }
}

#[test]
fn skopeo_with_and_without_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line("testuser", "testpassword")).expect("write");
    let Some(r) = start(dir.path(), &file, None) else {
        return;
    };
    let layout = berth_tests::images::index(&dir.path().join("images/index"), "latest");
    let dest = format!("docker://{}/auth/index:latest", r.addr());
    let skopeo = || {
        let mut c = Command::new(cmd::require_tool("skopeo"));
        c.env("REGISTRY_AUTH_FILE", dir.path().join("auth.json"));
        c
    };
    std::fs::write(dir.path().join("auth.json"), "{}").expect("auth file");
    let anonymous = skopeo()
        .args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout.oci_ref(),
            &dest,
        ])
        .output()
        .expect("skopeo");
    assert!(!anonymous.status.success(), "anonymous push succeeded");
    let wrong = skopeo()
        .args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            "testuser:wrong",
            &layout.oci_ref(),
            &dest,
        ])
        .output()
        .expect("skopeo");
    assert!(
        !wrong.status.success(),
        "push with a wrong password succeeded"
    );
    let catalog = request(
        "GET",
        &r.url("/v2/_catalog"),
        &[("Authorization", &basic("testuser", "testpassword"))],
        None,
    );
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!([]),
        "a refused push stored something"
    );
    cmd::run(skopeo().args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        "testuser:testpassword",
        &layout.oci_ref(),
        &dest,
    ]));
    let tags = cmd::run(skopeo().args([
        "list-tags",
        "--tls-verify=false",
        "--creds",
        "testuser:testpassword",
        &dest.replace(":latest", ""),
    ]));
    assert!(String::from_utf8_lossy(&tags.stdout).contains("latest"));
    let log = r.log_tail(400);
    assert!(
        log.contains(" testuser PUT /v2/auth/index/manifests/latest 201"),
        "the access log names the pushing user: {log}"
    );
}

/// Removes /etc/docker/certs.d/<host> on drop (dockerd reads trust from there).
struct CertsDir(PathBuf);

impl Drop for CertsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn docker_login_push_pull_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line("testuser", "testpassword")).expect("write");
    let pki = Pki::new(&dir.path().join("pki"));
    let (chain, key) = pki.server("registry", KeyKind::RsaPkcs8);
    let Some(r) = start(dir.path(), &file, Some((&chain, &key))) else {
        return;
    };
    let certs = CertsDir(PathBuf::from(format!("/etc/docker/certs.d/{}", r.addr())));
    std::fs::create_dir_all(&certs.0).expect("certs.d");
    std::fs::copy(&pki.root_cert, certs.0.join("ca.crt")).expect("ca.crt");

    let layout = berth_tests::images::multi(&dir.path().join("images/multi"), "latest");
    let archive = dir.path().join("multi.tar");
    berth_tests::skopeo::Skopeo::new().to_docker_archive(
        &layout,
        &archive,
        "berth-tests/auth-multi:latest",
    );
    let dockerd = berth_tests::dockerd::Dockerd::start();
    let docker = dockerd.cli();
    docker.load(&archive);
    let reference = format!("{}/auth/multi:latest", r.addr());
    docker.tag("berth-tests/auth-multi:latest", &reference);
    let denied = docker
        .command()
        .args(["push", &reference])
        .output()
        .expect("docker push");
    assert!(!denied.status.success(), "push without login succeeded");
    let wrong = docker
        .command()
        .args(["login", "-u", "testuser", "-p", "wrong", &r.addr()])
        .output()
        .expect("docker login");
    assert!(
        !wrong.status.success(),
        "login with a wrong password succeeded"
    );
    docker.run(&["login", "-u", "testuser", "-p", "testpassword", &r.addr()]);
    docker.push(&reference);
    let id = docker.image_id(&reference);
    docker.rmi(&[&reference, "berth-tests/auth-multi:latest"]);
    docker.pull(&reference);
    assert_eq!(docker.image_id(&reference), id);
    let log = r.log_tail(200);
    assert!(log.contains("(https)"), "not served over TLS: {log}");
}

/// skopeo and podman log in over TLS with `--cert-dir` (a directory holding
/// the CA as ca.crt), then pull with the stored credentials.
#[test]
fn skopeo_and_podman_login_with_cert_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, htpasswd_line("testuser", "testpassword")).expect("write");
    let pki = Pki::new(&dir.path().join("pki"));
    let (chain, key) = pki.server("registry", KeyKind::EcSec1);
    let Some(r) = start(dir.path(), &file, Some((&chain, &key))) else {
        return;
    };
    let cert_dir = dir.path().join("certs.d");
    std::fs::create_dir_all(&cert_dir).expect("mkdir");
    std::fs::copy(&pki.root_cert, cert_dir.join("ca.crt")).expect("ca.crt");
    let cd = cert_dir.to_str().expect("utf-8");
    let auth_file = dir.path().join("auth.json");
    std::fs::write(&auth_file, "{}").expect("auth file");

    // podman with private storage (vfs) and config, as root without systemd.
    let p = dir.path().join("podman");
    std::fs::create_dir_all(p.join("tmp")).expect("mkdir");
    std::fs::write(
        p.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            p.display()
        ),
    )
    .expect("storage.conf");
    std::fs::write(
        p.join("containers.conf"),
        format!("[engine]\nevents_logger = \"file\"\nevents_logfile_path = \"{0}/events.log\"\ncgroup_manager = \"cgroupfs\"\ntmp_dir = \"{0}/tmp\"\n", p.display()),
    )
    .expect("containers.conf");
    std::fs::write(
        p.join("registries.conf"),
        "unqualified-search-registries = []\nshort-name-mode = \"permissive\"\n",
    )
    .expect("registries.conf");
    let tool = |name: &str| {
        let mut c = Command::new(cmd::require_tool(name));
        c.env("REGISTRY_AUTH_FILE", &auth_file)
            .env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", p.join("registries.conf"));
        c
    };
    let addr = r.addr();
    let wrong = tool("skopeo")
        .args([
            "login",
            "--cert-dir",
            cd,
            "-u",
            "testuser",
            "-p",
            "wrong",
            &addr,
        ])
        .output()
        .expect("skopeo");
    assert!(
        !wrong.status.success(),
        "skopeo login with a wrong password succeeded"
    );
    cmd::run(tool("skopeo").args([
        "login",
        "--cert-dir",
        cd,
        "-u",
        "testuser",
        "-p",
        "testpassword",
        &addr,
    ]));
    let layout = berth_tests::images::multi(&dir.path().join("images/multi"), "latest");
    let reference = format!("{addr}/login/multi:latest");
    cmd::run(tool("skopeo").args([
        "copy",
        "--dest-cert-dir",
        cd,
        &layout.oci_ref(),
        &format!("docker://{reference}"),
    ]));
    cmd::run(tool("skopeo").args(["logout", &addr]));
    std::fs::write(&auth_file, "{}").expect("auth file");

    let wrong = tool("podman")
        .args([
            "login",
            "--cert-dir",
            cd,
            "-u",
            "testuser",
            "-p",
            "wrong",
            &addr,
        ])
        .output()
        .expect("podman");
    assert!(
        !wrong.status.success(),
        "podman login with a wrong password succeeded"
    );
    cmd::run(tool("podman").args([
        "login",
        "--cert-dir",
        cd,
        "-u",
        "testuser",
        "-p",
        "testpassword",
        &addr,
    ]));
    cmd::run(tool("podman").args(["pull", "-q", "--cert-dir", cd, &reference]));
    let id = cmd::run(tool("podman").args(["image", "inspect", "--format", "{{.Id}}", &reference]));
    let config = layout.config_digest.clone().expect("single image");
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&id.stdout).trim()),
        config
    );
    cmd::run(tool("podman").args(["logout", &addr]));
    let _ = tool("podman").args(["rmi", "-af"]).output();
}
