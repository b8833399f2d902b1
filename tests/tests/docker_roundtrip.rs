//! docker round trip: the generated `multi` image, converted to a
//! docker-archive with skopeo, is loaded into a private dockerd, pushed to
//! the registry, removed, pulled back; the image ID (= config digest) must
//! survive, and the registry must serve the pushed manifest for the tag.

use std::time::Instant;

use berth_tests::dockerd::Dockerd;
use berth_tests::images;
use berth_tests::registry::Registry;
use berth_tests::skopeo::Skopeo;
use berth_tests::{api, step};

#[test]
fn docker_roundtrip() {
    let t0 = Instant::now();
    let skopeo = Skopeo::new();
    let work = tempfile::Builder::new()
        .prefix("berth-docker-rt.")
        .tempdir()
        .expect("temp dir");
    let multi = images::multi(&work.path().join("multi"), "latest");
    let config = multi
        .config_digest
        .clone()
        .expect("multi is a single image");
    let archive = work.path().join("multi.docker.tar");
    let local = "berth-tests/multi:latest";
    skopeo.to_docker_archive(&multi, &archive, local);
    step(t0, "generated multi and converted it to a docker-archive");

    let reg = Registry::start(&work.path().join("data"));
    let dockerd = Dockerd::start();
    let docker = dockerd.cli();
    step(t0, &format!("registry on {} and dockerd up", reg.addr()));

    let loaded = docker.load(&archive);
    assert!(
        loaded.iter().any(|l| l == local),
        "docker load reported {loaded:?}, expected {local}"
    );
    assert_eq!(
        docker.image_id(local),
        config,
        "image ID after docker load == layout config digest"
    );

    let repo = "e2e/docker-multi";
    let remote = format!("{}/{repo}:latest", reg.addr());
    docker.tag(local, &remote);
    let pushed = docker.push(&remote);
    step(t0, &format!("docker push {remote} -> {pushed}"));

    let base = reg.base_url();
    assert_eq!(
        api::manifest_digest(&base, repo, "latest"),
        Some(pushed.clone()),
        "HEAD manifest after docker push"
    );
    let manifest = api::get_manifest(&base, repo, "latest");
    assert_eq!(
        images::sha256_digest(&manifest.body),
        pushed,
        "served manifest bytes hash to the pushed digest"
    );
    let m = manifest.json();
    assert_eq!(
        m["config"]["digest"].as_str(),
        Some(config.as_str()),
        "config digest in the pushed manifest"
    );
    assert_eq!(
        m["layers"].as_array().map(Vec::len),
        Some(4),
        "layers in the pushed manifest: {m}"
    );
    assert_eq!(
        api::tags_list(&base, repo),
        vec!["latest".to_string()],
        "tags/list after docker push"
    );

    docker.rmi(&[&remote, local]);
    assert!(
        !docker.has_image(&config),
        "image {config} still present after docker rmi"
    );
    docker.pull(&remote);
    step(t0, &format!("docker pull {remote}"));
    assert_eq!(
        docker.image_id(&remote),
        config,
        "image ID after docker pull == loaded image ID"
    );
    let digests = docker.repo_digests(&remote);
    assert!(
        digests.contains(&format!("{}/{repo}@{pushed}", reg.addr())),
        "RepoDigests after pull {digests:?} lack the pushed digest {pushed}"
    );
    step(t0, "done");
}
