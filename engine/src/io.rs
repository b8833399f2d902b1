//! The engine's one door to the disk: every file operation the engine makes
//! (open/create, pread, pwrite, fdatasync/fsync, set_len, fallocate, rename,
//! unlink, mkdir, read_dir, directory fsync, the data directory's lock) goes
//! through [`Io`] and the [`IoFile`] handles it opens, so a simulated disk
//! (a power-loss simulator that drops unsynced writes) can stand in for the
//! real one. [`RealIo`] is the default and calls the operating system.
//!
//! The handles are trait objects: every call through them is a system call
//! (microseconds to milliseconds), so the indirect call costs nothing that
//! can be measured (`docs/design/segment-store.md`, "The I/O seam").
//!
//! Zero-copy reads: the server splices blob bytes from a real descriptor
//! ([`crate::BlobRead`]). [`IoFile::as_file`] exposes it for the real disk;
//! a simulated disk has none (`None`), and the engine then serves a read by
//! copy: it reads the blob's bytes through [`IoFile::read_exact_at`] into an
//! anonymous in-memory file (`memfd`) and hands that out instead.
//!
//! The upload sessions (`crate::upload`) use the same interface: their
//! journal and data files are [`IoFile`]s, the body pipeline's block writer
//! asks for `O_DIRECT` with [`OpenMode::direct`] (falling back to buffered
//! writes where the disk refuses it), and its aligned writes are plain
//! [`IoFile::write_all_at`] calls.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::SystemTime;

/// How [`Io::open`] opens a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    /// Open for writing as well as reading (every file is readable).
    pub write: bool,
    /// Create the file when it does not exist.
    pub create: bool,
    /// Fail when the file exists (implies `create`).
    pub create_new: bool,
    /// Cut an existing file to zero length.
    pub truncate: bool,
    /// Bypass the page cache (`O_DIRECT`): writes must be aligned. Fails
    /// with `InvalidInput` where the file system refuses it.
    pub direct: bool,
}

impl OpenMode {
    /// Read only; the file must exist.
    pub const READ: OpenMode = OpenMode {
        write: false,
        create: false,
        create_new: false,
        truncate: false,
        direct: false,
    };
    /// Read and write; the file must exist.
    pub const READ_WRITE: OpenMode = OpenMode {
        write: true,
        ..OpenMode::READ
    };
    /// Read and write, created empty when missing, kept when present.
    pub const OPEN_OR_CREATE: OpenMode = OpenMode {
        create: true,
        ..OpenMode::READ_WRITE
    };
    /// Read and write, created empty or cut to zero length.
    pub const CREATE_TRUNCATE: OpenMode = OpenMode {
        truncate: true,
        ..OpenMode::OPEN_OR_CREATE
    };
    /// Read and write, created; fails when the file exists.
    pub const CREATE_NEW: OpenMode = OpenMode {
        create_new: true,
        ..OpenMode::READ_WRITE
    };

    /// The same mode with `O_DIRECT`.
    pub const fn direct(self) -> OpenMode {
        OpenMode {
            direct: true,
            ..self
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's file name (no directory part).
    pub name: OsString,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// What [`Io::stat`] found at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Length in bytes (0 for a directory on a simulated disk).
    pub len: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// An open file of an [`Io`]. Positional reads and writes only: handles are
/// shared between threads (`Arc<dyn IoFile>`), so there is no cursor.
pub trait IoFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` past
    /// the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset` (not durable until a sync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's bytes durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's bytes and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Sets the file's length (cuts or extends with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reserves blocks for `offset..offset + len` (`fallocate`), extending
    /// the file's length when the range ends past it.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Takes an exclusive advisory lock (`flock`) without waiting: `false`
    /// when another process (or handle) holds it.
    fn try_lock(&self) -> io::Result<bool>;
    /// A second handle on the same open file (`dup`).
    fn try_clone(&self) -> io::Result<Box<dyn IoFile>>;
    /// The real descriptor, for zero-copy sends (splice/sendfile); `None`
    /// on a simulated disk, whose reads the engine serves by copy.
    fn as_file(&self) -> Option<&File>;
    /// The real descriptor itself (no `dup`), or the handle back on a
    /// simulated disk.
    fn into_file(self: Box<Self>) -> Result<File, Box<dyn IoFile>>;
}

/// The file system under the engine: paths in, [`IoFile`] handles out.
/// Shared by every part of the engine as `Arc<dyn Io>`.
pub trait Io: Send + Sync + fmt::Debug {
    /// Opens (or creates, per `mode`) the file at `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn IoFile>>;
    /// Renames `from` to `to`, replacing `to` (atomic; durable once the
    /// directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (`NotFound` when there is none).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates one directory (`AlreadyExists` when there is one).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    /// What is at `path`: `None` when nothing is.
    fn stat(&self, path: &Path) -> io::Result<Option<Stat>>;

    /// Removes an empty directory. The default refuses (`Unsupported`): a
    /// disk that has directories to remove says so. Only directories of an
    /// earlier upload layout are ever removed.
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this disk cannot remove directories",
        ))
    }

    /// When the file at `path` was last written: `None` when nothing is
    /// there or the disk keeps no such times (the default). Upload
    /// sessions use it to tell an idle session after a restart.
    fn modified(&self, path: &Path) -> io::Result<Option<SystemTime>> {
        let _ = path;
        Ok(None)
    }

    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenMode::READ)?;
        let len = usize::try_from(file.len()?).map_err(|_| io::ErrorKind::OutOfMemory)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// Whether anything is at `path` (an error counts as no).
    fn exists(&self, path: &Path) -> bool {
        matches!(self.stat(path), Ok(Some(_)))
    }
}

/// The real file system, through `std::fs` and `rustix`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealIo;

/// An open file of [`RealIo`].
#[derive(Debug)]
pub struct RealFile(File);

impl RealFile {
    /// Wraps an open file.
    pub fn new(file: File) -> RealFile {
        RealFile(file)
    }
}

impl IoFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        rustix::fs::fallocate(&self.0, rustix::fs::FallocateFlags::empty(), offset, len)
            .map_err(io::Error::from)
    }

    fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn try_clone(&self) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(RealFile(self.0.try_clone()?)))
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.0)
    }

    fn into_file(self: Box<Self>) -> Result<File, Box<dyn IoFile>> {
        Ok(self.0)
    }
}

impl Io for RealIo {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn IoFile>> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(mode.write)
            .create(mode.create)
            .create_new(mode.create_new)
            .truncate(mode.truncate);
        if mode.direct {
            let flags = i32::try_from(rustix::fs::OFlags::DIRECT.bits())
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            options.custom_flags(flags);
        }
        Ok(Box::new(RealFile(options.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            out.push(DirEntry {
                name: entry.file_name(),
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        Ok(out)
    }

    fn stat(&self, path: &Path) -> io::Result<Option<Stat>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(Stat {
                len: meta.len(),
                is_dir: meta.is_dir(),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn modified(&self, path: &Path) -> io::Result<Option<SystemTime>> {
        match fs::metadata(path) {
            Ok(meta) => meta.modified().map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A real descriptor holding bytes `offset..offset + len` of `file`: the
/// file's own (duplicated) descriptor on the real disk; on a simulated disk
/// a copy of those bytes in an anonymous in-memory file, starting at 0.
/// Returns the descriptor and where the bytes start in it.
pub(crate) fn readable_fd(file: &dyn IoFile, offset: u64, len: u64) -> io::Result<(File, u64)> {
    if let Some(real) = file.as_file() {
        return Ok((real.try_clone()?, offset));
    }
    let copy: File =
        rustix::fs::memfd_create("berth-read", rustix::fs::MemfdFlags::CLOEXEC)?.into();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(buf.len() as u64))
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        FileExt::write_all_at(&copy, &buf[..n], done)?;
        done += n as u64;
    }
    Ok((copy, 0))
}

impl crate::segment::Source for dyn IoFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        IoFile::read_exact_at(self, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real disk's handles do what the trait says: positional writes and
    /// reads, length, allocation, locking, a read descriptor.
    #[test]
    fn real_io_round_trips_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let io = RealIo;
        let path = dir.path().join("f");
        assert_eq!(io.stat(&path).unwrap(), None);
        let file = io.open(&path, OpenMode::CREATE_NEW).unwrap();
        assert!(io.open(&path, OpenMode::CREATE_NEW).is_err());
        file.write_all_at(b"hello", 3).unwrap();
        assert_eq!(file.len().unwrap(), 8);
        file.allocate(0, 4096).unwrap();
        assert_eq!(file.len().unwrap(), 4096);
        file.set_len(8).unwrap();
        file.sync_data().unwrap();
        let mut buf = [0u8; 5];
        file.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(file.try_lock().unwrap());
        let other = io.open(&path, OpenMode::READ).unwrap();
        assert!(
            !other.try_lock().unwrap(),
            "a second open file got the lock"
        );
        assert_eq!(io.read(&path).unwrap(), b"\0\0\0hello");
        let (fd, at) = readable_fd(&*file, 3, 5).unwrap();
        assert_eq!(at, 3);
        let mut back = [0u8; 5];
        FileExt::read_exact_at(&fd, &mut back, at).unwrap();
        assert_eq!(&back, b"hello");
        let names: Vec<_> = io.read_dir(dir.path()).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].name, "f");
        assert!(io.modified(&path).unwrap().is_some());
        io.rename(&path, &dir.path().join("g")).unwrap();
        assert!(!io.exists(&path));
        assert_eq!(io.modified(&path).unwrap(), None);
        io.remove_file(&dir.path().join("g")).unwrap();
        io.create_dir(&dir.path().join("d")).unwrap();
        io.remove_dir(&dir.path().join("d")).unwrap();
        assert!(io.read_dir(dir.path()).unwrap().is_empty());
    }
}
