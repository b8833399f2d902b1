//! The disk yardstick: how fast a file system takes a big file durably,
//! written the way `dd oflag=direct conv=fdatasync` would, independent of
//! berth's own writer.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Bytes per write, and the alignment direct I/O needs.
const WRITE_BYTES: usize = 1 << 20;
const ALIGN: usize = 4096;

/// How one pass went.
pub struct Pass {
    /// Whether the file system took direct I/O (else the pass was buffered).
    pub direct: bool,
}

/// Writes `size` bytes (rounded up to whole 1 MiB writes) into a new file
/// under `dir` with direct I/O where the file system allows it, fdatasyncs
/// it, and removes it.
pub fn write_pass(dir: &Path, size: u64) -> io::Result<Pass> {
    let path = dir.join(format!(".berth-bench-disk-{}", std::process::id()));
    let direct_flag = rustix::fs::OFlags::DIRECT.bits() as i32;
    let open = |flags: i32| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(&path)
    };
    let (mut file, direct) = match open(direct_flag) {
        Ok(f) => (f, true),
        Err(_) => (open(0)?, false),
    };
    // Direct I/O needs an aligned buffer: take the aligned window of a
    // slightly larger one.
    let storage = crate::random_bytes(WRITE_BYTES + ALIGN, 11);
    let at = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
    let buf = &storage[at..at + WRITE_BYTES];
    let result = (|| {
        let mut written = 0u64;
        while written < size {
            file.write_all(buf)?;
            written += WRITE_BYTES as u64;
        }
        file.sync_data()
    })();
    let removed = std::fs::remove_file(&path);
    result?;
    removed?;
    Ok(Pass { direct })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_writes_and_removes_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pass(dir.path(), 3 << 20).expect("pass");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
