//! berth's storage engine: content-addressed blobs, repositories, tags,
//! manifests and upload sessions under one data directory. No network code:
//! the server translates HTTP into calls on [`Engine`].
//!
//! Layout under the root directory:
//!
//! ```text
//! blobs/<alg>/<hex[0..2]>/<hex>   one file per blob or manifest, named by digest
//! meta/log                        the metadata log (see `metalog`)
//! uploads/<uuid>/{data,repo}      open upload sessions
//! tmp/                            files being written, removed on open
//! ```
//!
//! Invariants:
//! - A blob file's bytes hash to its name: files are written elsewhere,
//!   verified, fsynced and renamed into place.
//! - The log names only blob files that are already durable.
//! - A caller is answered only after its metadata record is durable
//!   (group commit); in-memory state never runs ahead of the log.
//! - Blobs are visible only in repositories that link them.
//!
//! Blocking: write operations fsync and block the calling thread; call them
//! from a blocking pool, never from an event loop. Reads only take a
//! read lock and open files.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod commit;
pub mod digest;
mod error;
mod fsutil;
pub mod manifest;
pub mod metalog;
pub mod names;
pub mod state;
mod uploads;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{EngineError, Result};
pub use manifest::{ManifestError, ManifestKind, ParsedManifest};
pub use names::{NameError, Reference, ReferenceError, RepositoryName, Tag, TagError};
pub use uploads::{UploadId, UploadIdError};

use commit::Committer;
use metalog::{LogFile, Op};
use state::State;
use uploads::Upload;

/// A byte range of a file holding one blob. With the file-per-blob layout
/// `offset` is 0; a segment store returns a shared segment file and the
/// blob's offset in it. Either way the caller may send the range with
/// sendfile/splice.
#[derive(Debug)]
pub struct BlobRead {
    /// An open file containing the blob.
    pub file: File,
    /// Where the blob starts in `file`.
    pub offset: u64,
    /// The blob's length in bytes.
    pub len: u64,
}

/// A manifest as stored: its exact bytes and how to serve them.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// The media type to serve it with.
    pub media_type: String,
    /// The exact bytes that were pushed.
    pub bytes: Vec<u8>,
}

/// What a successful manifest push stored.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its subject, when it has one (the server echoes it as OCI-Subject).
    pub subject: Option<Digest>,
}

/// A manifest that refers to another through its `subject`, described as
/// the referrers API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    /// The referring manifest's media type.
    pub media_type: String,
    /// The referring manifest's digest.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// Its `artifactType`, else (for images) its config media type.
    pub artifact_type: Option<String>,
    /// Its top-level annotations, copied from the stored bytes.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What happened to a torn or corrupt metadata-log tail on open.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenReport {
    /// Metadata records replayed.
    pub records: usize,
    /// Bytes dropped from the log's tail (a write cut short by a crash).
    pub torn_tail_bytes: u64,
    /// Upload sessions resumed from an earlier run.
    pub uploads_resumed: usize,
}

/// The storage engine. Shared by all event loops (`Arc<Engine>`); every
/// method is safe to call concurrently.
pub struct Engine {
    root: PathBuf,
    meta: Committer,
    uploads: Mutex<HashMap<UploadId, Arc<Mutex<Upload>>>>,
    report: OpenReport,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// Opens (creating if needed) the store under `root`: replays the
    /// metadata log, truncating a torn tail, and resumes upload sessions.
    pub fn open(root: &Path) -> Result<Engine> {
        for dir in ["blobs", "meta", "uploads", "tmp"] {
            fsutil::create_dir_durable(&root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        let (log, batches, torn_tail_bytes) = LogFile::open(&root.join("meta/log"))?;
        let mut state = State::default();
        for op in batches.iter().flatten() {
            state.apply(op);
        }
        let mut uploads = HashMap::new();
        for entry in fs::read_dir(root.join("uploads"))? {
            let path = entry?.path();
            let id = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<UploadId>().ok());
            match (id, Upload::reopen(&path)) {
                (Some(id), Some(upload)) => {
                    uploads.insert(id, Arc::new(Mutex::new(upload)));
                }
                _ => {
                    let _ = fs::remove_dir_all(&path);
                }
            }
        }
        let report = OpenReport { records: batches.len(), torn_tail_bytes, uploads_resumed: uploads.len() };
        Ok(Engine { root: root.to_owned(), meta: Committer::new(log, state), uploads: Mutex::new(uploads), report })
    }

    /// What opening the store found.
    pub fn open_report(&self) -> OpenReport {
        self.report
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs").join(digest.algorithm().name()).join(&hex[..2]).join(hex)
    }

    // ----- reads -------------------------------------------------------

    /// Every repository name, sorted.
    pub fn catalog(&self) -> Vec<String> {
        self.meta.read().repos.keys().cloned().collect()
    }

    /// The repository's tags, sorted bytewise.
    pub fn tags(&self, repo: &RepositoryName) -> Result<Vec<String>> {
        let state = self.meta.read();
        let r = state.repos.get(repo.as_str()).ok_or(EngineError::NameUnknown)?;
        Ok(r.tags.keys().cloned().collect())
    }

    /// The length of a blob linked into `repo` (manifests count as blobs).
    pub fn blob_len(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        let state = self.meta.read();
        let r = state.repos.get(repo.as_str());
        r.and_then(|r| r.blobs.get(digest).copied().or_else(|| r.manifests.get(digest).map(|m| m.len)))
            .ok_or_else(|| EngineError::BlobUnknown(digest.clone()))
    }

    /// Opens a blob linked into `repo` for reading.
    pub fn open_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<BlobRead> {
        let len = self.blob_len(repo, digest)?;
        let file = File::open(self.blob_path(digest)).map_err(|e| self.missing_file(digest, e))?;
        Ok(BlobRead { file, offset: 0, len })
    }

    fn missing_file(&self, digest: &Digest, e: io::Error) -> EngineError {
        if e.kind() == io::ErrorKind::NotFound {
            EngineError::Corrupt(format!("blob file for {digest} is missing"))
        } else {
            EngineError::Io(e)
        }
    }

    fn resolve(&self, repo: &RepositoryName, reference: &Reference) -> Result<(Digest, String)> {
        let state = self.meta.read();
        let r = state.repos.get(repo.as_str()).ok_or(EngineError::NameUnknown)?;
        let digest = match reference {
            Reference::Tag(tag) => r.tags.get(tag.as_str()).ok_or(EngineError::ManifestUnknown)?,
            Reference::Digest(digest) => digest,
        };
        let record = r.manifests.get(digest).ok_or(EngineError::ManifestUnknown)?;
        Ok((digest.clone(), record.media_type.clone()))
    }

    /// A manifest by tag or digest, with its exact bytes.
    pub fn manifest(&self, repo: &RepositoryName, reference: &Reference) -> Result<Manifest> {
        let (digest, media_type) = self.resolve(repo, reference)?;
        let bytes = fs::read(self.blob_path(&digest)).map_err(|e| self.missing_file(&digest, e))?;
        Ok(Manifest { digest, media_type, bytes })
    }

    // ----- uploads -----------------------------------------------------

    fn session(&self, repo: &RepositoryName, id: UploadId) -> Result<Arc<Mutex<Upload>>> {
        let session = lock(&self.uploads).get(&id).cloned().ok_or(EngineError::UploadUnknown)?;
        if lock(&session).repo != *repo {
            return Err(EngineError::UploadUnknown);
        }
        Ok(session)
    }

    /// Opens a new upload session in `repo`.
    pub fn start_upload(&self, repo: &RepositoryName) -> Result<UploadId> {
        let id = UploadId::random();
        let upload = Upload::create(&self.root.join("uploads"), id, repo.clone())?;
        lock(&self.uploads).insert(id, Arc::new(Mutex::new(upload)));
        Ok(id)
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
    pub fn upload_append(&self, repo: &RepositoryName, id: UploadId, at: u64, data: &[u8]) -> Result<u64> {
        let session = self.session(repo, id)?;
        let mut upload = lock(&session);
        if at != upload.len() {
            return Err(EngineError::RangeMismatch { expected: upload.len(), got: at });
        }
        upload.append(data)?;
        Ok(upload.len())
    }

    /// Verifies the upload against `expected`, stores it as a blob linked into
    /// `repo`, and closes the session. On a digest mismatch nothing is stored
    /// and the session stays open. Blocks for fsync.
    pub fn finish_upload(&self, repo: &RepositoryName, id: UploadId, expected: &Digest) -> Result<u64> {
        let session = self.session(repo, id)?;
        let mut upload = lock(&session);
        let actual = upload.digest_and_sync(expected.algorithm())?;
        if actual != *expected {
            return Err(EngineError::DigestMismatch { expected: expected.clone(), actual });
        }
        let len = upload.len();
        fsutil::install_file(&upload.data_path(), &self.blob_path(expected))?;
        self.meta.commit(vec![Op::LinkBlob { repo: repo.to_string(), digest: expected.clone(), len }])?;
        let _ = fs::remove_dir_all(upload.dir());
        drop(upload);
        lock(&self.uploads).remove(&id);
        Ok(len)
    }

    /// Abandons an upload session and deletes its bytes.
    pub fn cancel_upload(&self, repo: &RepositoryName, id: UploadId) -> Result<()> {
        let session = self.session(repo, id)?;
        lock(&self.uploads).remove(&id);
        let upload = lock(&session);
        fs::remove_dir_all(upload.dir())?;
        Ok(())
    }

    /// Links a blob already stored in `from` into `repo` without moving bytes.
    /// Returns its length; [`EngineError::BlobUnknown`] if `from` lacks it.
    pub fn mount_blob(&self, repo: &RepositoryName, from: &RepositoryName, digest: &Digest) -> Result<u64> {
        let len = self.blob_len(from, digest)?;
        if self.blob_len(repo, digest).is_err() {
            self.meta.commit(vec![Op::LinkBlob { repo: repo.to_string(), digest: digest.clone(), len }])?;
        }
        Ok(len)
    }

    /// Links a blob into `repo` from wherever it is already stored, when the
    /// client names no source repository (automatic cross-mount). Returns its
    /// length; [`EngineError::BlobUnknown`] if no repository links it.
    pub fn mount_blob_from_any(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        let source = {
            let state = self.meta.read();
            state.repos.iter().find(|(_, r)| r.blobs.contains_key(digest)).map(|(name, _)| name.clone())
        };
        let source: RepositoryName = source
            .and_then(|name| name.parse().ok())
            .ok_or_else(|| EngineError::BlobUnknown(digest.clone()))?;
        self.mount_blob(repo, &source, digest)
    }

    // ----- manifests and tags ------------------------------------------

    /// Manifests in `repo` whose `subject` is `subject`, optionally only those
    /// of one artifact type, sorted by digest. An unknown repository or
    /// subject has no referrers (an empty list, not an error).
    pub fn referrers(&self, repo: &RepositoryName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let mut found: Vec<(Digest, state::ManifestRecord)> = {
            let state = self.meta.read();
            let Some(r) = state.repos.get(repo.as_str()) else { return Ok(Vec::new()) };
            r.manifests
                .iter()
                .filter(|(_, m)| m.subject.as_ref() == Some(subject))
                .filter(|(_, m)| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
                .map(|(d, m)| (d.clone(), m.clone()))
                .collect()
        };
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(found.len());
        for (digest, record) in found {
            let bytes = fs::read(self.blob_path(&digest)).map_err(|e| self.missing_file(&digest, e))?;
            let annotations = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("annotations").and_then(|a| a.as_object().cloned()));
            out.push(Referrer {
                media_type: record.media_type,
                digest,
                size: record.len,
                artifact_type: record.artifact_type,
                annotations,
            });
        }
        Ok(out)
    }

    /// Validates and stores a manifest pushed as `reference` with the given
    /// Content-Type. Verifies the body against a digest reference, refuses
    /// manifests whose blobs or children are not in `repo`, and makes the
    /// bytes, the manifest record and the tag durable together: after a
    /// crash the tag update is wholly there or not at all. Blocks for fsync.
    pub fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<StoredManifest> {
        let parsed = manifest::parse_manifest(content_type, body)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), body);
                if actual != *expected {
                    return Err(EngineError::DigestMismatch { expected: expected.clone(), actual });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(body),
        };
        {
            let state = self.meta.read();
            let r = state.repos.get(repo.as_str());
            for blob in &parsed.blobs {
                if !r.is_some_and(|r| r.blobs.contains_key(blob)) {
                    return Err(EngineError::ManifestBlobUnknown(blob.clone()));
                }
            }
            for child in &parsed.children {
                if !r.is_some_and(|r| r.manifests.contains_key(child)) {
                    return Err(EngineError::ManifestBlobUnknown(child.clone()));
                }
            }
        }
        let path = self.blob_path(&digest);
        if !path.exists() {
            let tmp = self.root.join("tmp").join(UploadId::random().to_string());
            fs::write(&tmp, body)?;
            File::open(&tmp)?.sync_data()?;
            fsutil::install_file(&tmp, &path)?;
        }
        let mut references = parsed.blobs.clone();
        references.extend(parsed.children.iter().cloned());
        let mut ops = vec![Op::PutManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
            len: body.len() as u64,
            media_type: parsed.media_type,
            references,
            subject: parsed.subject.clone(),
            artifact_type: parsed.artifact_type,
        }];
        if let Reference::Tag(tag) = reference {
            ops.push(Op::SetTag { repo: repo.to_string(), tag: tag.to_string(), digest: digest.clone() });
        }
        self.meta.commit(ops)?;
        Ok(StoredManifest { digest, subject: parsed.subject })
    }

    /// Deletes a manifest by digest, and every tag pointing at it.
    pub fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.resolve(repo, &Reference::Digest(digest.clone()))?;
        self.meta.commit(vec![Op::DeleteManifest { repo: repo.to_string(), digest: digest.clone() }])
    }

    /// Deletes a tag; the manifest it named stays.
    pub fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<()> {
        self.resolve(repo, &Reference::Tag(tag.clone()))?;
        self.meta.commit(vec![Op::DeleteTag { repo: repo.to_string(), tag: tag.to_string() }])
    }

    /// Unlinks a blob from `repo`. Its bytes stay until garbage collection.
    pub fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let state = self.meta.read();
        let linked = state.repos.get(repo.as_str()).is_some_and(|r| r.blobs.contains_key(digest));
        drop(state);
        if !linked {
            return Err(EngineError::BlobUnknown(digest.clone()));
        }
        self.meta.commit(vec![Op::UnlinkBlob { repo: repo.to_string(), digest: digest.clone() }])
    }
}

#[cfg(test)]
mod tests;
