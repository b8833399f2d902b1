//! skopeo (Debian's 1.9) against a plain-HTTP registry on loopback. Each
//! [`Skopeo`] has its own empty auth file (`REGISTRY_AUTH_FILE`), so the
//! tests never read or write the user's credentials. Every helper panics with
//! skopeo's output when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::cmd;
use crate::images::OciLayout;

/// skopeo with a private auth file.
pub struct Skopeo {
    bin: PathBuf,
    auth_dir: TempDir,
}

impl Skopeo {
    /// Finds skopeo (panics if it is not installed).
    pub fn new() -> Self {
        let bin = cmd::require_tool("skopeo");
        let auth_dir = tempfile::Builder::new()
            .prefix("berth-skopeo.")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        fs::write(auth_dir.path().join("auth.json"), "{}\n")
            .unwrap_or_else(|e| panic!("cannot write auth.json: {e}"));
        Skopeo { bin, auth_dir }
    }

    /// A bare skopeo command with the private auth file.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("REGISTRY_AUTH_FILE", self.auth_dir.path().join("auth.json"));
        c
    }

    /// Runs `skopeo ARGS…`; returns stdout; panics on failure.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        cmd::run(self.command().args(args)).stdout
    }

    /// `skopeo copy --all --preserve-digests` of a layout to
    /// `docker://DEST` (plain HTTP); returns the digest skopeo reports.
    pub fn push_layout(&self, layout: &OciLayout, dest: &str) -> String {
        let digestfile = self.auth_dir.path().join("push.digest");
        let df = digestfile.to_string_lossy().into_owned();
        self.run(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--digestfile",
            &df,
            &layout.oci_ref(),
            &format!("docker://{dest}"),
        ]);
        fs::read_to_string(&digestfile)
            .unwrap_or_else(|e| panic!("skopeo wrote no --digestfile: {e}"))
            .trim()
            .to_string()
    }

    /// `skopeo copy --all --preserve-digests docker://SRC oci:DIR:TAG`
    /// (creates DIR's parent: skopeo insists that it exists).
    pub fn pull_to_layout(&self, src: &str, dir: &Path, tag: &str) {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        self.run(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{src}"),
            &format!("oci:{}:{tag}", dir.display()),
        ]);
    }

    /// Converts a single-image layout to a docker-archive FILE that `docker
    /// load` reads, naming the image `name` (`repo:tag`).
    pub fn to_docker_archive(&self, layout: &OciLayout, file: &Path, name: &str) {
        let _ = fs::remove_file(file);
        self.run(&[
            "copy",
            &layout.oci_ref(),
            &format!("docker-archive:{}:{name}", file.display()),
        ]);
    }

    /// `skopeo inspect --raw docker://REF`: the manifest bytes as served.
    pub fn inspect_raw(&self, reference: &str) -> Vec<u8> {
        self.run(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
    }

    /// `skopeo list-tags docker://REPO`: the tags, sorted.
    pub fn list_tags(&self, repo: &str) -> Vec<String> {
        let out = self.run(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "list-tags output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        });
        let mut tags: Vec<String> = v["Tags"]
            .as_array()
            .unwrap_or_else(|| panic!("list-tags output has no Tags array: {v}"))
            .iter()
            .map(|t| t.as_str().expect("tag is a string").to_string())
            .collect();
        tags.sort();
        tags
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}
