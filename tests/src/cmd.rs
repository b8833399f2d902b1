//! Running external programs (the clients) from tests: locate a tool or fail
//! loudly, run a command and panic with its output when it fails, read the
//! tail of a log file, send signals and wait for processes with a deadline.

use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::{Duration, Instant};

/// How to get the client programs the tests drive.
pub const INSTALL_HINT: &str = "install the test clients with `sudo scripts/install-test-deps`";

/// Returns the path of `tool` (an absolute path, or a name looked up in
/// `PATH`). Panics when it is not there: a test that cannot run its client
/// must fail, never pass or skip.
pub fn require_tool(tool: &str) -> PathBuf {
    let candidate = Path::new(tool);
    if candidate.is_absolute() {
        if is_executable(candidate) {
            return candidate.to_path_buf();
        }
        panic!("required program {tool} is missing; {INSTALL_HINT}");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(tool);
        if is_executable(&p) {
            return p;
        }
    }
    panic!("required program `{tool}` is not in PATH; {INSTALL_HINT}");
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its output; panics with the command
/// line, exit status, stdout and stderr if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Output {
    let out = run_unchecked(cmd);
    if !out.status.success() {
        panic!(
            "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            describe(cmd),
            tail_str(&String::from_utf8_lossy(&out.stdout), 40),
            tail_str(&String::from_utf8_lossy(&out.stderr), 40)
        );
    }
    out
}

/// Runs `cmd` and returns its stdout as a string (see [`run`]).
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Runs `cmd` to completion and returns its output whatever the exit status;
/// panics only if the program cannot be started.
pub fn run_unchecked(cmd: &mut Command) -> Output {
    let t0 = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", describe(cmd)));
    eprintln!(
        "[berth-tests] {:.1}s {}",
        t0.elapsed().as_secs_f64(),
        describe(cmd)
    );
    out
}

/// The last `n` lines of `s`.
pub fn tail_str(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of the file at `path` (or a note that it is unreadable).
pub fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(b) => tail_str(&String::from_utf8_lossy(&b), n),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Sends `sig` to process `pid` (ignores a process that is already gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Sends `sig` to every process of the process group `pgid`.
pub fn signal_group(pgid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// True while a process with this pid exists (and is not a zombie we own).
pub fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); check its state in /proc as well.
    // SAFETY: kill(2) with signal 0 only checks for existence.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Stops a child: SIGTERM, wait up to `grace`, then SIGKILL; always reaps it.
/// With `group` the signals go to the child's whole process group (the child
/// must have been spawned with `process_group(0)`).
pub fn terminate(child: &mut Child, grace: Duration, group: bool) {
    if let Ok(Some(_)) = child.try_wait() {
        if group {
            signal_group(child.id(), libc::SIGKILL);
        }
        return;
    }
    let pid = child.id();
    let send = |sig| {
        if group {
            signal_group(pid, sig)
        } else {
            signal(pid, sig)
        }
    };
    send(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            if group {
                // Leftovers in the group (helpers the child started) go too.
                signal_group(child.id(), libc::SIGKILL);
            }
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    send(libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until process `pid` (not our child) is gone, up to `timeout`;
/// SIGKILLs it when the time is up. Returns true if it had to be killed.
pub fn ensure_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGKILL);
    true
}

/// Makes the child get `sig` if the thread that spawned it dies (a test
/// binary killed by a timeout leaves no daemon behind). Note: Linux ties this
/// to the spawning *thread*, so spawn from the thread that owns the guard.
pub fn die_with_parent(c: &mut Command, sig: libc::c_int) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
            Ok(())
        });
    }
}

/// Opens (creating) `path` for appending; used for daemon logs.
pub fn append_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}
