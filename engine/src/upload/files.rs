//! The open data files of upload sessions: a small cache, so that an idle
//! session holds no file descriptor however many sessions exist.
//!
//! Why a cache rather than opening the file for every operation: a body
//! under one block is appended piece by piece as it arrives (one call per
//! received piece), and a client pushing a layer in chunks sends many
//! PATCHes to one session; reopening the file for each would add an
//! `open` and a `close` to every piece. At most [`OPEN_FILES_MAX`]
//! descriptors stay cached, the least recently used one is closed when
//! another is needed, so descriptors are bounded by that number plus the
//! operations running at that moment (each holds its `Arc<dyn IoFile>`
//! only while it runs), never by the number of sessions. A restart opens
//! nothing: a session's file is opened on its first use. Files are opened
//! through the engine's [`Io`], like every other file of the store.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::id::UploadId;
use crate::io::{Io, IoFile, OpenMode};

/// Data files kept open between operations.
pub(crate) const OPEN_FILES_MAX: usize = 64;

/// Session data files, opened on demand and cached up to
/// [`OPEN_FILES_MAX`].
pub(crate) struct OpenFiles {
    /// The disk the files are on.
    io: Arc<dyn Io>,
    /// The `uploads/` directory.
    dir: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Open files with the tick of their last use (a linear scan over at
    /// most [`OPEN_FILES_MAX`] entries finds the oldest).
    entries: Vec<(UploadId, Arc<dyn IoFile>, u64)>,
    tick: u64,
}

impl OpenFiles {
    /// Caches the data files of the sessions under `dir` on `io`.
    pub(crate) fn new(io: Arc<dyn Io>, dir: &Path) -> OpenFiles {
        OpenFiles {
            io,
            dir: dir.to_owned(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The disk the files are on.
    pub(crate) fn io(&self) -> &dyn Io {
        &*self.io
    }

    /// The `uploads/` directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data file of session `id` (`legacy`: a session directory of the
    /// earlier layout).
    pub(crate) fn path(&self, id: UploadId, legacy: bool) -> PathBuf {
        if legacy {
            self.dir.join(id.to_string()).join("data")
        } else {
            self.dir.join(format!("{id}.data"))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open data file of session `id`, opened (and created, for a
    /// session of the current layout) if it is not cached.
    pub(crate) fn get(&self, id: UploadId, legacy: bool) -> io::Result<Arc<dyn IoFile>> {
        {
            let mut cache = self.lock();
            cache.tick += 1;
            let tick = cache.tick;
            if let Some(entry) = cache.entries.iter_mut().find(|e| e.0 == id) {
                entry.2 = tick;
                return Ok(entry.1.clone());
            }
        }
        // Opened outside the lock: other sessions' operations go on.
        let path = self.path(id, legacy);
        let mode = if legacy {
            OpenMode::READ_WRITE
        } else {
            OpenMode::OPEN_OR_CREATE
        };
        let file: Arc<dyn IoFile> = Arc::from(self.io.open(&path, mode)?);
        let mut cache = self.lock();
        cache.tick += 1;
        let tick = cache.tick;
        if let Some(entry) = cache.entries.iter_mut().find(|e| e.0 == id) {
            // Another operation opened it meanwhile: one descriptor is kept.
            entry.2 = tick;
            return Ok(entry.1.clone());
        }
        if cache.entries.len() >= OPEN_FILES_MAX {
            if let Some(oldest) = (0..cache.entries.len()).min_by_key(|&i| cache.entries[i].2) {
                cache.entries.swap_remove(oldest);
            }
        }
        cache.entries.push((id, file.clone(), tick));
        debug_assert!(cache.entries.len() <= OPEN_FILES_MAX);
        Ok(file)
    }

    /// Closes session `id`'s file if it is cached (the session ended).
    pub(crate) fn forget(&self, id: UploadId) {
        let mut cache = self.lock();
        if let Some(at) = cache.entries.iter().position(|e| e.0 == id) {
            cache.entries.swap_remove(at);
        }
    }

    /// Files cached now (for tests).
    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_bound_stays_open_and_the_least_recently_used_goes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = OpenFiles::new(Arc::new(crate::io::RealIo), dir.path());
        let ids: Vec<UploadId> = (0..OPEN_FILES_MAX + 10)
            .map(|_| UploadId::random())
            .collect();
        let first = files.get(ids[0], false).expect("open");
        drop(first);
        for id in &ids[1..] {
            // Keep the first one recently used: it must survive eviction.
            files.get(ids[0], false).expect("reuse");
            files.get(*id, false).expect("open");
            assert!(files.cached() <= OPEN_FILES_MAX);
        }
        assert_eq!(files.cached(), OPEN_FILES_MAX);
        let cache = files.lock();
        assert!(cache.entries.iter().any(|e| e.0 == ids[0]));
        assert!(!cache.entries.iter().any(|e| e.0 == ids[1]));
        drop(cache);
        files.forget(ids[0]);
        assert_eq!(files.cached(), OPEN_FILES_MAX - 1);
    }
}
