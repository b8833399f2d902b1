//! Replays every seed (`fuzz/corpus/config/`) and saved input
//! (`fuzz/regressions/config/`) of the `config` fuzz target through the
//! target's own property checks (`fuzz/checks/config.rs`), so plain
//! `cargo test` on a stable toolchain keeps them passing without libFuzzer.

#[path = "../../fuzz/checks/config.rs"]
mod checks;

use std::fs;
use std::panic::{catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn config_seeds_keep_their_properties() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = files(&fuzz.join("corpus/config"));
    assert!(seeds.len() >= 5, "too few seeds in fuzz/corpus/config/");
    for path in seeds.iter().chain(&files(&fuzz.join("regressions/config"))) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(|| checks::config_file(&data)) {
            eprintln!("fuzz property failed for {}", path.display());
            resume_unwind(panic);
        }
    }
}

/// The seeds that are meant to be valid stay valid (a seed that stops
/// parsing would only exercise the error path).
#[test]
fn valid_seeds_parse() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    for name in [
        "registry2_shipped.yml",
        "packaging.yml",
        "readme_tls_auth.yml",
        "proxy.yml",
        "berth_limits_health.yml",
    ] {
        let text = fs::read_to_string(fuzz.join(name)).expect(name);
        if let Err(e) = berth::config::Config::from_yaml(&text, name) {
            panic!("{name}: {e}");
        }
    }
}
