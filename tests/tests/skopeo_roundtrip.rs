//! skopeo round trip: push the generated `multi` image and `index` image
//! index byte-exact (`--all --preserve-digests`), check what the registry
//! serves (digests, raw manifest bytes, tags), pull both back into fresh
//! layouts and compare every blob byte for byte; then restart the registry
//! on the same data and check and pull again.

use std::fs;
use std::path::Path;
use std::time::Instant;

use berth_tests::images::{self, sha256_digest, OciLayout};
use berth_tests::registry::Registry;
use berth_tests::skopeo::Skopeo;
use berth_tests::{api, step};

/// What must hold for `layout` pushed as `repo` with `tags`.
fn check_served(skopeo: &Skopeo, reg: &Registry, layout: &OciLayout, repo: &str, tags: &[&str]) {
    let base = reg.base_url();
    for tag in tags {
        assert_eq!(
            api::manifest_digest(&base, repo, tag).as_deref(),
            Some(layout.digest.as_str()),
            "HEAD /v2/{repo}/manifests/{tag}: Docker-Content-Digest"
        );
    }
    assert_eq!(
        api::manifest_digest(&base, repo, &layout.digest).as_deref(),
        Some(layout.digest.as_str()),
        "HEAD /v2/{repo}/manifests/<digest>"
    );
    for p in &layout.platforms {
        assert_eq!(
            api::manifest_digest(&base, repo, &p.manifest_digest).as_deref(),
            Some(p.manifest_digest.as_str()),
            "index child {}/{} in {repo}",
            p.os,
            p.architecture
        );
    }
    let want =
        fs::read(layout.blob_path(&layout.digest)).expect("generated manifest blob is readable");
    let raw = skopeo.inspect_raw(&format!("{}/{repo}:{}", reg.addr(), tags[0]));
    assert_eq!(
        sha256_digest(&raw),
        layout.digest,
        "skopeo inspect --raw {repo}:{} hash",
        tags[0]
    );
    assert!(
        raw == want,
        "skopeo inspect --raw {repo}: bytes differ from the pushed manifest"
    );
    let get = api::get_manifest(&base, repo, tags[0]);
    assert!(
        get.body == want,
        "GET /v2/{repo}/manifests/{}: bytes differ from the pushed manifest",
        tags[0]
    );
    assert_eq!(
        get.header("Content-Type"),
        Some(layout.media_type.as_str()),
        "manifest Content-Type of {repo}"
    );
    let mut sorted: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    sorted.sort();
    assert_eq!(
        skopeo.list_tags(&format!("{}/{repo}", reg.addr())),
        sorted,
        "skopeo list-tags {repo}"
    );
    assert_eq!(
        api::tags_list(&base, repo),
        sorted,
        "GET /v2/{repo}/tags/list"
    );
}

/// Pulls `repo:tag` into a fresh layout under `into` and compares it with `layout`.
fn pull_and_compare(skopeo: &Skopeo, reg: &Registry, layout: &OciLayout, repo: &str, into: &Path) {
    let dir = into.join(repo.replace('/', "_"));
    skopeo.pull_to_layout(
        &format!("{}/{repo}:{}", reg.addr(), layout.tag),
        &dir,
        &layout.tag,
    );
    images::assert_same_blobs(layout, &dir);
}

#[test]
fn skopeo_roundtrip() {
    let t0 = Instant::now();
    let skopeo = Skopeo::new();
    let work = tempfile::Builder::new()
        .prefix("berth-skopeo-rt.")
        .tempdir()
        .expect("temp dir");
    let multi = images::multi(&work.path().join("src/multi"), "v1");
    let index = images::index(&work.path().join("src/index"), "latest");
    step(
        t0,
        &format!(
            "generated multi ({} B) and index ({} B)",
            multi.total_size(),
            index.total_size()
        ),
    );

    let mut reg = Registry::start(&work.path().join("data"));
    step(t0, &format!("registry up on {}", reg.addr()));

    let pushed = skopeo.push_layout(&multi, &format!("{}/e2e/multi:v1", reg.addr()));
    assert_eq!(pushed, multi.digest, "skopeo --digestfile for multi");
    // A second tag on the same manifest (all blobs known: only the manifest moves).
    skopeo.push_layout(&multi, &format!("{}/e2e/multi:latest", reg.addr()));
    let pushed = skopeo.push_layout(&index, &format!("{}/e2e/index:latest", reg.addr()));
    assert_eq!(pushed, index.digest, "skopeo --digestfile for index");
    step(t0, "pushed");

    check_served(&skopeo, &reg, &multi, "e2e/multi", &["latest", "v1"]);
    check_served(&skopeo, &reg, &index, "e2e/index", &["latest"]);
    pull_and_compare(
        &skopeo,
        &reg,
        &multi,
        "e2e/multi",
        &work.path().join("pull1"),
    );
    pull_and_compare(
        &skopeo,
        &reg,
        &index,
        "e2e/index",
        &work.path().join("pull1"),
    );
    step(t0, "pulled and compared");

    reg.restart();
    step(t0, "registry restarted on the same data");
    check_served(&skopeo, &reg, &multi, "e2e/multi", &["latest", "v1"]);
    check_served(&skopeo, &reg, &index, "e2e/index", &["latest"]);
    pull_and_compare(
        &skopeo,
        &reg,
        &multi,
        "e2e/multi",
        &work.path().join("pull2"),
    );
    pull_and_compare(
        &skopeo,
        &reg,
        &index,
        "e2e/index",
        &work.path().join("pull2"),
    );
    step(t0, "pulled and compared after restart");
}
