//! The engine's upload methods: start sessions (within the caps), feed
//! them, and finish them into the blob store, or cancel and purge them. The
//! sessions themselves, their files and the body pipeline are `upload/`.

use std::sync::MutexGuard;

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::names::RepositoryName;
use crate::upload::{lock_idle, BodyWriter, Upload, UploadId, UploadLimits};

use super::{link_op, Engine};

impl Engine {
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
    pub fn upload_body(&self, repo: &RepositoryName, id: UploadId, at: u64) -> BodyWriter {
        BodyWriter::new(&self.uploads, repo, id, at)
    }

    /// Bytes an upload session holds.
    pub fn upload_len(&self, repo: &RepositoryName, id: UploadId) -> Result<u64> {
        let session = self.uploads.in_repo(repo, id)?;
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
        self.uploads.append(repo, id, at, data)
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
        let session = self.uploads.in_repo(repo, id)?;
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
        let session = self.uploads.in_repo(repo, id)?;
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
        let session = self.uploads.in_repo(repo, id)?;
        self.uploads.end(id);
        let mut upload = session.lock();
        upload.remove(self.uploads.files())?;
        Ok(())
    }
}

#[cfg(test)]
impl Engine {
    /// [`crate::upload::Sessions::lease`], for the engine's tests.
    pub(crate) fn lease_upload(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> Result<crate::upload::UploadLease> {
        self.uploads.lease(repo, id, at)
    }

    /// [`crate::upload::Sessions::end_lease`], for the engine's tests.
    pub(crate) fn end_upload_lease(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        len: u64,
        hasher: Option<crate::digest::Hasher>,
    ) -> Result<u64> {
        self.uploads.end_lease(repo, id, len, hasher)
    }
}
