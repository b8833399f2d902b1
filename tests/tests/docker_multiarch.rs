//! docker with multi-platform images: pull an OCI index (platform picked by
//! the daemon, and --platform linux/arm64), `docker manifest inspect` of the
//! index, and `docker manifest create/push` of a Docker manifest list over
//! two images docker pushed itself.

use berth_tests::dockerd::Dockerd;
use berth_tests::images;
use berth_tests::registry::Registry;
use berth_tests::skopeo::Skopeo;

#[test]
fn docker_pulls_indexes_and_pushes_manifest_lists() {
    let work = tempfile::Builder::new()
        .prefix("berth-docker-ma.")
        .tempdir()
        .expect("temp dir");
    let index = images::index(&work.path().join("index"), "latest");
    let r = Registry::start(&work.path().join("data"));
    let reference = format!("{}/ma/index:latest", r.addr());
    Skopeo::new().push_layout(&index, &reference);
    let dockerd = Dockerd::start();
    let docker = dockerd.cli();

    docker.run(&["pull", "-q", &reference]);
    assert_eq!(
        docker
            .run(&[
                "image",
                "inspect",
                "--format",
                "{{.Architecture}}",
                &reference
            ])
            .trim(),
        "amd64"
    );
    let digests = docker.repo_digests(&reference);
    assert!(
        digests.iter().any(|d| d.ends_with(&index.digest)),
        "{digests:?} lacks {}",
        index.digest
    );
    docker.run(&[
        "tag",
        &reference,
        &format!("{}/ma/idx-amd64:latest", r.addr()),
    ]);
    docker.run(&["pull", "-q", "--platform", "linux/arm64", &reference]);
    assert_eq!(
        docker
            .run(&[
                "image",
                "inspect",
                "--format",
                "{{.Architecture}}",
                &reference
            ])
            .trim(),
        "arm64"
    );
    docker.run(&[
        "tag",
        &reference,
        &format!("{}/ma/idx-arm64:latest", r.addr()),
    ]);

    // docker CLI 20.10 cannot parse OCI child manifests ("unsupported manifest
    // media type"); newer CLIs can. Use a newer one when the machine has it.
    let modern_cli = std::path::Path::new("/usr/local/bin/docker");
    if modern_cli.exists() {
        let out = std::process::Command::new(modern_cli)
            .env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .args(["manifest", "inspect", "--insecure", &reference])
            .output()
            .expect("docker runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let inspected: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("manifest inspect prints JSON");
        assert_eq!(
            inspected["manifests"].as_array().map(Vec::len),
            Some(2),
            "{inspected}"
        );
    } else {
        let out = docker
            .command()
            .args(["manifest", "inspect", "--insecure", &reference])
            .output()
            .expect("docker runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("unsupported manifest media type"),
            "{stderr}"
        );
    }

    let amd = format!("{}/ma/idx-amd64:latest", r.addr());
    let arm = format!("{}/ma/idx-arm64:latest", r.addr());
    docker.push(&amd);
    docker.push(&arm);
    let list = format!("{}/ma/dlist:latest", r.addr());
    docker.run(&["manifest", "create", "--insecure", &list, &amd, &arm]);
    let pushed = docker.run(&["manifest", "push", "--insecure", "--purge", &list]);
    let pushed_digest = pushed.trim().lines().last().unwrap_or("").trim().to_owned();
    let served = berth_tests::api::get_manifest(&r.base_url(), "ma/dlist", "latest");
    assert_eq!(
        served.header("Content-Type"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
    assert_eq!(
        served.header("Docker-Content-Digest"),
        Some(pushed_digest.as_str()),
        "docker manifest push said {pushed}"
    );
    let inspected = docker.run(&["manifest", "inspect", "--insecure", &list]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("JSON");
    assert_eq!(
        inspected["manifests"].as_array().map(Vec::len),
        Some(2),
        "{inspected}"
    );
}
