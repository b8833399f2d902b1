//! The docker CLI bound to one private engine ([`crate::dockerd::Dockerd`]):
//! `DOCKER_HOST` = its socket, `DOCKER_CONFIG` = its temp config dir (never
//! the user's). Every helper panics with the CLI's output when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;

/// docker CLI calls against one engine.
#[derive(Clone, Debug)]
pub struct DockerCli {
    bin: PathBuf,
    host: String,
    config_dir: PathBuf,
}

impl DockerCli {
    /// A CLI `bin` talking to `host` (`unix://…`) with config in `config_dir`.
    pub fn new(bin: PathBuf, host: String, config_dir: PathBuf) -> Self {
        DockerCli {
            bin,
            host,
            config_dir,
        }
    }

    /// A bare `docker` command with this engine's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.config_dir)
            .env_remove("DOCKER_CONTEXT");
        c
    }

    /// Runs `docker ARGS…`; returns stdout; panics on failure.
    pub fn run(&self, args: &[&str]) -> String {
        cmd::run_stdout(self.command().args(args))
    }

    /// `docker load -i FILE`; returns the names it loaded (`Loaded image: X`).
    pub fn load(&self, archive: &Path) -> Vec<String> {
        let out = cmd::run_stdout(self.command().arg("load").arg("-i").arg(archive));
        out.lines()
            .filter_map(|l| {
                l.strip_prefix("Loaded image: ")
                    .or_else(|| l.strip_prefix("Loaded image ID: "))
            })
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// `docker tag SRC DST`.
    pub fn tag(&self, src: &str, dst: &str) {
        self.run(&["tag", src, dst]);
    }

    /// `docker push REF`; returns the manifest digest it reports (`digest: sha256:…`).
    pub fn push(&self, reference: &str) -> String {
        let out = self.run(&["push", reference]);
        out.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .map(String::from)
            .unwrap_or_else(|| panic!("docker push {reference} printed no digest:\n{out}"))
    }

    /// `docker pull REF`; returns the output.
    pub fn pull(&self, reference: &str) -> String {
        self.run(&["pull", reference])
    }

    /// `docker rmi REF…` (untags; removes the image once no tag is left).
    pub fn rmi(&self, references: &[&str]) {
        let mut args = vec!["rmi"];
        args.extend_from_slice(references);
        self.run(&args);
    }

    /// The image ID (`sha256:` + config digest) of REF.
    pub fn image_id(&self, reference: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Id}}", reference])
            .trim()
            .to_string()
    }

    /// The RepoDigests of REF.
    pub fn repo_digests(&self, reference: &str) -> Vec<String> {
        let out = self.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            reference,
        ]);
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("RepoDigests of {reference} not JSON ({e}): {out}"))
    }

    /// True if the engine has an image (or tag) REF.
    pub fn has_image(&self, reference: &str) -> bool {
        cmd::run_unchecked(self.command().args(["image", "inspect", reference]))
            .status
            .success()
    }

    /// Every image ID the engine holds.
    pub fn image_ids(&self) -> Vec<String> {
        self.run(&["images", "-aq", "--no-trunc"])
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }
}
