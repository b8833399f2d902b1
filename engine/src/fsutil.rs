//! Small file-system helpers with the durability steps spelled out.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing each parent whose
/// listing changed, so the new directory itself survives a crash.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Moves a fully written and fsynced file to `dest` atomically and makes the
/// rename durable. If `dest` already exists the source is removed instead
/// (content-addressed: the same name always holds the same bytes).
pub fn install_file(src: &Path, dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir_durable(parent)?;
    }
    if dest.exists() {
        fs::remove_file(src)?;
        return Ok(());
    }
    fs::rename(src, dest)?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Opens `path` for reading and writing, creating it empty if it does not
/// exist and keeping its bytes if it does.
pub fn open_or_create(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Zeros for [`write_zeros`]: a static, so writing them never touches heap
/// memory (the pages stay the shared zero page).
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes zero bytes over `from..to` of `file`.
pub fn write_zeros(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = from;
    while at < to {
        let n = ZEROS.len().min((to - at) as usize);
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
