//! Uploads: blobs being received into sessions, and the `Engine` methods
//! that start, feed, finish, cancel and purge them.
//!
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
mod pipeline;
pub(crate) mod session;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::{Arc, MutexGuard};

pub use block::Block;
pub use session::{UploadId, UploadIdError, UploadLimits};
pub use writer::{BodyWriter, Handed};

use block::BlockWriter;
use session::{Session, Upload};

use crate::digest::{Digest, Hasher};
use crate::engine::link_op;
use crate::error::{EngineError, Result};
use crate::names::RepositoryName;
use crate::Engine;

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

/// A session taken by [`Engine::lease_upload`]: hash blocks with `hasher`
/// and write them with `writer` (on any threads, in file order), then hand
/// both back with [`Engine::end_upload_lease`]. Private to the engine: only
/// the pipeline (and tests) lease sessions.
pub(crate) struct UploadLease {
    /// sha256 of the bytes the session held when leased.
    pub(crate) hasher: Hasher,
    /// Writes blocks into the session's data file.
    pub(crate) writer: BlockWriter,
}

/// Locks an upload session that no bulk writer holds.
fn lock_idle(session: &Session) -> Result<MutexGuard<'_, Upload>> {
    let upload = session.lock();
    if upload.is_leased() {
        return Err(EngineError::UploadBusy);
    }
    Ok(upload)
}

/// `RangeMismatch` unless the session holds exactly `at` bytes (the next
/// byte must go at `at`).
fn ends_at(upload: &Upload, at: u64) -> Result<()> {
    if at != upload.len() {
        return Err(EngineError::RangeMismatch {
            expected: upload.len(),
            got: at,
        });
    }
    Ok(())
}

impl Engine {
    fn session(&self, repo: &RepositoryName, id: UploadId) -> Result<Arc<Session>> {
        let session = self.uploads.get(id).ok_or(EngineError::UploadUnknown)?;
        if session.repo != *repo {
            return Err(EngineError::UploadUnknown);
        }
        Ok(session)
    }

    /// Opens a new upload session in `repo`, with no cap (maintenance and
    /// tests; the API uses [`Engine::start_upload_within`]).
    pub fn start_upload(&self, repo: &RepositoryName) -> Result<UploadId> {
        self.uploads.start(repo, None, None)
    }

    /// Opens a new upload session in `repo` for `client` (an opaque key:
    /// the authenticated user, else the client's address), unless the
    /// store already holds `limits.sessions_max` open sessions or `client`
    /// holds `limits.sessions_per_client_max`: then
    /// [`EngineError::TooManyUploads`] and nothing is created.
    pub fn start_upload_within(
        &self,
        repo: &RepositoryName,
        client: &str,
        limits: UploadLimits,
    ) -> Result<UploadId> {
        self.uploads.start(repo, Some(client), Some(limits))
    }

    /// Open upload sessions.
    pub fn uploads_open(&self) -> usize {
        self.uploads.len()
    }

    /// A writer for a request body into session `id`, whose bytes follow
    /// the `at` bytes the session holds (see [`BodyWriter`]). Nothing is
    /// checked or written until the first block is handed over.
    pub fn upload_body(
        self: &Arc<Self>,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> BodyWriter {
        BodyWriter::new(self, repo, id, at)
    }

    /// Takes the session for a bulk writer: the caller gets the running
    /// sha256 of the `at` bytes the session holds and a [`BlockWriter`] on
    /// its data file, and may hash and write blocks on other threads. Until
    /// [`Engine::end_upload_lease`], every other append, finish or lease of
    /// the session fails with [`EngineError::UploadBusy`]. `RangeMismatch`
    /// if the session does not hold exactly `at` bytes.
    pub(crate) fn lease_upload(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> Result<UploadLease> {
        let session = self.session(repo, id)?;
        let mut upload = lock_idle(&session)?;
        ends_at(&upload, at)?;
        let (hasher, writer) = upload.lease(self.uploads.files())?;
        Ok(UploadLease { hasher, writer })
    }

    /// Ends a lease taken by [`Engine::lease_upload`]: the session now
    /// holds the `len` bytes written, and `hasher`, if given, is the sha256
    /// of exactly those. Returns the session's length.
    pub(crate) fn end_upload_lease(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        len: u64,
        hasher: Option<Hasher>,
    ) -> Result<u64> {
        let session = self.session(repo, id)?;
        let mut upload = session.lock();
        debug_assert!(upload.is_leased(), "only a leased session's lease ends");
        upload.end_lease(self.uploads.files(), len, hasher)?;
        Ok(upload.len())
    }

    /// Bytes an upload session holds.
    pub fn upload_len(&self, repo: &RepositoryName, id: UploadId) -> Result<u64> {
        let session = self.session(repo, id)?;
        let len = session.lock().len();
        Ok(len)
    }

    /// Appends `data`, which the client says starts at byte `at`. Fails with
    /// [`EngineError::RangeMismatch`] unless `at` is exactly where the upload
    /// ends. Returns the new length. Writes go to the page cache; nothing is
    /// durable until [`Engine::finish_upload`].
    pub fn upload_append(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
        data: &[u8],
    ) -> Result<u64> {
        let session = self.session(repo, id)?;
        let mut upload = lock_idle(&session)?;
        ends_at(&upload, at)?;
        upload.append(self.uploads.files(), data)?;
        Ok(upload.len())
    }

    /// Verifies the upload against `expected`, stores it as a blob linked into
    /// `repo`, and closes the session. On a digest mismatch nothing is stored
    /// and the session stays open. Blocks for fsync.
    pub fn finish_upload(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        expected: &Digest,
    ) -> Result<u64> {
        let session = self.session(repo, id)?;
        let _gate = self.gate_shared();
        let mut upload = lock_idle(&session)?;
        let files = self.uploads.files();
        let len = upload.len();
        if len <= self.store.opts.small_blob_max {
            // Small: copied into this thread's lane (group commit); the
            // session file itself never needs an fsync.
            let bytes = upload.read_all(files)?;
            let actual = upload
                .streamed_digest(expected.algorithm())
                .unwrap_or_else(|| Digest::of(expected.algorithm(), &bytes));
            if actual != *expected {
                return Err(EngineError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            self.store
                .put_small_linked(expected, &bytes, vec![link_op(repo, expected, len)])?;
        } else {
            // Large: the session file is the blob; committed by rename.
            let actual = upload.digest_and_sync(files, expected.algorithm())?;
            if actual != *expected {
                return Err(EngineError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            self.uploads.consumed(id, &session)?;
            // The cached descriptor goes before the file is renamed away.
            files.forget(id);
            self.store
                .install_large(expected, &upload.data_path(files))?;
            self.meta.commit(vec![link_op(repo, expected, len)])?;
        }
        self.close_uploaded(id, upload, len)
    }

    /// Like appending `tail` and then [`Engine::finish_upload`], but when the
    /// session holds nothing yet and `tail` is a small blob, the bytes go
    /// straight from memory into a segment: no session file is written,
    /// read back or deleted (a `PUT` carrying a whole small blob).
    pub fn finish_upload_with(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        tail: &[u8],
        expected: &Digest,
    ) -> Result<u64> {
        let session = self.session(repo, id)?;
        let gate = self.gate_shared();
        let mut upload = lock_idle(&session)?;
        let len = tail.len() as u64;
        if upload.len() > 0 || len > self.store.opts.small_blob_max {
            let at = upload.len();
            drop((upload, gate));
            self.upload_append(repo, id, at, tail)?;
            return self.finish_upload(repo, id, expected);
        }
        let actual = Digest::of(expected.algorithm(), tail);
        if actual != *expected {
            // As if appended then refused: the session keeps the bytes.
            upload.append(self.uploads.files(), tail)?;
            return Err(EngineError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.store
            .put_small_linked(expected, tail, vec![link_op(repo, expected, len)])?;
        self.close_uploaded(id, upload, len)
    }

    /// Closes the session of an upload whose blob is stored and linked.
    fn close_uploaded(
        &self,
        id: UploadId,
        mut upload: MutexGuard<'_, Upload>,
        len: u64,
    ) -> Result<u64> {
        let _ = upload.remove(self.uploads.files());
        drop(upload);
        self.uploads.end(id);
        Ok(len)
    }

    /// Removes upload sessions untouched (no bytes received) for longer than
    /// `idle` (registry:2's `storage.maintenance.uploadpurging`). With
    /// `dry_run` nothing is removed. Returns the sessions (to be) purged.
    pub fn purge_uploads(&self, idle: std::time::Duration, dry_run: bool) -> Result<Vec<UploadId>> {
        let now = std::time::SystemTime::now();
        let files = self.uploads.files();
        let mut purged = Vec::new();
        for (id, session) in self.uploads.all() {
            let mut upload = session.lock();
            let touched = upload.touched(files, session.started());
            if now.duration_since(touched).unwrap_or_default() < idle {
                continue;
            }
            purged.push(id);
            if !dry_run {
                let _ = upload.remove(files);
                drop(upload);
                self.uploads.end(id);
            }
        }
        Ok(purged)
    }

    /// Abandons an upload session and deletes its bytes.
    pub fn cancel_upload(&self, repo: &RepositoryName, id: UploadId) -> Result<()> {
        let session = self.session(repo, id)?;
        self.uploads.end(id);
        let mut upload = session.lock();
        upload.remove(self.uploads.files())?;
        Ok(())
    }
}
