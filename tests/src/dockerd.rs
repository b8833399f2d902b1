//! A private Docker engine (Debian's docker.io 20.10 `dockerd`) for one test:
//! its own data-root, exec-root, pidfile, unix socket and config under a temp
//! dir; no iptables, no bridge, no userland proxy, vfs storage; no systemd.
//! dockerd starts its own containerd under the exec-root. Dropping the
//! [`Dockerd`] stops both (SIGTERM, then SIGKILL) and removes the temp dir.
//!
//! If dockerd cannot start, [`Dockerd::start`] panics with its log tail: a
//! test that cannot run its client fails loudly.
//!
//! Side effect outside the temp dir (dockerd's own doing): it writes its
//! trust key to `/etc/docker/key.json` if that is missing.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cmd::{self, tail_file};
use crate::docker::DockerCli;

/// The daemon binary (Debian docker.io).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The CLI to use: Debian's 20.10 (a /usr/local/bin/docker may be another version).
pub const DOCKER_CLI: &str = "/usr/bin/docker";
/// How long dockerd may take to answer `docker version`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private dockerd.
pub struct Dockerd {
    dir: TempDir,
    child: Option<Child>,
    sock: PathBuf,
    log_path: PathBuf,
    config_dir: PathBuf,
}

impl Dockerd {
    /// Starts dockerd and waits until `docker version` reaches it. Panics
    /// (with the daemon's log tail) if a program is missing or it does not
    /// come up within [`READY_TIMEOUT`].
    pub fn start() -> Dockerd {
        Self::start_with_config("{}\n")
    }

    /// As [`Dockerd::start`] with `daemon_json` as the daemon's
    /// configuration file (e.g. `{"registry-mirrors": [...]}`).
    pub fn start_with_config(daemon_json_text: &str) -> Dockerd {
        let dockerd = cmd::require_tool(DOCKERD);
        cmd::require_tool(DOCKER_CLI);
        cmd::require_tool("containerd");
        cmd::require_tool("runc");
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd.")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let p = dir.path();
        for sub in ["root", "exec", "run", "client-config"] {
            fs::create_dir_all(p.join(sub)).unwrap_or_else(|e| panic!("cannot create {sub}: {e}"));
        }
        let daemon_json = p.join("daemon.json");
        fs::write(&daemon_json, daemon_json_text)
            .unwrap_or_else(|e| panic!("cannot write daemon.json: {e}"));
        let sock = p.join("docker.sock");
        let log_path = p.join("dockerd.log");
        let log = cmd::append_file(&log_path);
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log handle: {e}"));
        let mut c = Command::new(&dockerd);
        c.arg("--config-file")
            .arg(&daemon_json)
            .arg("--data-root")
            .arg(p.join("root"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("run/dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--userland-proxy=false",
                "--storage-driver=vfs",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        cmd::die_with_parent(&mut c, libc::SIGTERM);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd::describe(&c)));
        let mut d = Dockerd {
            config_dir: p.join("client-config"),
            dir,
            child: Some(child),
            sock,
            log_path,
        };
        d.wait_ready(&c);
        d
    }

    fn wait_ready(&mut self, c: &Command) {
        let t0 = Instant::now();
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "dockerd exited ({status}) before it answered: {}\n--- dockerd log tail ({}) ---\n{}",
                    cmd::describe(c),
                    self.log_path.display(),
                    tail_file(&self.log_path, 40)
                );
            }
            let out = self
                .cli()
                .command()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output();
            if let Ok(out) = out {
                if out.status.success() {
                    eprintln!(
                        "[berth-tests] dockerd {} up after {:.1}s (pid {}, socket {})",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        t0.elapsed().as_secs_f64(),
                        self.pid().unwrap_or(0),
                        self.sock.display()
                    );
                    return;
                }
            }
            if t0.elapsed() > READY_TIMEOUT {
                let tail = tail_file(&self.log_path, 40);
                self.stop();
                panic!(
                    "dockerd did not answer `docker version` within {READY_TIMEOUT:?}: {}\n--- dockerd log tail ---\n{tail}",
                    cmd::describe(c)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `unix://…/docker.sock`, the value for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// The client config dir (`DOCKER_CONFIG`) for this engine's CLI calls.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The docker CLI bound to this engine.
    pub fn cli(&self) -> DockerCli {
        DockerCli::new(
            PathBuf::from(DOCKER_CLI),
            self.host(),
            self.config_dir.clone(),
        )
    }

    /// The dockerd process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the daemon log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path, n)
    }

    /// pid of the containerd that dockerd started (from its pid file).
    fn containerd_pid(&self) -> Option<u32> {
        let f = self.dir.path().join("exec/containerd/containerd.pid");
        fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    /// Stops dockerd (SIGTERM; SIGKILL after 20 s) and makes sure its
    /// containerd is gone too. Idempotent.
    pub fn stop(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut child) = self.child.take() {
            // SIGTERM to dockerd alone (it shuts its containerd down itself),
            // then SIGKILL whatever is left in its process group.
            let pgid = child.id();
            cmd::terminate(&mut child, Duration::from_secs(20), false);
            cmd::signal_group(pgid, libc::SIGKILL);
        }
        if let Some(pid) = containerd {
            // dockerd stops its containerd on the way out; if it did not, do it.
            if cmd::pid_alive(pid) {
                cmd::signal(pid, libc::SIGTERM);
                if cmd::ensure_gone(pid, Duration::from_secs(10)) {
                    eprintln!("[berth-tests] containerd {pid} had to be SIGKILLed");
                }
            }
        }
        unmount_under(self.dir.path());
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "[berth-tests] dockerd log tail ({}):\n{}",
                self.log_path.display(),
                self.log_tail(30)
            );
        }
        self.stop();
    }
}

/// Lazily unmounts anything still mounted under `dir` (dockerd may leave
/// namespace or shm mounts behind), so the temp dir can be removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let Ok(c) = std::ffi::CString::new(m.clone()) else {
            continue;
        };
        // SAFETY: umount2 takes a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "[berth-tests] could not unmount {m}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
