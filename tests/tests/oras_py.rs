//! oras-py (the ORAS Python SDK, from PyPI) against berth: push and pull a
//! files artifact, attach an artifact with a `subject`, list the subject's
//! referrers. The SDK is installed into a venv under the target directory
//! (pip from PyPI); a failure to install it fails the test.

use std::path::PathBuf;
use std::process::Command;

use berth_tests::registry::{workspace_root, Registry};

/// oras-py release the test is written against.
const ORAS_VERSION: &str = "0.2.43";

fn venv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let venv = target.join(format!("oras-py-{ORAS_VERSION}"));
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(
            made.success(),
            "python3 -m venv {} failed (install python3-venv)",
            venv.display()
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("oras=={ORAS_VERSION}"),
            ])
            .status()
            .expect("pip runs");
        if !pip.success() {
            let _ = std::fs::remove_dir_all(&venv);
            panic!("pip install oras=={ORAS_VERSION} failed (PyPI must be reachable)");
        }
    }
    python
}

#[test]
fn oras_py_push_attach_and_referrers() {
    let python = venv();
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start(&dir.path().join("data"));
    let out = Command::new(python)
        .arg(workspace_root().join("tests/py/oras_check.py"))
        .env("REGISTRY", r.addr())
        .output()
        .expect("oras check runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "oras-py check failed:\n{stdout}\n{stderr}\n--- registry log ---\n{}",
        r.log_tail(40)
    );
    assert!(
        stdout.contains("PASS referrers list the attached artifact"),
        "{stdout}"
    );
}
