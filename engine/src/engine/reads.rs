//! The engine's reads: catalog and tag listings, blob lengths and read
//! handles, and manifests (from the manifest cache after their first pull).

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::names::{Reference, RepositoryName};

use super::{missing, names_after, BlobRead, Engine, Manifest};

impl Engine {
    // ----- reads -------------------------------------------------------

    /// Every repository name, sorted.
    pub fn catalog(&self) -> Vec<String> {
        self.visit_catalog(None, |names| names.map(str::to_owned).collect())
    }

    /// The repository's tags, sorted bytewise.
    pub fn tags(&self, repo: &RepositoryName) -> Result<Vec<String>> {
        self.visit_tags(repo, None, |tags| tags.map(str::to_owned).collect())
    }

    /// Calls `visit` with every repository name after `after` (all of them
    /// when `None`), sorted bytewise, without copying them: `visit` runs
    /// under the state's read lock, so it must be short and do no I/O
    /// (commits wait for it).
    pub fn visit_catalog<R>(
        &self,
        after: Option<&str>,
        visit: impl FnOnce(&mut dyn Iterator<Item = &str>) -> R,
    ) -> R {
        let state = self.meta.read();
        let mut names = names_after(&state.repos, after);
        visit(&mut names)
    }

    /// Calls `visit` with the repository's tags after `after` (all of them
    /// when `None`), sorted bytewise, without copying them; under the
    /// state's read lock, as [`Engine::visit_catalog`].
    pub fn visit_tags<R>(
        &self,
        repo: &RepositoryName,
        after: Option<&str>,
        visit: impl FnOnce(&mut dyn Iterator<Item = &str>) -> R,
    ) -> Result<R> {
        let state = self.meta.read();
        let r = state
            .repos
            .get(repo.as_str())
            .ok_or(EngineError::NameUnknown)?;
        let mut tags = names_after(&r.tags, after);
        Ok(visit(&mut tags))
    }

    /// The length of a blob linked into `repo` (manifests count as blobs).
    pub fn blob_len(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        let state = self.meta.read();
        let r = state.repos.get(repo.as_str());
        r.and_then(|r| {
            r.blobs
                .get(digest)
                .copied()
                .or_else(|| r.manifests.get(digest).map(|m| m.len))
        })
        .ok_or_else(|| EngineError::BlobUnknown(digest.clone()))
    }

    /// Whether the store holds the bytes of `digest` (in a segment or as a
    /// file), whatever repository links it. A lookup in the in-memory index,
    /// then at most one `stat`.
    pub fn blob_stored(&self, digest: &Digest) -> bool {
        self.store.contains(digest)
    }

    /// Opens a blob linked into `repo` for reading.
    pub fn open_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobRead> {
        let len = self.blob_len(repo, digest)?;
        let (file, offset, stored_len) = self
            .store
            .open_blob(digest)?
            .ok_or_else(|| missing(digest))?;
        if stored_len != len {
            return Err(EngineError::Corrupt(format!(
                "{digest} is stored with {stored_len} bytes, recorded as {len}"
            )));
        }
        Ok(BlobRead { file, offset, len })
    }

    pub(crate) fn read_stored(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.store.read(digest)?.ok_or_else(|| missing(digest))
    }

    pub(crate) fn resolve(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(Digest, String)> {
        let state = self.meta.read();
        let r = state
            .repos
            .get(repo.as_str())
            .ok_or(EngineError::NameUnknown)?;
        let digest = match reference {
            Reference::Tag(tag) => r
                .tags
                .get(tag.as_str())
                .ok_or(EngineError::ManifestUnknown)?,
            Reference::Digest(digest) => digest,
        };
        let record = r
            .manifests
            .get(digest)
            .ok_or(EngineError::ManifestUnknown)?;
        Ok((digest.clone(), record.media_type.clone()))
    }

    /// Manifest bytes held in memory for serving (at most 8 MiB).
    pub fn manifest_cache_bytes(&self) -> usize {
        self.manifests.bytes()
    }

    /// The digest a tag or digest reference names in `repo`, from memory
    /// (no read of the manifest's bytes).
    pub fn manifest_digest(&self, repo: &RepositoryName, reference: &Reference) -> Result<Digest> {
        self.resolve(repo, reference).map(|(digest, _)| digest)
    }

    /// A manifest by tag or digest, with its exact bytes: from memory when
    /// it was served lately, else read (and checksummed) from the store.
    pub fn manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<Manifest> {
        let (digest, media_type) = self.resolve(repo, reference)?;
        let key = digest.to_raw();
        let bytes = match self.manifests.get(&key) {
            Some(bytes) => bytes,
            None => {
                let bytes: Arc<[u8]> = self.read_stored(&digest)?.into();
                self.manifests.insert(key, bytes.clone());
                bytes
            }
        };
        Ok(Manifest {
            digest,
            media_type,
            bytes,
        })
    }
}
