//! Real clients pulling through berth's pull-through cache the way CI
//! fleets configure them: dockerd with a `registry-mirrors` entry (Docker
//! Hub names, `library/` included) and containerd with a `hosts.toml`
//! mirror (which adds `?ns=docker.io` to every request). The upstream is a
//! second berth on loopback holding a generated image.

use std::fs;

use berth_tests::containerd::Containerd;
use berth_tests::dockerd::Dockerd;
use berth_tests::images;
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};
use berth_tests::skopeo::Skopeo;

fn berth(env: Vec<(String, String)>) -> RegistryCommand {
    RegistryCommand {
        program: berth_binary().clone(),
        args: vec!["serve".into()],
        env,
        is_berth: true,
        ready_log_line: None,
    }
}

/// An upstream holding `library/mirrored:v1` and a berth caching it.
struct Setup {
    _work: tempfile::TempDir,
    upstream: Registry,
    proxy: Registry,
    layout: images::OciLayout,
}

fn setup() -> Setup {
    let work = tempfile::Builder::new()
        .prefix("berth-proxy-clients.")
        .tempdir()
        .expect("temp dir");
    let layout = images::multi(&work.path().join("image"), "v1");
    let upstream = Registry::start_with(berth(Vec::new()), &work.path().join("upstream"));
    let pushed =
        Skopeo::new().push_layout(&layout, &format!("{}/library/mirrored:v1", upstream.addr()));
    assert_eq!(pushed, layout.digest);
    let proxy = Registry::start_with(
        berth(vec![(
            "REGISTRY_PROXY_REMOTEURL".into(),
            upstream.base_url(),
        )]),
        &work.path().join("proxy"),
    );
    Setup {
        _work: work,
        upstream,
        proxy,
        layout,
    }
}

fn log(r: &Registry) -> String {
    fs::read_to_string(r.log_path()).unwrap_or_default()
}

#[test]
fn docker_pulls_through_a_registry_mirror() {
    let s = setup();
    let daemon_json = serde_json::json!({"registry-mirrors": [s.proxy.base_url()]}).to_string();
    let dockerd = Dockerd::start_with_config(&daemon_json);
    let docker = dockerd.cli();
    // A Docker Hub name: without the mirror this needs the internet.
    docker.pull("mirrored:v1");
    assert!(docker.has_image("mirrored:v1"));
    let proxy_log = log(&s.proxy);
    assert!(
        proxy_log.contains(" /v2/library/mirrored/manifests/v1 200"),
        "dockerd did not pull through the mirror:\n{}",
        s.proxy.log_tail(20)
    );
    for (digest, _) in images::layout_blobs(&s.layout.dir) {
        if digest == s.layout.digest {
            continue;
        }
        let fetched = log(&s.upstream)
            .lines()
            .filter(|l| l.contains(&format!("GET /v2/library/mirrored/blobs/{digest} 200")))
            .count();
        assert!(
            fetched <= 1,
            "{digest} fetched {fetched} times from upstream"
        );
    }
    // A second engine pulling the same image is served from the cache.
    let before = log(&s.upstream).lines().count();
    docker.rmi(&["mirrored:v1"]);
    docker.pull("mirrored:v1");
    let upstream_after = log(&s.upstream);
    let new_blob_gets = upstream_after
        .lines()
        .skip(before)
        .filter(|l| l.contains("/blobs/"))
        .count();
    assert_eq!(new_blob_gets, 0, "cached blobs were fetched again");
}

#[test]
fn containerd_pulls_through_a_hosts_toml_mirror_with_ns() {
    let s = setup();
    let containerd = Containerd::start();
    let hosts = containerd.dir().join("certs.d");
    fs::create_dir_all(hosts.join("docker.io")).expect("hosts dir");
    fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            s.proxy.base_url()
        ),
    )
    .expect("hosts.toml");
    containerd.ctr_ok(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts.to_str().expect("utf-8"),
        "docker.io/library/mirrored:v1",
    ]);
    let listed = containerd.ctr_ok(&["images", "ls", "-q"]);
    assert!(listed.contains("docker.io/library/mirrored:v1"), "{listed}");
    let proxy_log = log(&s.proxy);
    assert!(
        proxy_log.contains("/v2/library/mirrored/manifests/v1?ns=docker.io"),
        "containerd did not pull through the mirror with ?ns=:\n{}",
        s.proxy.log_tail(20)
    );
}
