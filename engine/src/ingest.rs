//! Content that arrives from elsewhere rather than through an upload session
//! (a pull-through cache's upstream): staging files written while they are
//! hashed, committing a verified staged blob, storing a manifest whose blobs
//! are fetched later, and evicting cached content.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::metalog::Op;
use crate::names::{Reference, RepositoryName};
use crate::upload::UploadId;
use crate::{Engine, StoredManifest};

/// A new, empty file in the data directory's `tmp/` (on the store's file
/// system, so committing it is a rename). Removed when dropped unless
/// [`Engine::ingest_staged`] took it; whatever is left after a crash is
/// removed when the engine next opens.
#[derive(Debug)]
pub struct StagingFile {
    file: File,
    path: PathBuf,
    committed: bool,
}

impl StagingFile {
    /// The file, open for reading and writing.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where it is; readers may open it while it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What [`Engine::evict`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Digests whose links, manifests and bytes were removed.
    pub evicted: Vec<Digest>,
    /// Sum of their recorded lengths.
    pub bytes: u64,
}

impl Engine {
    /// Creates an empty staging file for content about to arrive.
    pub fn staging_file(&self) -> Result<StagingFile> {
        let path = self
            .root
            .join("tmp")
            .join(format!("staged-{}", UploadId::random()));
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(StagingFile {
            file,
            path,
            committed: false,
        })
    }

    /// Stores the staged bytes as blob `digest`, linked into `repo`, and
    /// returns its length once the bytes and the link are durable.
    ///
    /// The caller guarantees that the staged bytes hash to `digest` (it
    /// hashed them as they arrived); the length is checked against
    /// `expected_len`. Small blobs are copied into a lane's active segment,
    /// large ones are fdatasynced and renamed into place (no second copy).
    pub fn ingest_staged(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        mut staged: StagingFile,
        expected_len: u64,
    ) -> Result<u64> {
        let len = staged.file.metadata()?.len();
        if len != expected_len {
            return Err(EngineError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("staged {digest} holds {len} bytes, expected {expected_len}"),
            )));
        }
        let _gate = self.gate_shared();
        if !self.store.contains(digest) {
            if len <= self.store.opts.small_blob_max {
                let bytes = self.io.read(&staged.path)?;
                self.store.put_small(digest, &bytes)?;
            } else {
                staged.file.sync_data()?;
                self.store.install_large(digest, &staged.path)?;
                staged.committed = true;
            }
        }
        self.link_blob_unless_linked(repo, digest, len)?;
        Ok(len)
    }

    /// Stores a manifest like [`Engine::put_manifest`] (validated, verified
    /// against a digest reference, bytes + record + tag durable together)
    /// but without requiring its blobs and children to be in `repo`: a
    /// pull-through cache fetches those when a client asks for them.
    pub fn cache_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<StoredManifest> {
        self.store_manifest(repo, reference, content_type, body, false)
    }

    /// Removes content outright, whatever references it: every link to each
    /// digest and every manifest with that digest (with the tags naming it)
    /// in every repository, then the bytes. For a cache evicting what has
    /// not been pulled for long; readers that already opened a blob keep a
    /// valid file handle and finish. Unknown digests are ignored.
    pub fn evict(&self, digests: &[Digest]) -> Result<EvictReport> {
        let mut report = EvictReport::default();
        let wanted: BTreeSet<&Digest> = digests.iter().collect();
        let _gate = self
            .gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut ops = Vec::new();
        let mut found: BTreeSet<Digest> = BTreeSet::new();
        {
            let state = self.meta.read();
            for (name, r) in &state.repos {
                for d in &wanted {
                    if let Some(len) = r.blobs.get(*d) {
                        ops.push(Op::UnlinkBlob {
                            repo: name.clone(),
                            digest: (*d).clone(),
                        });
                        if found.insert((*d).clone()) {
                            report.bytes += len;
                        }
                    }
                    if let Some(m) = r.manifests.get(*d) {
                        ops.push(Op::DeleteManifest {
                            repo: name.clone(),
                            digest: (*d).clone(),
                        });
                        if found.insert((*d).clone()) {
                            report.bytes += m.len;
                        }
                    }
                }
            }
        }
        if !ops.is_empty() {
            self.meta.commit(ops)?;
        }
        let gone: Vec<Digest> = wanted.into_iter().cloned().collect();
        self.store.forget(&gone);
        let mut dirs = BTreeSet::new();
        for d in &gone {
            let path = self.store.blob_path(d);
            match self.io.remove_file(&path) {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        dirs.insert(dir.to_owned());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        for dir in dirs {
            self.io.sync_dir(&dir)?;
        }
        report.evicted = found.into_iter().collect();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::EngineOptions;

    fn engine(dir: &Path) -> Engine {
        Engine::open_with(
            dir,
            EngineOptions {
                small_blob_max: 64,
                ..EngineOptions::default()
            },
        )
        .expect("open")
    }

    fn stage(engine: &Engine, bytes: &[u8]) -> StagingFile {
        let staged = engine.staging_file().expect("staging file");
        (&staged.file).write_all(bytes).expect("write");
        staged
    }

    #[test]
    fn staged_blobs_small_and_large_are_stored_linked_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo: RepositoryName = "cache/app".parse().expect("name");
        let small = b"small blob".to_vec();
        let large = vec![7u8; 1000];
        {
            let e = engine(dir.path());
            for bytes in [&small, &large] {
                let d = Digest::sha256_of(bytes);
                let staged = stage(&e, bytes);
                let path = staged.path().to_owned();
                assert_eq!(
                    e.ingest_staged(&repo, &d, staged, bytes.len() as u64)
                        .expect("ingest"),
                    bytes.len() as u64
                );
                assert!(!path.exists(), "the staging file is consumed");
            }
        }
        let e = engine(dir.path());
        for bytes in [&small, &large] {
            let d = Digest::sha256_of(bytes);
            let read = e.open_blob(&repo, &d).expect("linked after reopen");
            let mut buf = vec![0u8; read.len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&read.file, &mut buf, read.offset)
                .expect("read");
            assert_eq!(&buf, bytes);
        }
    }

    #[test]
    fn a_staged_file_of_the_wrong_length_is_refused_and_nothing_is_linked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let repo: RepositoryName = "cache/app".parse().expect("name");
        let d = Digest::sha256_of(b"abc");
        let staged = stage(&e, b"abc");
        let path = staged.path().to_owned();
        assert!(e.ingest_staged(&repo, &d, staged, 4).is_err());
        assert!(e.blob_len(&repo, &d).is_err());
        assert!(!path.exists(), "a refused staging file is removed");
    }

    #[test]
    fn an_abandoned_staging_file_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let staged = stage(&e, b"partial");
        let path = staged.path().to_owned();
        drop(staged);
        assert!(!path.exists());
    }

    fn manifest_over(layer: &Digest, len: usize) -> Vec<u8> {
        let config = Digest::sha256_of(b"{}");
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer.to_string(), "size": len}]
        }))
        .expect("json")
    }

    #[test]
    fn cached_manifests_need_no_blobs_and_eviction_removes_them_with_their_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let repo: RepositoryName = "cache/app".parse().expect("name");
        let layer = vec![1u8; 500];
        let layer_digest = Digest::sha256_of(&layer);
        let body = manifest_over(&layer_digest, layer.len());
        let tag: Reference = "v1".parse().expect("tag");
        assert!(
            e.put_manifest(&repo, &tag, None, &body).is_err(),
            "a push still needs the blobs"
        );
        let stored = e.cache_manifest(&repo, &tag, None, &body).expect("cache");
        assert_eq!(
            &e.manifest(&repo, &tag).expect("by tag").bytes[..],
            &body[..]
        );
        let staged = stage(&e, &layer);
        e.ingest_staged(&repo, &layer_digest, staged, layer.len() as u64)
            .expect("ingest");

        let report = e
            .evict(&[layer_digest.clone(), stored.digest.clone()])
            .expect("evict");
        assert_eq!(report.evicted.len(), 2);
        assert_eq!(report.bytes, (layer.len() + body.len()) as u64);
        assert!(e.open_blob(&repo, &layer_digest).is_err());
        assert!(!e.blob_stored(&layer_digest));
        assert!(e.manifest(&repo, &tag).is_err(), "the tag went with it");
        assert!(e.evict(&[layer_digest]).expect("again").evicted.is_empty());
    }

    #[test]
    fn an_open_blob_stays_readable_after_eviction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path());
        let repo: RepositoryName = "cache/app".parse().expect("name");
        let layer = vec![9u8; 4096];
        let d = Digest::sha256_of(&layer);
        e.ingest_staged(&repo, &d, stage(&e, &layer), layer.len() as u64)
            .expect("ingest");
        let read = e.open_blob(&repo, &d).expect("open");
        e.evict(std::slice::from_ref(&d)).expect("evict");
        let mut buf = vec![0u8; read.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&read.file, &mut buf, read.offset)
            .expect("read after evict");
        assert_eq!(buf, layer);
    }
}
