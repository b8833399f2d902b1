//! The `Engine` facade: its state, opening a data directory (recovery of
//! every part in order), and the helpers its methods share. The methods
//! themselves are grouped by job in `reads`, `blobs` and `manifests`;
//! maintenance (GC, scrub, ingest) lives beside the parts it drives.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::commit::Committer;
use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::io::{Io, IoFile, OpenMode, RealIo};
use crate::manifest_cache;
use crate::metalog::{LogFile, Op};
use crate::names::RepositoryName;
use crate::segment;
use crate::state::State;
use crate::store::{BlobStore, DamagedRecord, EngineOptions, ACTIVE_SEGMENTS_MAX};
use crate::upload;

mod blobs;
mod manifests;
mod reads;
mod uploads;

/// A byte range of a file holding one blob. With the file-per-blob layout
/// `offset` is 0; a segment store returns a shared segment file and the
/// blob's offset in it. Either way the caller may send the range with
/// sendfile/splice. On a disk without real descriptors (a simulated one,
/// see [`crate::io`]) `file` is an in-memory copy of the blob's bytes and
/// `offset` is 0.
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
    pub(crate) root: PathBuf,
    pub(crate) meta: Arc<Committer>,
    pub(crate) store: BlobStore,
    pub(crate) uploads: Arc<upload::Sessions>,
    pub(crate) report: OpenReport,
    pub(crate) damaged: Vec<DamagedRecord>,
    /// Writes that add references (finish_upload, mounts, put_manifest) hold
    /// this shared; garbage collection holds it exclusively while it decides
    /// what is garbage and commits that decision, so no push can link a blob
    /// it is about to delete.
    pub(crate) gate: RwLock<()>,
    /// One garbage collection at a time.
    pub(crate) gc_lock: Mutex<()>,
    /// Exclusive lock on `<root>/lock`, held while the engine is open: one
    /// process at a time owns a data directory.
    _dir_lock: Box<dyn IoFile>,
    /// The disk under the engine (see [`crate::io`]).
    pub(crate) io: Arc<dyn Io>,
    /// Bytes of recently served manifests.
    pub(crate) manifests: manifest_cache::ManifestCache,
}

/// The op that links a stored blob of `len` bytes into `repo`, now.
pub(crate) fn link_op(repo: &RepositoryName, digest: &Digest, len: u64) -> Op {
    Op::LinkBlob {
        repo: repo.to_string(),
        digest: digest.clone(),
        len,
        at: Some(unix_now()),
        written: None,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        Engine::open_with_io(root, options, Arc::new(RealIo))
    }

    /// [`Engine::open_with`] on the given disk: every file operation of
    /// the engine, upload sessions included, goes through `io` (see
    /// [`crate::io`]; the pull-through cache's staging file is not routed
    /// yet).
    pub fn open_with_io(root: &Path, options: EngineOptions, io: Arc<dyn Io>) -> Result<Engine> {
        let mut options = options;
        options.small_blob_max = options.small_blob_max.min(segment::PAYLOAD_BYTES_MAX);
        options.active_segments = options.active_segments.clamp(1, ACTIVE_SEGMENTS_MAX);
        fsutil::create_dir_durable(&*io, root)?;
        let dir_lock = io.open(&root.join("lock"), OpenMode::OPEN_OR_CREATE)?;
        if !dir_lock.try_lock()? {
            return Err(EngineError::Locked(root.to_owned()));
        }
        for dir in ["blobs", "meta", "uploads", "tmp", "segments"] {
            fsutil::create_dir_durable(&*io, &root.join(dir))?;
        }
        let tmp = root.join("tmp");
        for entry in io.read_dir(&tmp)? {
            let _ = io.remove_file(&tmp.join(entry.name));
        }
        let (store, opened) = BlobStore::open(io.clone(), root, options)?;
        let log_path = root.join("meta/log");
        let (log, batches, torn_tail_bytes) = LogFile::open(&*io, &log_path)?;
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
            LogFile::rewrite(&*io, &log_path, &batches)?
        } else {
            log
        };
        let mut state = State::default();
        for op in batches.iter().flatten() {
            state.apply(op);
        }
        let uploads = Arc::new(upload::Sessions::open(io.clone(), &root.join("uploads"))?);
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
            uploads,
            report,
            damaged: opened.damaged,
            gate: RwLock::new(()),
            gc_lock: Mutex::new(()),
            _dir_lock: dir_lock,
            io,
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

    pub(crate) fn gate_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the index snapshot so the next open reads it instead of
    /// scanning every segment record. Also done when the engine is dropped.
    /// Returns the number of entries written.
    pub fn write_index_snapshot(&self) -> Result<usize> {
        self.store.write_snapshot()
    }
}

pub(crate) fn missing(digest: &Digest) -> EngineError {
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
pub(crate) fn names_after<'a, V>(
    map: &'a std::collections::BTreeMap<String, V>,
    after: Option<&str>,
) -> impl Iterator<Item = &'a str> {
    use std::ops::Bound;
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    map.range::<str, _>((from, Bound::Unbounded))
        .map(|(name, _)| name.as_str())
}
