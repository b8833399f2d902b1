//! The registry under test as a child process on a free loopback port.
//!
//! By default that is the berth binary, built once per test process with
//! `cargo build -p berth --bin berth` and run as `berth serve`. The same
//! tests run against another registry (the reference, CNCF Distribution)
//! with:
//!
//! * `BERTH_TEST_REGISTRY_BIN`: program to run instead of berth;
//! * `BERTH_TEST_REGISTRY_ARGS`: its arguments, space-separated (default
//!   `serve` for berth, none for another program);
//! * `BERTH_TEST_REGISTRY_ENV`: extra `KEY=VALUE` pairs, space-separated,
//!   for the child. Default: none for berth; `REGISTRY_AUTH=` for another
//!   program (an empty `auth` section: Debian's
//!   `/etc/docker/registry/config.yml` turns htpasswd auth on, and the tests
//!   need anonymous access).
//! * `BERTH_TEST_CARGO_PROFILE`: cargo profile to build berth with (default
//!   `dev`; e.g. `release`).
//!
//! Every registry gets `REGISTRY_HTTP_ADDR=127.0.0.1:PORT`,
//! `REGISTRY_HTTP_DEBUG_ADDR=127.0.0.1:DEBUG_PORT` (the debug listener:
//! health and metrics, which the public port does not serve) and
//! `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=<data dir>` (the names
//! Distribution reads), stdout and stderr go to a log file in a temp dir,
//! and it is SIGKILLed when the [`Registry`] is dropped.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cmd::{self, tail_file};
use crate::http::parse_response;

/// How long a registry may take to answer `GET /v2/` after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The program, arguments and extra environment that start a registry.
#[derive(Clone, Debug)]
pub struct RegistryCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// True for berth (built from this workspace), false for an override.
    pub is_berth: bool,
    /// When set, the registry is ready once its log contains this text and
    /// its port accepts connections, instead of once `GET /v2/` over plain
    /// HTTP answers 200 (for TLS or authenticated registries).
    pub ready_log_line: Option<String>,
}

impl RegistryCommand {
    /// Turns on htpasswd auth (registry:2's variables, realm "Registry
    /// Realm") with the file at `htpasswd`.
    pub fn with_htpasswd(&mut self, htpasswd: &std::path::Path) -> &mut Self {
        for (k, v) in [
            ("REGISTRY_AUTH", "htpasswd".to_string()),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm".to_string()),
            (
                "REGISTRY_AUTH_HTPASSWD_PATH",
                htpasswd.display().to_string(),
            ),
        ] {
            self.env.push((k.into(), v));
        }
        self
    }

    /// From `BERTH_TEST_REGISTRY_*`, else berth (built on first use).
    pub fn from_env() -> Self {
        let words = |var: &str| -> Option<Vec<String>> {
            std::env::var(var)
                .ok()
                .map(|v| v.split_whitespace().map(String::from).collect())
        };
        let pairs = |list: Vec<String>| -> Vec<(String, String)> {
            list.into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => panic!("BERTH_TEST_REGISTRY_ENV entry {kv:?} is not KEY=VALUE"),
                })
                .collect()
        };
        match std::env::var_os("BERTH_TEST_REGISTRY_BIN").filter(|v| !v.is_empty()) {
            Some(bin) => {
                let program = cmd::require_tool(&bin.to_string_lossy());
                RegistryCommand {
                    program,
                    args: words("BERTH_TEST_REGISTRY_ARGS").unwrap_or_default(),
                    env: pairs(
                        words("BERTH_TEST_REGISTRY_ENV")
                            .unwrap_or_else(|| vec!["REGISTRY_AUTH=".into()]),
                    ),
                    is_berth: false,
                    ready_log_line: None,
                }
            }
            None => RegistryCommand {
                program: berth_binary().clone(),
                args: words("BERTH_TEST_REGISTRY_ARGS").unwrap_or_else(|| vec!["serve".into()]),
                env: pairs(words("BERTH_TEST_REGISTRY_ENV").unwrap_or_default()),
                is_berth: true,
                ready_log_line: None,
            },
        }
    }
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("berth-tests lives inside the workspace")
        .to_path_buf()
}

/// Path of the berth binary, built once per test process with
/// `cargo build -p berth --bin berth`. Panics (in every test that asks)
/// with cargo's output when the build fails.
pub fn berth_binary() -> &'static PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_berth) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn build_berth() -> Result<PathBuf, String> {
    let root = workspace_root();
    let profile = std::env::var("BERTH_TEST_CARGO_PROFILE").unwrap_or_else(|_| "dev".into());
    let mut c = Command::new(env!("CARGO"));
    c.args([
        "build",
        "-p",
        "berth",
        "--bin",
        "berth",
        "--profile",
        &profile,
    ])
    .arg("--message-format=json-render-diagnostics")
    .current_dir(&root)
    .stdin(Stdio::null());
    let t0 = Instant::now();
    let out = c
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cmd::describe(&c)))?;
    eprintln!(
        "[berth-tests] {:.1}s {}",
        t0.elapsed().as_secs_f64(),
        cmd::describe(&c)
    );
    if !out.status.success() {
        return Err(format!(
            "building the berth binary failed ({}): {}\n{}",
            out.status,
            cmd::describe(&c),
            cmd::tail_str(&String::from_utf8_lossy(&out.stderr), 60)
        ));
    }
    // cargo reports the executable it produced; that covers every way of
    // configuring the target dir.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "berth" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    // Fallback: CARGO_TARGET_DIR (relative to the workspace) or <workspace>/target.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    };
    let dir = if profile == "dev" {
        "debug".to_string()
    } else {
        profile
    };
    let exe = target.join(dir).join("berth");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "cargo built berth but reported no executable, and {} does not exist",
            exe.display()
        ))
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child).
pub fn free_port() -> u16 {
    let l =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
    l.local_addr().expect("bound socket has an address").port()
}

/// A running registry. Dropping it SIGKILLs the process.
pub struct Registry {
    command: RegistryCommand,
    port: u16,
    debug_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    _log_dir: TempDir,
    child: Option<Child>,
}

impl Registry {
    /// Starts the registry under test on a free loopback port, storing in
    /// `data_dir` (created if missing), and waits until `GET /v2/` answers
    /// 200. Panics with the log tail if it does not come up.
    pub fn start(data_dir: &Path) -> Registry {
        Self::start_with(RegistryCommand::from_env(), data_dir)
    }

    /// As [`Registry::start`] with an explicit command.
    pub fn start_with(command: RegistryCommand, data_dir: &Path) -> Registry {
        fs::create_dir_all(data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let log_dir = tempfile::Builder::new()
            .prefix("berth-registry-log.")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let log_path = log_dir.path().join("registry.log");
        let mut reg = Registry {
            command,
            port: 0,
            debug_port: 0,
            data_dir: data_dir.to_path_buf(),
            log_path,
            _log_dir: log_dir,
            child: None,
        };
        // The port is free when picked but another process may take it before
        // the child binds it: pick another a few times.
        for attempt in 1..=3 {
            reg.port = free_port();
            reg.debug_port = loop {
                let p = free_port();
                if p != reg.port {
                    break p;
                }
            };
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) if attempt < 3 && e.contains("in use") => {
                    eprintln!("[berth-tests] port {} was taken, retrying: {e}", reg.port)
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut log = cmd::append_file(&self.log_path);
        let _ = writeln!(
            log,
            "==== berth-tests: starting {} {} on 127.0.0.1:{} data {}",
            self.command.program.display(),
            self.command.args.join(" "),
            self.port,
            self.data_dir.display()
        );
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log file handle: {e}"));
        let mut c = Command::new(&self.command.program);
        if self.command.is_berth {
            // Never pick up a machine-wide /etc/docker/registry/config.yml
            // (Debian's docker-registry installs one): start from berth's default.
            c.env("REGISTRY_CONFIGURATION_PATH", "/dev/null");
        }
        c.args(&self.command.args)
            .env("REGISTRY_HTTP_ADDR", self.addr())
            .env("REGISTRY_HTTP_DEBUG_ADDR", self.debug_addr())
            .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &self.data_dir)
            .env("RUST_BACKTRACE", "1")
            .envs(
                self.command
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        cmd::die_with_parent(&mut c, libc::SIGKILL);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the registry {}: {e}", cmd::describe(&c)));
        self.child = Some(child);
        self.wait_ready(&c)
    }

    /// Waits for an HTTP answer to `GET /v2/`; Err(message) if the process
    /// exits or the time runs out (the process is killed then).
    fn wait_ready(&mut self, c: &Command) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "registry exited ({status}) before answering GET /v2/: {}\n--- log tail ({}) ---\n{}",
                    cmd::describe(c),
                    self.log_path.display(),
                    tail_file(&self.log_path, 30)
                ));
            }
            if let Some(line) = &self.command.ready_log_line {
                if tail_file(&self.log_path, 200).contains(line.as_str())
                    && std::net::TcpStream::connect(self.addr()).is_ok()
                {
                    return Ok(());
                }
            } else if let Some(status) = probe_v2(&self.addr()) {
                if status != 200 {
                    self.kill();
                    return Err(format!(
                        "registry answered GET /v2/ with {status}, the tests need 200 (anonymous access): {}\n--- log tail ---\n{}",
                        cmd::describe(c),
                        tail_file(&self.log_path, 30)
                    ));
                }
                eprintln!(
                    "[berth-tests] registry up on {} after {:.2}s (log {})",
                    self.addr(),
                    t0.elapsed().as_secs_f64(),
                    self.log_path.display()
                );
                return Ok(());
            }
            if t0.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(format!(
                    "registry did not answer GET http://{}/v2/ within {READY_TIMEOUT:?}: {}\n--- log tail ---\n{}",
                    self.addr(),
                    cmd::describe(c),
                    tail_file(&self.log_path, 30)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`: the registry host for client references.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// `127.0.0.1:DEBUG_PORT`: the debug listener (`http.debug.addr`).
    pub fn debug_addr(&self) -> String {
        format!("127.0.0.1:{}", self.debug_port)
    }

    /// `http://127.0.0.1:DEBUG_PORT` + `path`: a URL on the debug listener.
    pub fn debug_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.debug_addr())
    }

    /// `GET /debug/health` on the debug listener.
    pub fn health(&self) -> crate::http::HttpResponse {
        crate::http::request("GET", &self.debug_url("/debug/health"), &[], None)
    }

    /// Every sample of `GET /debug/metrics` on the debug listener
    /// (Prometheus text), by name.
    pub fn metrics(&self) -> std::collections::BTreeMap<String, u64> {
        let text = crate::http::request("GET", &self.debug_url("/debug/metrics"), &[], None).text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
            .collect()
    }

    /// One metric's value; panics naming it if the server does not export it.
    pub fn metric(&self, name: &str) -> u64 {
        let all = self.metrics();
        *all.get(name)
            .unwrap_or_else(|| panic!("no {name} in /debug/metrics: {all:?}"))
    }

    /// The storage directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log file (stdout and stderr of every start).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path, n)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops it gracefully: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::terminate(&mut child, Duration::from_secs(10), true);
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (gracefully) and starts it again on the same port with the
    /// same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts it again after [`Registry::stop`] or [`Registry::kill`] on the
    /// same port and data directory; panics if it does not come up.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: the registry is still running"
        );
        // The old listener may linger for a moment after the process is gone.
        let t0 = Instant::now();
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if e.contains("in use") && t0.elapsed() < Duration::from_secs(5) => {
                    thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("restart on the same port failed: {e}"),
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "[berth-tests] registry log tail ({}):\n{}",
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        self.kill();
    }
}

/// One `GET /v2/` on a fresh connection: Some(status) if an HTTP response
/// came back, None if nothing listens yet or no full response head arrived.
fn probe_v2(addr: &str) -> Option<u16> {
    let sock = addr.parse().expect("addr is ip:port");
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    parse_response(&buf).map(|r| r.status)
}
