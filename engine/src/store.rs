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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::active_list;
use crate::commit::Committer;
use crate::digest::{Algorithm, Digest};
use crate::error::{EngineError, Result};
use crate::fsutil;
pub(crate) use crate::index::Loc;
use crate::index::LocMap;
use crate::lane::{self, Entry, Group, Inflight, Lane, Queue, WriteFail, Writer};
use crate::metalog::{Op, Written};
use crate::segment::{self, Damage};

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

pub(crate) struct StoreOpen {
    pub segments: usize,
    pub survival: Survival,
    pub records: usize,
    /// Index entries taken from the snapshot instead of a scan.
    pub snapshot_entries: usize,
    pub torn_tail_bytes: u64,
    pub damaged: Vec<DamagedRecord>,
}

/// What `BlobStore::write_groups` leaves to its caller: the segment files
/// it created, and the metadata records it wrote (if any were queued), to
/// publish once the new index entries are.
type GroupsWritten<'a> = (
    Vec<(u32, Arc<File>)>,
    Option<Result<crate::commit::WrittenRecords<'a>>>,
);

/// What opening the store found on disk, to tell whether segment bytes a
/// metadata record names (see [`Written`]) survived the last crash.
pub(crate) struct Survival {
    /// Every segment's length after its torn tail (if any) was cut.
    lengths: HashMap<u32, u64>,
    /// What `segments/active` listed, if it was readable.
    listed: Option<BTreeSet<u32>>,
    /// The highest-numbered segment on disk.
    highest: Option<u32>,
}

impl Survival {
    /// Whether the bytes up to `at.end` of segment `at.seg` are on disk or
    /// were once durable. A missing segment was compacted away (durable
    /// before, so it counts) unless `segments/active` lists it or its number
    /// is above every segment's: then its creation was lost in a crash.
    /// Compaction rewrites the list before it deletes a segment, so a
    /// compacted segment is never listed.
    pub fn kept(&self, at: Written) -> bool {
        match self.lengths.get(&at.seg) {
            Some(&len) => len >= at.end,
            None => {
                let below_highest = self.highest.is_some_and(|h| at.seg < h);
                let listed = self.listed.as_ref().is_some_and(|l| l.contains(&at.seg));
                below_highest && !listed
            }
        }
    }
}

struct Index {
    map: LocMap,
    files: BTreeMap<u32, Arc<File>>,
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

/// Segment numbers present in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

const SNAPSHOT_FILE: &str = "index.snap";

/// Loads the index snapshot into `map` when it agrees with the segment files
/// (each covered segment still at least as long as covered; removed
/// segments' entries dropped). Returns how far into each segment it reaches,
/// so only the rest is scanned. Any disagreement means a full scan.
fn load_snapshot(
    seg_dir: &Path,
    segs: &[u32],
    map: &mut LocMap,
    report: &mut StoreOpen,
) -> HashMap<u32, u64> {
    // One read of the whole file (a plain read: the engine forbids unsafe
    // code, so no mmap; from the page cache this is a memcpy).
    let Ok(bytes) = std::fs::read(seg_dir.join(SNAPSHOT_FILE)) else {
        return HashMap::new();
    };
    let Some(snapshot) = crate::snapshot::decode(&bytes) else {
        return HashMap::new();
    };
    let mut covered = HashMap::new();
    for &(seg, len) in &snapshot.covered {
        if !segs.contains(&seg) {
            continue; // removed by compaction since
        }
        match std::fs::metadata(seg_path(seg_dir, seg)) {
            Ok(meta) if meta.len() >= len => {
                covered.insert(seg, len);
            }
            _ => return HashMap::new(),
        }
    }
    if let Some(seed) = snapshot.seed {
        // The key the entries are ordered by: filling the table in its own
        // bucket order touches memory front to back (see `LocMap::seed`).
        if map.len() == 0 {
            *map = LocMap::with_seed(seed);
        }
    }
    for (code, &count) in (1u8..).zip(&snapshot.counts) {
        if let Some(algorithm) = Algorithm::from_code(code) {
            map.reserve(algorithm, count);
        }
    }
    // Sorted, for a binary search per entry (cheaper than hashing the
    // segment number a million times).
    let mut kept: Vec<u32> = covered.keys().copied().collect();
    kept.sort_unstable();
    for (digest, seg, record, len) in snapshot.entries() {
        if kept.binary_search(&seg).is_ok() {
            map.insert(&digest, Loc::new(digest.algorithm(), seg, record, len));
            report.snapshot_entries += 1;
        }
    }
    report.records += report.snapshot_entries;
    covered
}

/// What `segments/active` said at open.
enum ActiveList {
    /// No file: a store written before lanes (its one active segment is the
    /// highest-numbered) or an empty one.
    Missing,
    /// Unreadable or failing its checksum.
    Damaged,
    /// The segments it names.
    Listed(Vec<u32>),
}

fn read_active_list(seg_dir: &Path) -> io::Result<ActiveList> {
    match fs::read(seg_dir.join(active_list::FILE_NAME)) {
        Ok(bytes) => Ok(match active_list::decode(&bytes) {
            Some(list) => ActiveList::Listed(list),
            None => ActiveList::Damaged,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ActiveList::Missing),
        Err(e) => Err(e),
    }
}

/// Whether bytes `from..to` of `file` are all zero.
fn zeros_only(file: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = buf.len().min((to - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Replaces `segments/active` with `segments`, durably: temporary file,
/// fsync, rename, directory fsync.
fn write_active_list(seg_dir: &Path, segments: &BTreeSet<u32>) -> io::Result<()> {
    let list: Vec<u32> = segments.iter().copied().collect();
    let tmp = seg_dir.join("active.tmp");
    fs::write(&tmp, active_list::encode(&list))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, seg_dir.join(active_list::FILE_NAME))?;
    fsutil::sync_dir(seg_dir)
}

/// A segment kept as a lane's active one at open: its number, durable
/// length and a writable descriptor.
struct Reused {
    seg: u32,
    len: u64,
    file: File,
}

impl BlobStore {
    /// Opens the store: loads the index snapshot, scans what it does not
    /// cover, truncates the torn tail of every segment `segments/active`
    /// names (the highest-numbered one for a store without that file), and
    /// gives each lane an active segment: one of those (lowest first) while
    /// they last, else a new number whose file is created by the lane's
    /// first write. The others are sealed from now on.
    pub fn open(root: &Path, opts: EngineOptions) -> Result<(BlobStore, StoreOpen)> {
        let seg_dir = root.join("segments");
        fsutil::create_dir_durable(&seg_dir)?;
        let segs = list_segments(&seg_dir)?;
        let listed = read_active_list(&seg_dir)?;
        let candidates: BTreeSet<u32> = match &listed {
            ActiveList::Listed(list) => list
                .iter()
                .copied()
                .filter(|s| segs.binary_search(s).is_ok())
                .collect(),
            // Before lanes, only the highest-numbered segment was appended
            // to. A damaged list falls back to the same rule: a torn tail in
            // another segment is then isolated as damage (never served)
            // instead of cut, and that segment is sealed.
            ActiveList::Missing | ActiveList::Damaged => segs.last().copied().into_iter().collect(),
        };
        let lane_count = opts.active_segments.clamp(1, ACTIVE_SEGMENTS_MAX);
        let mut map = LocMap::default();
        let mut files = BTreeMap::new();
        let mut lengths = HashMap::new();
        let mut report = StoreOpen {
            segments: segs.len(),
            survival: Survival {
                lengths: HashMap::new(),
                listed: match &listed {
                    ActiveList::Listed(list) => Some(list.iter().copied().collect()),
                    ActiveList::Missing | ActiveList::Damaged => None,
                },
                highest: segs.last().copied(),
            },
            records: 0,
            snapshot_entries: 0,
            torn_tail_bytes: 0,
            damaged: Vec::new(),
        };
        let mut reused: Vec<Reused> = Vec::new();
        let covered = load_snapshot(&seg_dir, &segs, &mut map, &mut report);
        for &seg in &segs {
            let active = candidates.contains(&seg);
            let path = seg_path(&seg_dir, seg);
            let file = OpenOptions::new().read(true).write(active).open(&path)?;
            let size = file.metadata()?.len();
            let from = covered.get(&seg).copied().unwrap_or(0);
            let scan = segment::scan_from(&file, from, size, active, false)?;
            for Damage {
                start,
                end,
                claimed,
            } in scan.damaged
            {
                report.damaged.push(DamagedRecord {
                    segment: seg,
                    start,
                    end,
                    claimed,
                });
            }
            report.records += scan.records.len();
            // Size the index once rather than rehashing it as it grows.
            let mut counts: HashMap<Algorithm, usize> = HashMap::new();
            for r in &scan.records {
                *counts.entry(r.digest.algorithm()).or_default() += 1;
            }
            for (algorithm, count) in counts {
                map.reserve(algorithm, count);
            }
            for r in scan.records {
                // Later records win: a compaction copy supersedes its original.
                map.insert(
                    &r.digest,
                    Loc {
                        seg,
                        record: r.offset,
                        payload: r.payload_offset,
                        len: r.len,
                    },
                );
            }
            lengths.insert(seg, if active { scan.valid_len } else { size });
            if active {
                if scan.valid_len < size {
                    if !zeros_only(&file, scan.valid_len, size)? {
                        // Padding alone (see `pad_ahead`) is not a torn write.
                        report.torn_tail_bytes += size - scan.valid_len;
                    }
                    file.set_len(scan.valid_len)?;
                    file.sync_data()?;
                }
                if reused.len() < lane_count {
                    reused.push(Reused {
                        seg,
                        len: scan.valid_len,
                        file: file.try_clone()?,
                    });
                }
            }
            files.insert(seg, Arc::new(file));
        }
        report.survival.lengths = lengths;
        // Every torn tail is cut and synced: the segments not reused are
        // sealed, and the list names exactly the reused ones.
        let kept: BTreeSet<u32> = reused.iter().map(|r| r.seg).collect();
        let rewrite = match &listed {
            ActiveList::Listed(list) => list.iter().copied().collect::<BTreeSet<u32>>() != kept,
            ActiveList::Missing => !kept.is_empty(),
            ActiveList::Damaged => true,
        };
        if rewrite {
            write_active_list(&seg_dir, &kept)?;
        }
        let next_seg = segs.last().map_or(1, |&s| s.saturating_add(1));
        let next_seg = AtomicU32::new(next_seg);
        let mut reused = reused.into_iter();
        let lanes = (0..lane_count)
            .map(|_| {
                Lane::new(match reused.next() {
                    Some(r) => Queue::new(r.seg, r.len, Some(r.file)),
                    None => Queue::new(next_seg.fetch_add(1, Ordering::Relaxed), 0, None),
                })
            })
            .collect();
        let store = BlobStore {
            root: root.to_owned(),
            seg_dir,
            opts,
            index: RwLock::new(Index {
                map,
                files,
                snapshot_covered: covered,
                verified: HashSet::new(),
            }),
            lanes,
            inflight: Mutex::new(HashMap::new()),
            next_seg,
            failed: AtomicBool::new(false),
            active: Mutex::new(kept),
            log: OnceLock::new(),
        };
        Ok((store, report))
    }

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

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Whether the store holds the blob (in a segment or as a file).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.read_index().map.contains(&digest.to_raw()) || self.blob_path(digest).exists()
    }

    /// The segment location of a blob, if it is in a segment.
    pub fn locate(&self, digest: &Digest) -> Option<Loc> {
        self.read_index().map.get(&digest.to_raw())
    }

    fn segment_file(&self, digest: &Digest) -> Option<(Loc, Arc<File>)> {
        let index = self.read_index();
        let loc = index.map.get(&digest.to_raw())?;
        let file = index.files.get(&loc.seg)?.clone();
        Some((loc, file))
    }

    fn read_record(file: &File, loc: &Loc) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; loc.record_len() as usize];
        file.read_exact_at(&mut bytes, loc.record)?;
        Ok(bytes)
    }

    /// Drops a record that failed its check from the index, so it is never
    /// served again (a new push of the blob stores a good copy).
    fn quarantine(&self, digest: &Digest, loc: &Loc) -> EngineError {
        let mut index = self.write_index();
        let raw = digest.to_raw();
        if index.map.get(&raw) == Some(*loc) {
            index.map.remove(&raw);
        }
        EngineError::Corrupt(format!(
            "segment {} record at {} ({digest}) fails its checksum",
            loc.seg, loc.record
        ))
    }

    /// Opens a blob for reading: its file, offset and length. `None` if the
    /// store does not hold it.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<(File, u64, u64)>> {
        if let Some((loc, file)) = self.segment_file(digest) {
            let unchecked = self.read_index().unchecked(digest, &loc);
            if self.opts.verify_reads || unchecked {
                if !segment::record_crc_ok(&Self::read_record(&file, &loc)?) {
                    return Err(self.quarantine(digest, &loc));
                }
                if unchecked {
                    self.write_index().verified.insert(digest.clone());
                }
            }
            return Ok(Some((file.try_clone()?, loc.payload, loc.len)));
        }
        match File::open(self.blob_path(digest)) {
            Ok(file) => {
                let len = file.metadata()?.len();
                Ok(Some((file, 0, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A blob's bytes, checked against the record's crc32c when it is in a
    /// segment. `None` if the store does not hold it.
    pub fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        if let Some((loc, file)) = self.segment_file(digest) {
            let mut bytes = Self::read_record(&file, &loc)?;
            if !segment::record_crc_ok(&bytes) {
                return Err(self.quarantine(digest, &loc));
            }
            bytes.drain(..(loc.payload - loc.record) as usize);
            return Ok(Some(bytes));
        }
        match fs::read(self.blob_path(digest)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ----- writes ------------------------------------------------------

    /// Stores a small blob in the active segment of the calling thread's
    /// lane unless the store already holds it (or another lane is storing
    /// it: then waits for that). Returns when its bytes are durable and
    /// indexed.
    pub fn put_small(&self, digest: &Digest, payload: &[u8]) -> Result<()> {
        self.put_small_linked(digest, payload, Vec::new())
    }

    /// [`BlobStore::put_small`], then commits `link` (one metadata record)
    /// to the attached log; returns once both are durable and visible. When
    /// the blob's record is appended by this call, the link is written to
    /// the log in the same round as the segment bytes (marked with where
    /// they went, see [`Written`]) and the two files are fdatasynced
    /// together; otherwise it is committed after the blob is durable.
    pub fn put_small_linked(&self, digest: &Digest, payload: &[u8], link: Vec<Op>) -> Result<()> {
        let unlinked = if self.blob_path(digest).exists() {
            link
        } else {
            self.append(&[(digest, payload, None)], link)?
        };
        if unlinked.is_empty() {
            return Ok(());
        }
        self.committer()?.commit(unlinked)
    }

    /// Attaches the metadata log that [`BlobStore::put_small_linked`]
    /// commits to (once; later calls are ignored).
    pub fn attach_log(&self, log: Arc<Committer>) {
        let _ = self.log.set(log);
    }

    fn committer(&self) -> Result<&Committer> {
        self.log
            .get()
            .map(|log| &**log)
            .ok_or_else(|| EngineError::Io(io::Error::other("no metadata log attached")))
    }

    /// Commits a large blob whose verified, fdatasynced bytes are in `src`
    /// by renaming it into `blobs/` (or drops `src` if the blob is already
    /// stored).
    pub fn install_large(&self, digest: &Digest, src: &Path) -> Result<()> {
        if self.read_index().map.contains(&digest.to_raw()) {
            fs::remove_file(src)?;
            return Ok(());
        }
        fsutil::install_file(src, &self.blob_path(digest))?;
        Ok(())
    }

    /// Appends records on the calling thread's lane and waits until they
    /// are durable and indexed. An item with a `from` location is a
    /// compaction copy: it is always written, and replaces the index entry
    /// only if that still is `from`. Other items are skipped when the blob
    /// is indexed, or waited for when some lane is appending it.
    ///
    /// `link` (ops of one metadata record) rides with the lane's batch when
    /// this call queued any record; it is then marked with where each
    /// blob it names went. Otherwise it is returned, for the caller to
    /// commit after this call (the blobs are durable by then).
    fn append(&self, items: &[(&Digest, &[u8], Option<Loc>)], link: Vec<Op>) -> Result<Vec<Op>> {
        let mut link = link;
        if self.failed.load(Ordering::Acquire) {
            return Err(EngineError::PreviousIo);
        }
        let me = lane::current(self.lanes.len());
        let mut queue = self.lanes[me].lock();
        let mut wait_for = 0u64;
        // Appends of the same blobs already queued on other lanes.
        let mut elsewhere: Vec<(usize, u64)> = Vec::new();
        let mut queued_any = false;
        for (digest, payload, from) in items {
            // This append's sequence number on the lane.
            let seq = queue.queued_seq + u64::from(!queued_any);
            if from.is_none() {
                // Index and in-flight set are checked under the in-flight
                // lock: a leader publishes the index entry before it clears
                // the in-flight one, so one of the two always shows a blob
                // that is being or has been appended.
                let mut inflight = self.lock_inflight();
                if self.read_index().map.contains(&digest.to_raw()) {
                    continue;
                }
                match inflight.get(*digest) {
                    Some(&(lane, seq)) if lane == me => {
                        wait_for = wait_for.max(seq);
                        continue;
                    }
                    Some(&other) => {
                        elsewhere.push(other);
                        continue;
                    }
                    None => {
                        inflight.insert((*digest).clone(), (me, seq));
                    }
                }
            }
            let rec_len = segment::record_len(digest, payload.len() as u64);
            if queue.tail_len > 0 && queue.tail_len + rec_len > self.opts.segment_bytes_max {
                queue.tail_seg = self.next_seg.fetch_add(1, Ordering::Relaxed);
                queue.tail_len = 0;
            }
            let (seg, start) = (queue.tail_seg, queue.tail_len);
            let loc = Loc {
                seg,
                record: start,
                payload: start + segment::payload_offset(digest),
                len: payload.len() as u64,
            };
            if queue.groups.last().is_none_or(|g| g.seg != seg) {
                queue.groups.push(Group {
                    seg,
                    start,
                    bytes: Vec::new(),
                    entries: Vec::new(),
                });
            }
            let flags = if from.is_some() {
                segment::FLAG_COMPACTED
            } else {
                0
            };
            let group = queue.groups.last_mut().expect("a group was just ensured");
            segment::encode_record(digest, flags, payload, &mut group.bytes);
            for op in &mut link {
                op.set_written(
                    digest,
                    Written {
                        seg,
                        end: start + rec_len,
                    },
                );
            }
            group.entries.push(Entry {
                digest: (*digest).clone(),
                loc,
                from: *from,
            });
            queue.tail_len += rec_len;
            queue.queued_seq = seq;
            queued_any = true;
            wait_for = seq;
        }
        if queued_any && !link.is_empty() {
            queue.links.push(std::mem::take(&mut link));
        }
        // Own lane first: this thread may have to lead its batch.
        self.wait_durable(me, queue, wait_for)?;
        for (lane, seq) in elsewhere {
            self.wait_durable(lane, self.lanes[lane].lock(), seq)?;
        }
        Ok(link)
    }

    /// Waits until sequence number `wait_for` of lane `me` is durable,
    /// leading the lane's group commit whenever its writer is free.
    fn wait_durable<'a>(
        &'a self,
        me: usize,
        mut queue: MutexGuard<'a, Queue>,
        wait_for: u64,
    ) -> Result<()> {
        let lane = &self.lanes[me];
        loop {
            if let Some((_, _, message)) = queue
                .refused
                .iter()
                .find(|(after, upto, _)| *after < wait_for && wait_for <= *upto)
            {
                return Err(EngineError::Io(io::Error::other(message.clone())));
            }
            if queue.durable_seq >= wait_for {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(EngineError::PreviousIo);
            }
            let Some(mut writer) = queue.writer.take() else {
                queue = lane.wait(queue);
                continue;
            };
            let groups = std::mem::take(&mut queue.groups);
            let links = std::mem::take(&mut queue.links);
            let upto = queue.queued_seq;
            drop(queue);
            let written = self.write_groups(&mut writer, &groups, links);
            queue = lane.lock();
            match written {
                Ok((new_files, records)) => {
                    {
                        let mut index = self.write_index();
                        index.files.extend(new_files);
                        for e in groups.iter().flat_map(|g| &g.entries) {
                            let raw = e.digest.to_raw();
                            match e.from {
                                None => index.map.insert(&raw, e.loc),
                                Some(from) => {
                                    if index.map.get(&raw) == Some(from) {
                                        index.map.insert(&raw, e.loc);
                                    }
                                }
                            }
                        }
                    }
                    {
                        let mut inflight = self.lock_inflight();
                        for e in groups.iter().flat_map(|g| &g.entries) {
                            if inflight
                                .get(&e.digest)
                                .is_some_and(|&(l, s)| l == me && s <= upto)
                            {
                                inflight.remove(&e.digest);
                            }
                        }
                    }
                    if let Some(last) = groups.last() {
                        // Every segment the lane left behind is sealed: it
                        // was fdatasynced before the next one was created.
                        let sealed: Vec<u32> = std::iter::once(queue.durable_seg)
                            .chain(groups.iter().map(|g| g.seg))
                            .filter(|&s| s != last.seg)
                            .collect();
                        if !sealed.is_empty() {
                            let mut active = self.lock_active();
                            for s in sealed {
                                active.remove(&s);
                            }
                        }
                        queue.durable_seg = last.seg;
                        queue.durable_len = last.start + last.bytes.len() as u64;
                    }
                    // The blobs are durable and indexed: now the links that
                    // name them may become visible (outside the lane lock:
                    // this waits for the log's fdatasync).
                    drop(queue);
                    let linked = records.map_or(Ok(()), |r| r.and_then(|w| w.publish()));
                    queue = lane.lock();
                    if let Err(e) = linked {
                        // The blobs stay stored; the callers' links failed.
                        let after = queue.durable_seq;
                        queue.refused.push((after, upto, e.to_string()));
                        if queue.refused.len() > 64 {
                            queue.refused.remove(0);
                        }
                    }
                    queue.writer = Some(writer);
                    queue.durable_seq = upto;
                    lane.flushed.notify_all();
                }
                Err(WriteFail::Write(e)) => {
                    // Roll back to the durable end; this batch and anything
                    // queued behind it (whose offsets assumed it) fail, and
                    // the lane takes writes again (e.g. once space is freed).
                    let (durable_seg, durable_len) = (queue.durable_seg, queue.durable_len);
                    match self.roll_back(&mut writer, &groups, durable_seg, durable_len) {
                        Ok(()) => {
                            let (after, upto) = (queue.durable_seq, queue.queued_seq);
                            queue.refused.push((after, upto, e.to_string()));
                            if queue.refused.len() > 64 {
                                queue.refused.remove(0);
                            }
                            queue.groups.clear();
                            self.lock_inflight()
                                .retain(|_, &mut (l, s)| l != me || s <= after);
                            (queue.tail_seg, queue.tail_len) = (durable_seg, durable_len);
                            queue.durable_seq = upto;
                        }
                        Err(_) => self.failed.store(true, Ordering::Release),
                    }
                    queue.writer = Some(writer);
                    lane.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
                Err(WriteFail::Sync(e)) => {
                    self.failed.store(true, Ordering::Release);
                    queue.writer = Some(writer);
                    lane.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
            }
        }
    }

    /// Undoes a failed write of `groups`: removes the segments the batch
    /// created (all of them this lane's: every group segment other than the
    /// durable one) and cuts the durable segment back to its durable length.
    fn roll_back(
        &self,
        writer: &mut Writer,
        groups: &[Group],
        durable_seg: u32,
        durable_len: u64,
    ) -> io::Result<()> {
        let created: BTreeSet<u32> = groups
            .iter()
            .map(|g| g.seg)
            .filter(|&s| s != durable_seg)
            .collect();
        for &seg in &created {
            match fs::remove_file(seg_path(&self.seg_dir, seg)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        {
            let mut active = self.lock_active();
            for seg in &created {
                active.remove(seg);
            }
        }
        if writer.seg != durable_seg {
            let path = seg_path(&self.seg_dir, durable_seg);
            let file = if path.exists() {
                Some(OpenOptions::new().read(true).write(true).open(&path)?)
            } else {
                None
            };
            *writer = Writer::new(durable_seg, file, durable_len);
        }
        if let Some(file) = &writer.file {
            file.set_len(durable_len)?;
        }
        (writer.len, writer.allocated) = (durable_len, durable_len);
        Ok(())
    }

    /// Writes zeros past the end of the lane's records once they reach its
    /// padding (up to [`PAD_BYTES`] ahead, never past `segment_bytes_max`),
    /// so most appends overwrite allocated blocks and the file's size does
    /// not change: their fdatasync then writes the data and flushes, without
    /// the inode and block-map writes an append needs. Recovery cuts the
    /// padding of an active segment like a torn tail (a zero byte never
    /// starts a record), and sealing a segment cuts it first.
    ///
    /// Padding is an optimisation: when it cannot be written (disk full)
    /// the segment stays as long as its records and appends go on.
    fn pad_ahead(&self, writer: &mut Writer) {
        let Some(file) = &writer.file else {
            return;
        };
        if writer.len < writer.allocated {
            return;
        }
        let target = (writer.len + PAD_BYTES).min(self.opts.segment_bytes_max);
        if target <= writer.len {
            return;
        }
        match fsutil::write_zeros(file, writer.len, target) {
            Ok(()) => writer.allocated = target,
            Err(_) => {
                // Whatever zeros landed are padding too; cut them anyway.
                if file.set_len(writer.len).is_ok() {
                    writer.allocated = writer.len;
                }
            }
        }
    }

    /// Cuts each lane's padding off its active segment, durably (a clean
    /// shutdown leaves segments exactly as long as their records).
    pub fn trim_padding(&self) {
        for lane in &self.lanes {
            let mut queue = lane.lock();
            let durable_len = queue.durable_len;
            let Some(writer) = queue.writer.as_mut() else {
                continue;
            };
            if let Some(file) = &writer.file {
                if writer.allocated > writer.len
                    && writer.len == durable_len
                    && file.set_len(writer.len).is_ok()
                    && file.sync_all().is_ok()
                {
                    writer.allocated = writer.len;
                }
            }
        }
    }

    /// Adds `seg` to `segments/active` (durably) unless it is listed: done
    /// before the segment's file is created, so a crash never leaves a
    /// segment with a torn tail that the list does not name.
    fn register_active(&self, seg: u32) -> io::Result<()> {
        let mut active = self.lock_active();
        if active.insert(seg) {
            if let Err(e) = write_active_list(&self.seg_dir, &active) {
                active.remove(&seg);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes queued groups, then the metadata records that ride with them
    /// (not yet durable), then makes the groups durable: one fdatasync per
    /// segment touched, and a directory fsync when a segment was created
    /// (after it was registered in `segments/active`). Returns the new
    /// segment files and the written records (if any), to publish once the
    /// new index entries are (or why writing them failed: the groups are
    /// durable even then).
    fn write_groups(
        &self,
        writer: &mut Writer,
        groups: &[Group],
        links: Vec<Vec<Op>>,
    ) -> std::result::Result<GroupsWritten<'_>, WriteFail> {
        let mut created = Vec::new();
        for g in groups {
            if writer.file.is_none() || writer.seg != g.seg {
                if let Some(old) = &writer.file {
                    // Sealed: without its padding, and durable before the
                    // next segment exists.
                    old.set_len(writer.len).map_err(WriteFail::Write)?;
                    old.sync_data().map_err(WriteFail::Sync)?;
                }
                self.register_active(g.seg).map_err(WriteFail::Write)?;
                let path = seg_path(&self.seg_dir, g.seg);
                let file = fsutil::open_or_create(&path).map_err(WriteFail::Write)?;
                created.push((
                    g.seg,
                    Arc::new(File::open(&path).map_err(WriteFail::Write)?),
                ));
                *writer = Writer::new(g.seg, Some(file), 0);
            }
            let file = writer
                .file
                .as_ref()
                .ok_or(WriteFail::Write(io::ErrorKind::NotFound.into()))?;
            file.write_all_at(&g.bytes, g.start)
                .map_err(WriteFail::Write)?;
            writer.len = g.start + g.bytes.len() as u64;
        }
        self.pad_ahead(writer);
        // Written before the segment's fdatasync so both syncs happen in one
        // round; dropped unpublished (poisoning the log) if that fails.
        let records =
            (!links.is_empty()).then(|| self.committer().and_then(|log| log.write(links)));
        if let Some(file) = &writer.file {
            file.sync_data().map_err(WriteFail::Sync)?;
        }
        if !created.is_empty() {
            fsutil::sync_dir(&self.seg_dir).map_err(WriteFail::Sync)?;
        }
        Ok((created, records))
    }

    // ----- maintenance (GC, compaction, scrub) --------------------------

    /// Every indexed blob and its location.
    pub fn index_snapshot(&self) -> Vec<(Digest, Loc)> {
        self.read_index()
            .map
            .iter()
            .map(|(d, l)| (d.to_digest(), l))
            .collect()
    }

    /// Removes blobs from the index (their records become garbage).
    pub fn forget(&self, digests: &[Digest]) {
        let mut index = self.write_index();
        for d in digests {
            index.map.remove(&d.to_raw());
        }
    }

    /// Every standalone blob file: its digest, path and length.
    pub fn list_files(&self) -> io::Result<Vec<(Digest, PathBuf, u64)>> {
        let mut out = Vec::new();
        let blobs = self.root.join("blobs");
        let Ok(algs) = fs::read_dir(&blobs) else {
            return Ok(out);
        };
        for alg in algs {
            let alg = alg?;
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for prefix in fs::read_dir(alg.path())? {
                for file in fs::read_dir(prefix?.path())? {
                    let file = file?;
                    let name = file.file_name().to_string_lossy().into_owned();
                    if let Ok(digest) = format!("{alg_name}:{name}").parse::<Digest>() {
                        out.push((digest, file.path(), file.metadata()?.len()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every lane's active segment with its durable length (a lane whose
    /// first segment is not created yet included: it is in no listing).
    fn lane_durables(&self) -> HashMap<u32, u64> {
        self.lanes
            .iter()
            .map(|lane| {
                let q = lane.lock();
                (q.durable_seg, q.durable_len)
            })
            .collect()
    }

    /// The segments lanes currently append to (those that exist), ascending.
    #[cfg(test)]
    pub fn active_segments(&self) -> Vec<u32> {
        let durables = self.lane_durables();
        let index = self.read_index();
        let mut out: Vec<u32> = durables
            .into_keys()
            .filter(|s| index.files.contains_key(s))
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `seg` may be compacted (deleted once its live records are
    /// copied): it exists, no lane appends to it now or ever will again, and
    /// it is not the highest-numbered segment (so the highest number that
    /// ever existed stays on disk, and numbers allocated after a restart
    /// never reuse one an index snapshot may still name).
    ///
    /// A segment enters the listing only once its first batch is durable,
    /// at which point it is its lane's durable segment; a lane moves its
    /// durable segment only forward, to a newly allocated number. So a
    /// segment listed first and then found to be no lane's durable segment
    /// is sealed for good.
    pub fn compactable(&self, seg: u32) -> bool {
        let (listed, highest) = {
            let index = self.read_index();
            (
                index.files.contains_key(&seg),
                index.files.keys().next_back().copied(),
            )
        };
        listed
            && highest != Some(seg)
            && !self.lanes.iter().any(|lane| lane.lock().durable_seg == seg)
    }

    /// Every segment with its size: on disk for a sealed one, the durable
    /// length for an active one (bytes past it may be a write in flight).
    pub fn segments(&self) -> Vec<(u32, u64)> {
        // Files first, lanes second: see `compactable`.
        let files: Vec<(u32, Arc<File>)> = self
            .read_index()
            .files
            .iter()
            .map(|(s, f)| (*s, f.clone()))
            .collect();
        let durables = self.lane_durables();
        files
            .into_iter()
            .map(|(seg, f)| {
                let size = match durables.get(&seg) {
                    Some(&len) => len,
                    None => f.metadata().map(|m| m.len()).unwrap_or(0),
                };
                (seg, size)
            })
            .collect()
    }

    /// Writes the index snapshot (see `snapshot`): every indexed record in
    /// the durable part of the segments (all of a sealed segment, the
    /// durable prefix of each lane's active one). Atomic (temporary file,
    /// fsync, rename); a crash leaves the previous snapshot.
    pub fn write_snapshot(&self) -> Result<usize> {
        let covered: Vec<(u32, u64)> = self.segments();
        let bytes = {
            let index = self.read_index();
            let reach: HashMap<u32, u64> = covered.iter().copied().collect();
            let entries: Vec<crate::snapshot::Entry> = index
                .map
                .iter()
                .filter(|(_, loc)| {
                    reach
                        .get(&loc.seg)
                        .is_some_and(|&len| loc.payload + loc.len <= len)
                })
                .map(|(d, loc)| (d, loc.seg, loc.record, loc.len))
                .collect();
            (
                crate::snapshot::encode(index.map.seed(), &covered, entries.iter().copied()),
                entries.len(),
            )
        };
        let (bytes, count) = bytes;
        let tmp = self.seg_dir.join("index.snap.tmp");
        std::fs::write(&tmp, &bytes)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.seg_dir.join(SNAPSHOT_FILE))?;
        fsutil::sync_dir(&self.seg_dir)?;
        Ok(count)
    }

    /// Live bytes (whole records the index points at) per segment.
    pub fn live_bytes(&self) -> HashMap<u32, u64> {
        let mut out = HashMap::new();
        for loc in self.read_index().map.locs() {
            *out.entry(loc.seg).or_insert(0) += loc.record_len();
        }
        out
    }

    /// Scans one segment (up to `size`) verifying every digest.
    pub fn scan_segment(&self, seg: u32, size: u64) -> Result<segment::Scan> {
        let file = self.read_index().files.get(&seg).cloned();
        let Some(file) = file else {
            return Ok(segment::Scan::default());
        };
        Ok(segment::scan(&*file, size, false, true)?)
    }

    /// Drops index entries that point into `[start, end)` of `seg`.
    pub fn quarantine_range(&self, seg: u32, start: u64, end: u64) -> Vec<Digest> {
        let mut index = self.write_index();
        let bad: Vec<_> = index
            .map
            .iter()
            .filter(|(_, l)| l.seg == seg && l.record < end && l.payload + l.len > start)
            .map(|(d, _)| d)
            .collect();
        for d in &bad {
            index.map.remove(d);
        }
        bad.iter().map(|d| d.to_digest()).collect()
    }

    /// Copies the live records of a sealed segment to the calling thread's
    /// lane, makes the copies durable and indexed, then deletes the segment.
    /// Does nothing to a segment that is not [`BlobStore::compactable`].
    /// Reads that already hold the old file keep reading it (the descriptor
    /// outlives the unlink). Returns (records moved, bytes freed).
    pub fn compact(&self, seg: u32) -> Result<(usize, u64)> {
        if !self.compactable(seg) {
            return Ok((0, 0));
        }
        let (live, file): (Vec<(Digest, Loc)>, Option<Arc<File>>) = {
            let index = self.read_index();
            let live = index
                .map
                .iter()
                .filter(|(_, l)| l.seg == seg)
                .map(|(d, l)| (d.to_digest(), l))
                .collect();
            (live, index.files.get(&seg).cloned())
        };
        let Some(file) = file else { return Ok((0, 0)) };
        let size = file.metadata()?.len();
        // Read and check every live record first: a segment holding a live
        // record that fails its crc is left alone (scrub reports it).
        let mut batch: Vec<(Digest, Vec<u8>, Loc)> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut moved = 0usize;
        for (digest, loc) in live {
            let mut bytes = Self::read_record(&file, &loc)?;
            if !segment::record_crc_ok(&bytes) {
                return Err(EngineError::Corrupt(format!(
                    "segment {seg} record at {} fails its checksum",
                    loc.record
                )));
            }
            bytes.drain(..(loc.payload - loc.record) as usize);
            batch_bytes += bytes.len() as u64;
            batch.push((digest, bytes, loc));
            if batch_bytes >= 16 * 1024 * 1024 {
                moved += batch.len();
                self.append_copies(&batch)?;
                batch.clear();
                batch_bytes = 0;
            }
        }
        moved += batch.len();
        self.append_copies(&batch)?;
        {
            let mut index = self.write_index();
            if index.map.locs().any(|l| l.seg == seg) {
                return Err(EngineError::Corrupt(format!(
                    "segment {seg} still indexed after compaction"
                )));
            }
            index.files.remove(&seg);
        }
        {
            // The list may still name this sealed segment (it is rewritten
            // lazily); a listed segment found missing at open counts as
            // lost in a crash (see `Survival::kept`), so unlist it first.
            let active = self.lock_active();
            write_active_list(&self.seg_dir, &active)?;
        }
        fs::remove_file(seg_path(&self.seg_dir, seg))?;
        fsutil::sync_dir(&self.seg_dir)?;
        Ok((moved, size))
    }

    fn append_copies(&self, batch: &[(Digest, Vec<u8>, Loc)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let items: Vec<(&Digest, &[u8], Option<Loc>)> = batch
            .iter()
            .map(|(d, b, l)| (d, &b[..], Some(*l)))
            .collect();
        self.append(&items, Vec::new())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rolling back a failed batch removes only the segments that batch
    /// created, never another lane's segment numbered in between.
    #[test]
    fn roll_back_removes_only_the_failed_batch_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            active_segments: 2,
            ..EngineOptions::default()
        };
        let (store, _) = BlobStore::open(dir.path(), opts).unwrap();
        let store = Arc::new(store);
        // Put a blob on each lane (threads draw consecutive tickets).
        let mut seen = BTreeSet::new();
        for i in 0..64 {
            let store = store.clone();
            let lane = std::thread::spawn(move || {
                let bytes = format!("blob {i}").into_bytes();
                store.put_small(&Digest::sha256_of(&bytes), &bytes).unwrap();
                lane::current(2)
            })
            .join()
            .unwrap();
            seen.insert(lane);
            if seen.len() == 2 {
                break;
            }
        }
        let durables: Vec<(u32, u64)> = store
            .lanes
            .iter()
            .map(|l| {
                let q = l.lock();
                (q.durable_seg, q.durable_len)
            })
            .collect();
        let (low, high) = (durables[0].min(durables[1]), durables[0].max(durables[1]));
        assert!(low.0 < high.0 && low.1 > 0 && high.1 > 0, "{durables:?}");
        // The lower lane "created" a new segment in a batch that failed.
        let new = store.next_seg.fetch_add(1, Ordering::Relaxed);
        store.register_active(new).unwrap();
        let path = seg_path(&store.seg_dir, new);
        let file = fsutil::open_or_create(&path).unwrap();
        file.write_all_at(b"never durable", 0).unwrap();
        let mut writer = Writer::new(new, Some(file), 0);
        // The other lane's segment (records and padding) is not touched.
        let high_size = fs::metadata(seg_path(&store.seg_dir, high.0))
            .unwrap()
            .len();
        assert!(high_size >= high.1);
        let groups = [Group {
            seg: new,
            start: 0,
            bytes: Vec::new(),
            entries: Vec::new(),
        }];
        store.roll_back(&mut writer, &groups, low.0, low.1).unwrap();
        assert!(!path.exists());
        assert!(
            seg_path(&store.seg_dir, high.0).exists(),
            "another lane's segment was removed"
        );
        assert_eq!(writer.seg, low.0);
        assert!(!store.lock_active().contains(&new));
        assert_eq!(
            fs::metadata(seg_path(&store.seg_dir, high.0))
                .unwrap()
                .len(),
            high_size
        );
    }
}
