//! Small file-system helpers with the durability steps spelled out, on any
//! [`Io`].

use std::io;
use std::path::Path;

use crate::io::{Io, IoFile, OpenMode};

/// Creates `dir` and any missing parents, fsyncing each parent whose
/// listing changed, so the new directory itself survives a crash.
pub fn create_dir_durable(io: &dyn Io, dir: &Path) -> io::Result<()> {
    if io.stat(dir)?.is_some_and(|s| s.is_dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(io, parent)?;
    }
    match io.create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        io.sync_dir(parent)?;
    }
    Ok(())
}

/// Moves a fully written and fsynced file to `dest` atomically and makes the
/// rename durable. If `dest` already exists the source is removed instead
/// (content-addressed: the same name always holds the same bytes).
pub fn install_file(io: &dyn Io, src: &Path, dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir_durable(io, parent)?;
    }
    if io.exists(dest) {
        io.remove_file(src)?;
        return Ok(());
    }
    io.rename(src, dest)?;
    if let Some(parent) = dest.parent() {
        io.sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes`, durably: a temporary file
/// beside it (`tmp`), fsync, rename, directory fsync. A crash leaves the old
/// file or the new one.
pub fn replace_file(io: &dyn Io, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    {
        let file = io.open(tmp, OpenMode::CREATE_TRUNCATE)?;
        file.write_all_at(bytes, 0)?;
        file.sync_all()?;
    }
    io.rename(tmp, path)?;
    match path.parent() {
        Some(dir) => io.sync_dir(dir),
        None => Ok(()),
    }
}

/// Zeros for [`write_zeros`]: a static, so writing them never touches heap
/// memory (the pages stay the shared zero page).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes zero bytes over `from..to` of `file`.
pub fn write_zeros(file: &dyn IoFile, from: u64, to: u64) -> io::Result<()> {
    assert!(from <= to, "zeros from {from} to {to}: an inverted range");
    let mut at = from;
    while at < to {
        let n = ZEROS.len().min((to - at) as usize);
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
