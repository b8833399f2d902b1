//! Replays every handwritten seed (`fuzz/corpus/<target>/`) and every saved
//! crash (`fuzz/regressions/<target>/`) of the `berth-http` fuzz targets
//! through the targets' own property checks, so plain `cargo test` on a
//! stable toolchain keeps them passing without libFuzzer. The checks live in
//! `fuzz/checks/http.rs`, shared with the fuzz targets.

#[path = "../../../fuzz/checks/http.rs"]
mod checks;

use std::fs;
use std::panic::{catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on each seed and regression input of `target`; a failure
/// names the file.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let seeds = files(&fuzz.join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/{target}/");
    for path in seeds
        .iter()
        .chain(&files(&fuzz.join("regressions").join(target)))
    {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(|| check(&data)) {
            eprintln!("fuzz property failed for {}", path.display());
            resume_unwind(panic);
        }
    }
}

#[test]
fn request_head() {
    replay("request_head", checks::request_head);
}

#[test]
fn chunked_body() {
    replay("chunked_body", checks::chunked_body);
}

#[test]
fn range() {
    replay("range", checks::range);
}

#[test]
fn content_range() {
    replay("content_range", checks::content_range);
}

#[test]
fn www_authenticate() {
    replay("www_authenticate", checks::www_authenticate);
}
