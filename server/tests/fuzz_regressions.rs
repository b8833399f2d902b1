//! Replays every handwritten seed (`fuzz/corpus/<target>/`) and every saved
//! crash (`fuzz/regressions/<target>/`) of the auth fuzz targets
//! (`htpasswd`, `authorization`, `jwt`) through the targets' own property
//! checks, then a few thousand cheap mutations of the seeds, so plain
//! `cargo test` on a stable toolchain keeps them passing without libFuzzer.
//! The checks live in `fuzz/checks/auth.rs`, shared with the fuzz targets.

#[path = "../../fuzz/checks/auth.rs"]
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

/// Mutations per target: byte flips, inserts, deletes and splices of the
/// seeds, from a fixed xorshift stream (the same inputs on every run).
const MUTATIONS: usize = 3000;

/// Runs `check` on each seed and regression input of `target`, then on
/// [`MUTATIONS`] mutations of the seeds; a failure names the input.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = files(&fuzz.join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/{target}/");
    let mut inputs = Vec::new();
    for path in seeds
        .iter()
        .chain(&files(&fuzz.join("regressions").join(target)))
    {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(|| check(&data)) {
            eprintln!("fuzz property failed for {}", path.display());
            resume_unwind(panic);
        }
        inputs.push(data);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..MUTATIONS {
        let mut data = inputs[next() as usize % inputs.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if data.is_empty() {
                0
            } else {
                next() as usize % data.len()
            };
            match next() % 4 {
                0 if !data.is_empty() => data[at] ^= 1 << (next() % 8),
                1 => data.insert(at, next() as u8),
                2 if !data.is_empty() => {
                    data.remove(at);
                }
                _ => {
                    let other = &inputs[next() as usize % inputs.len()];
                    let from = next() as usize % (other.len() + 1);
                    let to = from + (next() as usize % (other.len() - from + 1));
                    data.splice(at..at, other[from..to].iter().copied());
                }
            }
        }
        if let Err(panic) = catch_unwind(|| check(&data)) {
            eprintln!("fuzz property failed for a mutation of the {target} seeds: {data:?}");
            resume_unwind(panic);
        }
    }
}

#[test]
fn htpasswd() {
    replay("htpasswd", checks::htpasswd);
}

#[test]
fn authorization() {
    replay("authorization", checks::authorization);
}

#[test]
fn jwt() {
    replay("jwt", checks::jwt);
}
