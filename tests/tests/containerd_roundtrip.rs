//! containerd's `ctr` against berth: import the generated OCI layouts, push
//! (containerd's single-PUT upload, which requires Docker-Content-Digest on
//! the 201), remove, fetch everything back byte for byte, pull one platform
//! out of the index.

use std::process::Command;

use berth_tests::containerd::Containerd;
use berth_tests::images;
use berth_tests::registry::Registry;

#[test]
fn ctr_push_fetch_and_platform_pull() {
    let work = tempfile::Builder::new()
        .prefix("berth-ctr.")
        .tempdir()
        .expect("temp dir");
    let index = images::index(&work.path().join("index"), "latest");
    let multi = images::multi(&work.path().join("multi"), "latest");
    let r = Registry::start(&work.path().join("data"));
    let containerd = Containerd::start();
    for layout in [&index, &multi] {
        let name = layout
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let archive = work.path().join(format!("{name}.oci.tar"));
        let status = Command::new("tar")
            .arg("-C")
            .arg(&layout.dir)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .expect("tar");
        assert!(status.success());
        let base = format!("{}/ctr/{name}", r.addr());
        containerd.ctr_ok(&[
            "images",
            "import",
            "--all-platforms",
            "--no-unpack",
            "--base-name",
            &base,
            archive.to_str().expect("utf-8"),
        ]);
        let reference = format!("{base}:latest");
        let push = ["images", "push", "--plain-http", reference.as_str()];
        let pushed = containerd.ctr(&push);
        if !pushed.status.success() {
            // ctr reads what it pushes from containerd's content store over
            // gRPC; when that read fails (seen once in CI: "rpc error: code
            // = Internal desc = unexpected EOF") ctr aborts its request
            // mid-body, which berth rightly answers 400. Only that
            // containerd-side failure is retried, once.
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&pushed.stdout),
                String::from_utf8_lossy(&pushed.stderr)
            );
            assert!(output.contains("rpc error"), "ctr push failed: {output}");
            eprintln!("[berth-tests] ctr push failed inside containerd, retrying once: {output}");
            containerd.ctr_ok(&push);
        }
        let registry_digest =
            berth_tests::api::manifest_digest(&r.base_url(), &format!("ctr/{name}"), "latest");
        assert_eq!(
            registry_digest.as_deref(),
            Some(layout.digest.as_str()),
            "ctr sends manifests unchanged"
        );
        containerd.ctr_ok(&["images", "rm", "--sync", &reference]);
        containerd.ctr_ok(&["content", "prune", "references"]);
        containerd.ctr_ok(&[
            "content",
            "fetch",
            "--plain-http",
            "--all-platforms",
            &reference,
        ]);
        let listed = containerd.ctr_ok(&["content", "ls", "-q"]);
        for blob in &layout.blobs {
            assert!(
                listed.contains(&blob.digest),
                "{} was not fetched back from berth",
                blob.digest
            );
        }
        let images_out = containerd.ctr_ok(&["images", "ls"]);
        assert!(images_out.contains(&layout.digest), "{images_out}");
    }
    let arm = format!("{}/ctr/index:latest", r.addr());
    containerd.ctr_ok(&["images", "rm", "--sync", &arm]);
    containerd.ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--platform",
        "linux/arm64",
        &arm,
    ]);
}
