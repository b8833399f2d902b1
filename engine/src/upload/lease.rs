//! Leases and appends on open sessions: the session-level operations the
//! body pipeline and the engine's upload methods share (find a session in
//! its repository, lease it to a bulk writer and end the lease, append).

use std::sync::{Arc, MutexGuard};

use super::block::BlockWriter;
use super::session::{Session, Sessions, Upload, UploadId};
use crate::digest::Hasher;
use crate::error::{EngineError, Result};
use crate::names::RepositoryName;

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
