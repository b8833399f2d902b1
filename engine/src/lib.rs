//! berth's storage engine: content-addressed blobs, repositories, tags,
//! manifests and upload sessions under one data directory. No network code:
//! the server translates HTTP into calls on [`Engine`]. The full design
//! (byte layouts, commit protocol, recovery, GC) is
//! `docs/design/segment-store.md`.
//!
//! Layout under the root directory:
//!
//! ```text
//! segments/<n>.seg                 append-only segment files of blob records (`segment`)
//! segments/active                  the write lanes' active segments (`active_list`)
//! blobs/<alg>/<hex[0..2]>/<hex>    one file per large blob (> small_blob_max), named by digest
//! meta/log                         the metadata log (`metalog`)
//! uploads/sessions, <uuid>.data    open upload sessions (journal, received bytes)
//! tmp/                             files being written, removed on open
//! ```
//!
//! Invariants:
//! - Content is self-describing: a segment record carries its digest,
//!   length and crc32c, so the digest index is rebuilt from the segments on
//!   open; a torn tail of any lane's active segment is truncated, a damaged
//!   record elsewhere is isolated and reported ([`OpenReport`]), never
//!   served.
//! - Stored bytes hash to their digest: verified before anything is written.
//!   Small blobs are appended to the active segment of the calling thread's
//!   write lane (one lane per core by default, each with its own group
//!   commit: one fdatasync for all concurrent appends on the lane); large
//!   ones are fdatasynced and renamed into `blobs/` (no second copy). A blob
//!   is stored once, across lanes too.
//! - Content is durable before the metadata record naming it; a caller is
//!   answered only after its metadata record is durable (group commit); the
//!   in-memory state never runs ahead of the log.
//! - Blobs are visible only in repositories that link them.
//! - [`Engine::garbage_collect`] deletes only what no live metadata names and
//!   keeps links younger than its grace period; [`Engine::scrub`] re-reads
//!   and verifies everything.
//!
//! Blocking: write operations fsync and block the calling thread; call them
//! from a blocking pool, never from an event loop. Reads only take a
//! read lock and open (or `dup`) files.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod active_list;
pub mod bulk;
mod commit;
pub mod digest;
mod error;
mod fsutil;
pub mod gc;
mod index;
mod ingest;
mod lane;
pub mod manifest;
mod manifest_cache;
pub mod metalog;
#[doc(hidden)]
pub mod model_check;
pub mod names;
pub mod scrub;
pub mod segment;
mod snapshot;
pub mod state;
mod store;
mod uploads;

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use bulk::{Block, BlockWriter};
pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{EngineError, Result};
pub use gc::{GcOptions, GcReport, RepoDigest, SegmentCompaction};
pub use ingest::{EvictReport, StagingFile};
pub use manifest::{ManifestError, ManifestKind, ParsedManifest};
pub use names::{NameError, Reference, ReferenceError, RepositoryName, Tag, TagError};
pub use scrub::{BlobLocation, ProblemKind, RepoReference, ScrubProblem, ScrubReport};
pub use store::{DamagedRecord, EngineOptions, ACTIVE_SEGMENTS_MAX};
pub use uploads::{UploadId, UploadIdError};

use commit::Committer;
use metalog::{LogFile, Op};
use state::State;
use store::BlobStore;
use uploads::{Journal, Upload};

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
    /// The exact bytes that were pushed (shared with the manifest cache).
    pub bytes: Arc<[u8]>,
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
    /// Segment index entries loaded from the index snapshot (not scanned).
    pub snapshot_entries: usize,
    /// Bytes dropped from the log's tail (a write cut short by a crash;
    /// the zero padding written ahead of the records is not counted).
    pub torn_tail_bytes: u64,
    /// Upload sessions resumed from an earlier run.
    pub uploads_resumed: usize,
    /// Segment files found.
    pub segments: usize,
    /// Valid segment records found (including superseded copies).
    pub segment_records: usize,
    /// Bytes dropped from the tails of the lanes' active segments (appends
    /// cut short by a crash; never acknowledged).
    pub segment_torn_tail_bytes: u64,
    /// Damaged segment ranges isolated (skipped, never served); details in
    /// [`Engine::damaged_records`].
    pub damaged_records: usize,
    /// Metadata records dropped because the segment bytes they name did not
    /// survive a crash (written in the round the crash cut short, so never
    /// acknowledged); the log is rewritten without them.
    pub unacknowledged_records_dropped: usize,
}

/// The storage engine. Shared by all event loops (`Arc<Engine>`); every
/// method is safe to call concurrently.
pub struct Engine {
    root: PathBuf,
    meta: Arc<Committer>,
    store: BlobStore,
    uploads: Mutex<HashMap<UploadId, Arc<Mutex<Upload>>>>,
    /// Where upload sessions are recorded (see `uploads`).
    journal: Journal,
    report: OpenReport,
    damaged: Vec<DamagedRecord>,
    /// Writes that add references (finish_upload, mounts, put_manifest) hold
    /// this shared; garbage collection holds it exclusively while it decides
    /// what is garbage and commits that decision, so no push can link a blob
    /// it is about to delete.
    gate: RwLock<()>,
    /// One garbage collection at a time.
    gc_lock: Mutex<()>,
    /// Exclusive lock on `<root>/lock`, held while the engine is open: one
    /// process at a time owns a data directory.
    _dir_lock: File,
    /// Bytes of recently served manifests.
    manifests: manifest_cache::ManifestCache,
}

/// The op that links a stored blob of `len` bytes into `repo`, now.
fn link_op(repo: &RepositoryName, digest: &Digest, len: u64) -> Op {
    Op::LinkBlob {
        repo: repo.to_string(),
        digest: digest.clone(),
        len,
        at: Some(unix_now()),
        written: None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Locks an upload session that no bulk writer holds.
fn lock_idle(session: &Mutex<Upload>) -> Result<MutexGuard<'_, Upload>> {
    let upload = lock(session);
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

/// A session taken by [`Engine::lease_upload`]: hash blocks with `hasher`
/// and write them with `writer` (on any threads, in file order), then hand
/// both back with [`Engine::end_upload_lease`].
pub struct UploadLease {
    /// sha256 of the bytes the session held when leased.
    pub hasher: Hasher,
    /// Writes blocks into the session's data file.
    pub writer: BlockWriter,
}

impl Engine {
    /// Opens (creating if needed) the store under `root` with default
    /// options: scans the segments (rebuilding the blob index, truncating the
    /// torn tail of every lane's active segment, isolating damaged records), replays
    /// the metadata log (truncating a torn tail), and resumes upload sessions.
    pub fn open(root: &Path) -> Result<Engine> {
        Engine::open_with(root, EngineOptions::default())
    }

    /// [`Engine::open`] with explicit options.
    pub fn open_with(root: &Path, options: EngineOptions) -> Result<Engine> {
        let mut options = options;
        options.small_blob_max = options.small_blob_max.min(segment::PAYLOAD_BYTES_MAX);
        options.active_segments = options.active_segments.clamp(1, ACTIVE_SEGMENTS_MAX);
        fsutil::create_dir_durable(root)?;
        let dir_lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))?;
        match dir_lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(EngineError::Locked(root.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(EngineError::Io(e)),
        }
        for dir in ["blobs", "meta", "uploads", "tmp", "segments"] {
            fsutil::create_dir_durable(&root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        let (store, opened) = BlobStore::open(root, options)?;
        let log_path = root.join("meta/log");
        let (log, batches, torn_tail_bytes) = LogFile::open(&log_path)?;
        // A record whose blob bytes were appended in its own commit round is
        // dropped when those bytes are neither indexed nor on disk: the
        // crash cut that round short, so it was never acknowledged (nor was
        // anything after it, since records are applied in log order).
        let replayed = batches.len();
        let batches: Vec<Vec<Op>> = batches
            .into_iter()
            .filter(|ops| {
                ops.iter()
                    .filter_map(Op::written)
                    .all(|(digest, at)| opened.survival.kept(at) || store.contains(digest))
            })
            .collect();
        let dropped = replayed - batches.len();
        let log = if dropped > 0 {
            // For good: the segment may grow past the lost bytes again.
            LogFile::rewrite(&log_path, &batches)?
        } else {
            log
        };
        let mut state = State::default();
        for op in batches.iter().flatten() {
            state.apply(op);
        }
        let (journal, resumed) = Journal::open(&root.join("uploads"))?;
        let uploads: HashMap<UploadId, Arc<Mutex<Upload>>> = resumed
            .into_iter()
            .map(|(id, upload)| (id, Arc::new(Mutex::new(upload))))
            .collect();
        let report = OpenReport {
            records: batches.len(),
            torn_tail_bytes,
            uploads_resumed: uploads.len(),
            segments: opened.segments,
            segment_records: opened.records,
            snapshot_entries: opened.snapshot_entries,
            segment_torn_tail_bytes: opened.torn_tail_bytes,
            damaged_records: opened.damaged.len(),
            unacknowledged_records_dropped: dropped,
        };
        let meta = Arc::new(Committer::new(log, state)?);
        store.attach_log(meta.clone());
        Ok(Engine {
            root: root.to_owned(),
            meta,
            store,
            uploads: Mutex::new(uploads),
            journal,
            report,
            damaged: opened.damaged,
            gate: RwLock::new(()),
            gc_lock: Mutex::new(()),
            _dir_lock: dir_lock,
            manifests: manifest_cache::ManifestCache::default(),
        })
    }

    /// What opening the store found.
    pub fn open_report(&self) -> OpenReport {
        self.report
    }

    /// The damaged segment ranges isolated when the store was opened.
    pub fn damaged_records(&self) -> &[DamagedRecord] {
        &self.damaged
    }

    /// The options the store was opened with.
    pub fn options(&self) -> EngineOptions {
        self.store.opts
    }

    fn gate_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

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

    fn read_stored(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.store.read(digest)?.ok_or_else(|| missing(digest))
    }

    fn resolve(&self, repo: &RepositoryName, reference: &Reference) -> Result<(Digest, String)> {
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

    // ----- uploads -----------------------------------------------------

    fn session(&self, repo: &RepositoryName, id: UploadId) -> Result<Arc<Mutex<Upload>>> {
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

    /// Takes the session for a bulk writer ([`bulk`]): the caller gets the
    /// running sha256 of the `at` bytes the session holds and a
    /// [`BlockWriter`] on its data file, and may hash and write blocks on
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
    fn close_uploaded(
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

    /// Writes the index snapshot so the next open reads it instead of
    /// scanning every segment record. Also done when the engine is dropped.
    /// Returns the number of entries written.
    pub fn write_index_snapshot(&self) -> Result<usize> {
        self.store.write_snapshot()
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

    fn mount_blob_locked(
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
    fn link_blob_unless_linked(
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

    // ----- manifests and tags ------------------------------------------

    /// Manifests in `repo` whose `subject` is `subject`, optionally only those
    /// of one artifact type, sorted by digest. An unknown repository or
    /// subject has no referrers (an empty list, not an error).
    pub fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let mut found: Vec<(Digest, state::ManifestRecord)> = {
            let state = self.meta.read();
            let Some(r) = state.repos.get(repo.as_str()) else {
                return Ok(Vec::new());
            };
            r.manifests
                .iter()
                .filter(|(_, m)| m.subject.as_ref() == Some(subject))
                .filter(|(_, m)| {
                    artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type
                })
                .map(|(d, m)| (d.clone(), m.clone()))
                .collect()
        };
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(found.len());
        for (digest, record) in found {
            let bytes = self.read_stored(&digest)?;
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
        self.store_manifest(repo, reference, content_type, body, true)
    }

    /// [`Engine::put_manifest`], optionally without refusing manifests
    /// whose blobs or children `repo` lacks (a pull-through cache fetches
    /// those lazily).
    fn store_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
        require_references: bool,
    ) -> Result<StoredManifest> {
        let parsed = manifest::parse_manifest(content_type, body)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), body);
                if actual != *expected {
                    return Err(EngineError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(body),
        };
        let _gate = self.gate_shared();
        {
            // A descriptor's size must be the stored length of what it
            // names, wherever the repository holds it.
            let state = self.meta.read();
            let r = state.repos.get(repo.as_str());
            manifest::check_declared_sizes(
                &parsed,
                |d| r.and_then(|r| r.blobs.get(d).copied()),
                |d| r.and_then(|r| r.manifests.get(d)).map(|m| m.len),
            )?;
        }
        if require_references {
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
            at: Some(unix_now()),
            written: None,
        }];
        if let Reference::Tag(tag) = reference {
            ops.push(Op::SetTag {
                repo: repo.to_string(),
                tag: tag.to_string(),
                digest: digest.clone(),
            });
        }
        if body.len() as u64 <= self.store.opts.small_blob_max {
            self.store.put_small_linked(&digest, body, ops)?;
        } else {
            if !self.store.contains(&digest) {
                let tmp = self.root.join("tmp").join(UploadId::random().to_string());
                fs::write(&tmp, body)?;
                File::open(&tmp)?.sync_data()?;
                self.store.install_large(&digest, &tmp)?;
            }
            self.meta.commit(ops)?;
        }
        Ok(StoredManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Deletes a manifest by digest, and every tag pointing at it.
    pub fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.resolve(repo, &Reference::Digest(digest.clone()))?;
        self.meta.commit(vec![Op::DeleteManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
        }])
    }

    /// Deletes a tag; the manifest it named stays.
    pub fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<()> {
        self.resolve(repo, &Reference::Tag(tag.clone()))?;
        self.meta.commit(vec![Op::DeleteTag {
            repo: repo.to_string(),
            tag: tag.to_string(),
        }])
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

fn missing(digest: &Digest) -> EngineError {
    EngineError::Corrupt(format!("the bytes of {digest} are missing from the store"))
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Best effort: a missing or stale snapshot only costs a longer scan.
        let _ = self.store.write_snapshot();
        self.store.trim_padding();
    }
}

/// The keys of `map` after `after` (all when `None`), in order.
fn names_after<'a, V>(
    map: &'a std::collections::BTreeMap<String, V>,
    after: Option<&str>,
) -> impl Iterator<Item = &'a str> {
    use std::ops::Bound;
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    map.range::<str, _>((from, Bound::Unbounded))
        .map(|(name, _)| name.as_str())
}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lanes;
#[cfg(test)]
mod tests_round;
#[cfg(test)]
mod tests_store;
