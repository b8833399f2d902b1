//! The engine's blob writes besides uploads (those are in `upload/`):
//! mounts across repositories, and unlinking.

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::metalog::Op;
use crate::names::RepositoryName;

use super::{link_op, Engine};

impl Engine {
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
