//! The content-addressed blob store: small blobs packed into segment files
//! with group commit, large blobs as one file each, and the in-memory index
//! from digest to location.
//!
//! - `segments/<n>.seg`: append-only segment files (see `segment`). The
//!   store has `active_segments` write *lanes* (see `lane`); each appends to
//!   its own active segment and rolls to a new number once that would exceed
//!   the size limit. Every other segment is sealed: never written again.
//!   Numbers come from one counter, so they are unique and increase in
//!   creation order of allocation (not every number is used).
//! - `segments/active`: the segments that may have a torn tail after a crash
//!   (see `active_list`); written before a lane creates a segment.
//! - `blobs/<alg>/<xx>/<hex>`: one file per large blob, committed by rename.
//!
//! The index maps a digest to a segment record. It is rebuilt at open by
//! scanning every segment; standalone files are found by path (the directory
//! is their index), so opening never walks `blobs/`.
//!
//! Group commit, per lane: appenders queue encoded records on their thread's
//! lane; one of them (the leader) writes everything queued with one `pwrite`
//! per segment touched and one fdatasync, then publishes the new index
//! entries and wakes the rest. An entry is visible only after its bytes are
//! durable. A blob being appended on one lane is not appended again by
//! another: the second caller waits for the first lane's commit.

mod compaction;
mod lanes;
mod open;
mod reads;
mod report;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::commit::Committer;
use crate::digest::Digest;
pub(crate) use crate::index::Loc;
use crate::index::LocMap;
use crate::io::{Io, IoFile};
use crate::lane::{Inflight, Lane};

/// Most write lanes a store runs ([`EngineOptions::active_segments`] is
/// capped to it).
pub const ACTIVE_SEGMENTS_MAX: usize = 256;

/// How far ahead of its records a lane's active segment is padded with
/// zeros (see `BlobStore::pad_ahead`).
const PAD_BYTES: u64 = 1024 * 1024;

/// Tunables of the engine's blob store ([`crate::Engine::open_with`]).
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Blobs and manifests up to this many bytes go into segments; larger
    /// ones get a file of their own.
    pub small_blob_max: u64,
    /// A segment rolls over once appending would make it larger than this.
    pub segment_bytes_max: u64,
    /// Check a segment record's crc32c every time it is opened for reading
    /// (manifests are always checked, since they are read into memory).
    pub verify_reads: bool,
    /// Write lanes: active segments appended to in parallel, each with its
    /// own group commit (one fdatasync per lane and batch). A thread always
    /// appends on the same lane. 0 is taken as 1; at most
    /// [`ACTIVE_SEGMENTS_MAX`]. Default: the number of CPUs.
    pub active_segments: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            small_blob_max: 1024 * 1024,
            segment_bytes_max: 256 * 1024 * 1024,
            verify_reads: false,
            active_segments: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// A damaged segment range found when opening the store: isolated, never
/// served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The segment number.
    pub segment: u32,
    /// First damaged byte.
    pub start: u64,
    /// One past the last damaged byte.
    pub end: u64,
    /// The digest the damaged record's header names, if readable.
    pub claimed: Option<Digest>,
}

struct Index {
    map: LocMap,
    files: BTreeMap<u32, Arc<dyn IoFile>>,
    /// How far into each segment the index snapshot reached at open: records
    /// in that range were indexed without a crc check, so each is verified
    /// the first time it is opened (a record damaged at rest is never served
    /// even though no scan read it). Everything written or scanned since
    /// lies beyond it.
    snapshot_covered: HashMap<u32, u64>,
    /// Snapshot-covered records checked since open.
    verified: HashSet<Digest>,
}

impl Index {
    /// Whether the record at `loc` was indexed from the snapshot and not yet checked.
    fn unchecked(&self, digest: &Digest, loc: &Loc) -> bool {
        self.snapshot_covered
            .get(&loc.seg)
            .is_some_and(|&covered| loc.payload + loc.len <= covered)
            && !self.verified.contains(digest)
    }
}

pub(crate) struct BlobStore {
    /// Every file operation goes through it (see `crate::io`).
    io: Arc<dyn Io>,
    root: PathBuf,
    seg_dir: PathBuf,
    pub opts: EngineOptions,
    index: RwLock<Index>,
    /// The write lanes (at least one).
    lanes: Vec<Lane>,
    /// Digests being appended, by any lane (lock order: a lane's queue, then
    /// this, then the index).
    inflight: Mutex<Inflight>,
    /// The next segment number to allocate: above every segment that exists
    /// or existed since open.
    next_seg: AtomicU32,
    /// An fsync failed (or a roll-back did): what is on disk is unknown, no
    /// lane writes again.
    failed: AtomicBool,
    /// What `segments/active` lists (plus, briefly, a segment being
    /// registered); sealed segments are removed here at once and from the
    /// file at its next rewrite.
    active: Mutex<BTreeSet<u32>>,
    /// The metadata log that links ride with (see `put_small_linked`);
    /// attached once the engine has replayed it.
    log: OnceLock<Arc<Committer>>,
}

fn seg_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:08}.seg"))
}

impl BlobStore {
    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_inflight(&self) -> MutexGuard<'_, Inflight> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_active(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}
