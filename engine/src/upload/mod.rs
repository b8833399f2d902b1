//! Uploads: blobs being received into sessions. This layer knows nothing of
//! the engine above it: the `Engine` methods that start, feed, finish,
//! cancel and purge uploads (`engine/uploads.rs`) call into it.
//!
//! - `id`: session ids;
//! - `session`: the sessions, their journal, limits and per-client counts;
//! - `files`: a bounded cache of open session data files (an idle session
//!   holds no descriptor);
//! - `block`: aligned blocks and the direct-I/O block writer;
//! - `pipeline`: the hashing and writing threads for large bodies, their
//!   global limit and the byte counters;
//! - `writer`: [`BodyWriter`], the interface the API layer fills blocks
//!   through.

pub(crate) mod block;
mod files;
mod id;
mod pipeline;
pub(crate) mod session;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::{Arc, MutexGuard};

pub use block::Block;
pub use session::{UploadId, UploadIdError, UploadLimits};
pub use writer::{BodyWriter, Handed};

use block::BlockWriter;
pub(crate) use session::{Session, Upload};

use crate::digest::Hasher;
use crate::error::{EngineError, Result};
use crate::names::RepositoryName;

pub(crate) use session::Sessions;

/// Upload byte counters since the process started (metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadCounters {
    /// Body bytes received, hashed and written in parallel (large bodies).
    pub bytes_piped: u64,
    /// Of those, bytes written with direct I/O (no page-cache copy).
    pub bytes_direct: u64,
}

/// The upload byte counters (process-wide).
pub fn upload_counters() -> UploadCounters {
    use std::sync::atomic::Ordering;
    UploadCounters {
        bytes_piped: pipeline::UPLOAD_BYTES_PIPED.load(Ordering::Relaxed),
        bytes_direct: pipeline::UPLOAD_BYTES_DIRECT.load(Ordering::Relaxed),
    }
}

/// A session taken by [`Sessions::lease`]: hash blocks with `hasher`
/// and write them with `writer` (on any threads, in file order), then hand
/// both back with [`Sessions::end_lease`]. Private to the engine: only
/// the pipeline (and tests) lease sessions.
pub(crate) struct UploadLease {
    /// sha256 of the bytes the session held when leased.
    pub(crate) hasher: Hasher,
    /// Writes blocks into the session's data file.
    pub(crate) writer: BlockWriter,
}

/// Locks an upload session that no bulk writer holds.
pub(crate) fn lock_idle(session: &Session) -> Result<MutexGuard<'_, Upload>> {
    let upload = session.lock();
    if upload.is_leased() {
        return Err(EngineError::UploadBusy);
    }
    Ok(upload)
}

/// `RangeMismatch` unless the session holds exactly `at` bytes (the next
/// byte must go at `at`).
pub(crate) fn ends_at(upload: &Upload, at: u64) -> Result<()> {
    if at != upload.len() {
        return Err(EngineError::RangeMismatch {
            expected: upload.len(),
            got: at,
        });
    }
    Ok(())
}

impl Sessions {
    /// Session `id`, if it is open in `repo` (a session is never found
    /// through another repository).
    pub(crate) fn in_repo(&self, repo: &RepositoryName, id: UploadId) -> Result<Arc<Session>> {
        let session = self.get(id).ok_or(EngineError::UploadUnknown)?;
        if session.repo != *repo {
            return Err(EngineError::UploadUnknown);
        }
        Ok(session)
    }

    /// Takes the session for a bulk writer: the caller gets the running
    /// sha256 of the `at` bytes the session holds and a [`BlockWriter`] on
    /// its data file, and may hash and write blocks on other threads. Until
    /// [`Sessions::end_lease`], every other append, finish or lease of
    /// the session fails with [`EngineError::UploadBusy`]. `RangeMismatch`
    /// if the session does not hold exactly `at` bytes.
    pub(crate) fn lease(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> Result<UploadLease> {
        let session = self.in_repo(repo, id)?;
        let mut upload = lock_idle(&session)?;
        ends_at(&upload, at)?;
        let (hasher, writer) = upload.lease(self.files())?;
        Ok(UploadLease { hasher, writer })
    }

    /// Ends a lease taken by [`Sessions::lease`]: the session now holds the
    /// `len` bytes written, and `hasher`, if given, is the sha256 of exactly
    /// those. Returns the session's length.
    pub(crate) fn end_lease(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        len: u64,
        hasher: Option<Hasher>,
    ) -> Result<u64> {
        let session = self.in_repo(repo, id)?;
        let mut upload = session.lock();
        assert!(upload.is_leased(), "only a leased session's lease ends");
        upload.end_lease(self.files(), len, hasher)?;
        Ok(upload.len())
    }

    /// Appends `data`, which the client says starts at byte `at`: see
    /// `Engine::upload_append`.
    pub(crate) fn append(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
        data: &[u8],
    ) -> Result<u64> {
        let session = self.in_repo(repo, id)?;
        let mut upload = lock_idle(&session)?;
        ends_at(&upload, at)?;
        upload.append(self.files(), data)?;
        Ok(upload.len())
    }
}
