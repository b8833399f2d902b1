//! The engine's blob writes: upload sessions (start, append, lease, finish,
//! purge, cancel), mounts across repositories, and unlinking.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::digest::{Digest, Hasher};
use crate::error::{EngineError, Result};
use crate::metalog::Op;
use crate::names::RepositoryName;
use crate::uploads::{Upload, UploadId};

use super::{ends_at, link_op, lock, lock_idle, Engine, UploadLease};

impl Engine {
    // ----- uploads -----------------------------------------------------

    pub(crate) fn session(
        &self,
        repo: &RepositoryName,
        id: UploadId,
    ) -> Result<Arc<Mutex<Upload>>> {
        let session = lock(&self.uploads)
            .get(&id)
            .cloned()
            .ok_or(EngineError::UploadUnknown)?;
        if lock(&session).repo != *repo {
            return Err(EngineError::UploadUnknown);
        }
        Ok(session)
    }

    /// Opens a new upload session in `repo`.
    pub fn start_upload(&self, repo: &RepositoryName) -> Result<UploadId> {
        let id = UploadId::random();
        let upload = Upload::create(&self.root.join("uploads"), id, repo.clone());
        self.journal.start(id, &upload)?;
        lock(&self.uploads).insert(id, Arc::new(Mutex::new(upload)));
        Ok(id)
    }

    /// Takes the session for a bulk writer ([`crate::bulk`]): the caller gets the
    /// running sha256 of the `at` bytes the session holds and a
    /// [`crate::BlockWriter`] on its data file, and may hash and write blocks on
    /// other threads. Until [`Engine::end_upload_lease`], every other
    /// append, finish or lease of the session fails with
    /// [`EngineError::UploadBusy`]. `RangeMismatch` if the session does not
    /// hold exactly `at` bytes.
    pub fn lease_upload(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> Result<UploadLease> {
        let session = self.session(repo, id)?;
        let mut upload = lock_idle(&session)?;
        ends_at(&upload, at)?;
        let (hasher, writer) = upload.lease()?;
        Ok(UploadLease { hasher, writer })
    }

    /// Ends a lease taken by [`Engine::lease_upload`]: the session now
    /// holds the `len` bytes written, and `hasher`, if given, is the sha256
    /// of exactly those. Returns the session's length.
    pub fn end_upload_lease(
        &self,
        repo: &RepositoryName,
        id: UploadId,
        len: u64,
        hasher: Option<Hasher>,
    ) -> Result<u64> {
        let session = self.session(repo, id)?;
        let mut upload = lock(&session);
        upload.end_lease(len, hasher)?;
        Ok(upload.len())
    }

    /// Bytes an upload session holds.
    pub fn upload_len(&self, repo: &RepositoryName, id: UploadId) -> Result<u64> {
        let session = self.session(repo, id)?;
        let len = lock(&session).len();
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
        upload.append(data)?;
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
        let len = upload.len();
        if len <= self.store.opts.small_blob_max {
            // Small: copied into this thread's lane (group commit); the
            // session file itself never needs an fsync.
            let bytes = upload.read_all()?;
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
            let actual = upload.digest_and_sync(expected.algorithm())?;
            if actual != *expected {
                return Err(EngineError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
            self.journal.consumed(id)?;
            self.store.install_large(expected, upload.data_path())?;
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
            upload.append(tail)?;
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
    pub(crate) fn close_uploaded(
        &self,
        id: UploadId,
        mut upload: MutexGuard<'_, Upload>,
        len: u64,
    ) -> Result<u64> {
        let _ = upload.remove();
        drop(upload);
        lock(&self.uploads).remove(&id);
        self.journal.end(id);
        Ok(len)
    }

    /// Removes upload sessions untouched (no bytes received) for longer than
    /// `idle` (registry:2's `storage.maintenance.uploadpurging`). With
    /// `dry_run` nothing is removed. Returns the sessions (to be) purged.
    pub fn purge_uploads(&self, idle: std::time::Duration, dry_run: bool) -> Result<Vec<UploadId>> {
        let now = std::time::SystemTime::now();
        let sessions: Vec<(UploadId, Arc<Mutex<Upload>>)> = lock(&self.uploads)
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut purged = Vec::new();
        for (id, session) in sessions {
            let mut upload = lock(&session);
            let touched = upload.touched();
            if now.duration_since(touched).unwrap_or_default() < idle {
                continue;
            }
            purged.push(id);
            if !dry_run {
                lock(&self.uploads).remove(&id);
                let _ = upload.remove();
                self.journal.end(id);
            }
        }
        Ok(purged)
    }

    /// Abandons an upload session and deletes its bytes.
    pub fn cancel_upload(&self, repo: &RepositoryName, id: UploadId) -> Result<()> {
        let session = self.session(repo, id)?;
        lock(&self.uploads).remove(&id);
        let mut upload = lock(&session);
        self.journal.end(id);
        upload.remove()?;
        Ok(())
    }

    /// Links a blob already stored in `from` into `repo` without moving bytes.
    /// Returns its length; [`EngineError::BlobUnknown`] if `from` lacks it.
    pub fn mount_blob(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<u64> {
        let _gate = self.gate_shared();
        self.mount_blob_locked(repo, from, digest)
    }

    pub(crate) fn mount_blob_locked(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<u64> {
        let len = self.blob_len(from, digest)?;
        self.link_blob_unless_linked(repo, digest, len)?;
        Ok(len)
    }

    /// Durably links a stored blob of `len` bytes into `repo`, unless the
    /// repository already has it. Callers hold the gate shared.
    pub(crate) fn link_blob_unless_linked(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        len: u64,
    ) -> Result<()> {
        if self.blob_len(repo, digest).is_ok() {
            return Ok(());
        }
        self.meta.commit(vec![link_op(repo, digest, len)])
    }

    /// Links a blob into `repo` from wherever it is already stored, when the
    /// client names no source repository (automatic cross-mount). Returns its
    /// length; [`EngineError::BlobUnknown`] if no repository links it.
    pub fn mount_blob_from_any(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        let _gate = self.gate_shared();
        let source = {
            let state = self.meta.read();
            state
                .repos
                .iter()
                .find(|(_, r)| r.blobs.contains_key(digest))
                .map(|(name, _)| name.clone())
        };
        let source: RepositoryName = source
            .and_then(|name| name.parse().ok())
            .ok_or_else(|| EngineError::BlobUnknown(digest.clone()))?;
        self.mount_blob_locked(repo, &source, digest)
    }

    /// Unlinks a blob from `repo`. Its bytes stay until garbage collection.
    pub fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let state = self.meta.read();
        let linked = state
            .repos
            .get(repo.as_str())
            .is_some_and(|r| r.blobs.contains_key(digest));
        drop(state);
        if !linked {
            return Err(EngineError::BlobUnknown(digest.clone()));
        }
        self.meta.commit(vec![Op::UnlinkBlob {
            repo: repo.to_string(),
            digest: digest.clone(),
        }])
    }
}
