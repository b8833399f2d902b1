//! skopeo's management commands: `inspect` (config through the index),
//! `delete` (resolve the tag, DELETE by digest) and `list-tags` afterwards.

use berth_tests::images;
use berth_tests::registry::{Registry, RegistryCommand};
use berth_tests::skopeo::Skopeo;

#[test]
fn skopeo_inspect_and_delete() {
    let work = tempfile::tempdir().expect("temp dir");
    let index = images::index(&work.path().join("index"), "latest");
    let mut command = RegistryCommand::from_env();
    command
        .env
        .push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    let r = Registry::start_with(command, &work.path().join("data"));
    let skopeo = Skopeo::new();
    let reference = format!("{}/sk/index:latest", r.addr());
    skopeo.push_layout(&index, &reference);
    skopeo.push_layout(&index, &format!("{}/sk/index:keep", r.addr()));
    let inspected = skopeo.run(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{reference}"),
    ]);
    let inspected: serde_json::Value =
        serde_json::from_slice(&inspected).expect("inspect prints JSON");
    assert_eq!(inspected["Architecture"], "arm64", "{inspected}");
    assert_eq!(inspected["Os"], "linux");
    skopeo.run(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let gone = berth_tests::api::manifest_digest(&r.base_url(), "sk/index", "latest");
    assert_eq!(gone, None, "the tag still resolves after skopeo delete");
    let by_digest = berth_tests::http::head(
        &r.url(&format!("/v2/sk/index/manifests/{}", index.digest)),
        &[],
    );
    assert_eq!(
        by_digest.status, 404,
        "the manifest is still served by digest"
    );
    // Deleting the manifest by digest removes every tag naming it.
    assert!(skopeo
        .list_tags(&format!("{}/sk/index", r.addr()))
        .is_empty());
}
