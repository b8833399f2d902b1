//! A private containerd (Debian's containerd 1.6) for `ctr`: its own root,
//! state, socket and config under a temp dir, the CRI plugin off, no
//! systemd. Dropping it stops the daemon. If it cannot start,
//! [`Containerd::start`] panics with its log tail: never a silent skip.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cmd::{self, tail_file};

/// How long containerd may take to answer `ctr version`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private containerd.
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    sock: PathBuf,
    log_path: PathBuf,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` reaches it.
    pub fn start() -> Containerd {
        let containerd = cmd::require_tool("containerd");
        cmd::require_tool("ctr");
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd.")
            .tempdir()
            .expect("temp dir");
        let p = dir.path();
        let sock = p.join("containerd.sock");
        let config = p.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = p.join("root").display(),
                state = p.join("state").display(),
                sock = sock.display()
            ),
        )
        .expect("write containerd config");
        let log_path = p.join("containerd.log");
        let log = cmd::append_file(&log_path);
        let err = log.try_clone().expect("dup log");
        let mut c = Command::new(containerd);
        c.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        cmd::die_with_parent(&mut c, libc::SIGTERM);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd::describe(&c)));
        let mut d = Containerd {
            dir,
            child: Some(child),
            sock,
            log_path,
        };
        let t0 = Instant::now();
        loop {
            if d.ctr(&["version"]).status.success() {
                eprintln!(
                    "[berth-tests] containerd up after {:.1}s",
                    t0.elapsed().as_secs_f64()
                );
                return d;
            }
            let exited = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || t0.elapsed() > READY_TIMEOUT {
                panic!(
                    "containerd did not come up ({exited:?}):\n{}",
                    tail_file(&d.log_path, 40)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `ctr -a SOCK -n berth-tests ARGS…` and returns its output.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.sock)
            .args(["-n", "berth-tests"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"))
    }

    /// As [`Containerd::ctr`], panicking with stderr if it fails; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "[berth-tests] containerd log tail:\n{}",
                tail_file(&self.log_path, 30)
            );
        }
        if let Some(mut child) = self.child.take() {
            cmd::terminate(&mut child, Duration::from_secs(10), true);
        }
    }
}
