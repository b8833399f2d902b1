//! The content-addressed blob store: small blobs packed into segment files
//! with group commit, large blobs as one file each, and the in-memory index
//! from digest to location.
//!
//! - `segments/<n>.seg`: append-only segment files (see `segment`). Only the
//!   highest-numbered one (the *active* segment) is appended to; it rolls to
//!   a new number once it would exceed the size limit.
//! - `blobs/<alg>/<xx>/<hex>`: one file per large blob, committed by rename.
//!
//! The index maps a digest to a segment record. It is rebuilt at open by
//! scanning every segment; standalone files are found by path (the directory
//! is their index), so opening never walks `blobs/`.
//!
//! Group commit: appenders queue encoded records; one of them (the leader)
//! writes everything queued with one `pwrite` per segment touched and one
//! fdatasync, then publishes the new index entries and wakes the rest. An
//! entry is visible only after its bytes are durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::digest::{Algorithm, Digest};
use crate::error::{EngineError, Result};
use crate::fsutil;
pub(crate) use crate::index::Loc;
use crate::index::LocMap;
use crate::segment::{self, Damage};

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
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            small_blob_max: 1024 * 1024,
            segment_bytes_max: 256 * 1024 * 1024,
            verify_reads: false,
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
    pub records: usize,
    /// Index entries taken from the snapshot instead of a scan.
    pub snapshot_entries: usize,
    pub torn_tail_bytes: u64,
    pub damaged: Vec<DamagedRecord>,
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

struct Writer {
    seg: u32,
    file: Option<File>,
}

struct Entry {
    digest: Digest,
    loc: Loc,
    /// For a compaction copy: the location it replaces.
    from: Option<Loc>,
}

struct Group {
    seg: u32,
    start: u64,
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

struct Queue {
    /// `None` while a leader is writing.
    writer: Option<Writer>,
    /// The logical end of the store, pending records included.
    tail_seg: u32,
    tail_len: u64,
    /// The durable end of the active segment.
    durable_seg: u32,
    durable_len: u64,
    groups: Vec<Group>,
    inflight: HashMap<Digest, u64>,
    queued_seq: u64,
    durable_seq: u64,
    failed: bool,
    /// Sequence ranges `(after, upto]` whose write failed (disk full) and
    /// was rolled back, with the error: those callers fail, later ones go on.
    refused: Vec<(u64, u64, String)>,
}

/// How writing a batch of groups failed.
enum WriteFail {
    /// A write (or file creation) failed, e.g. the disk is full: nothing of
    /// the batch is acknowledged and it can be rolled back.
    Write(io::Error),
    /// An fsync failed: what is on disk is unknown, the store stops writing.
    Sync(io::Error),
}

pub(crate) struct BlobStore {
    root: PathBuf,
    seg_dir: PathBuf,
    pub opts: EngineOptions,
    index: RwLock<Index>,
    queue: Mutex<Queue>,
    flushed: Condvar,
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

impl BlobStore {
    pub fn open(root: &Path, opts: EngineOptions) -> Result<(BlobStore, StoreOpen)> {
        let seg_dir = root.join("segments");
        fsutil::create_dir_durable(&seg_dir)?;
        let segs = list_segments(&seg_dir)?;
        let mut map = LocMap::default();
        let mut files = BTreeMap::new();
        let mut report = StoreOpen {
            segments: segs.len(),
            records: 0,
            snapshot_entries: 0,
            torn_tail_bytes: 0,
            damaged: Vec::new(),
        };
        let mut writer = Writer { seg: 0, file: None };
        let (mut tail_seg, mut tail_len) = (1, 0);
        let covered = load_snapshot(&seg_dir, &segs, &mut map, &mut report);
        for (i, &seg) in segs.iter().enumerate() {
            let active = i + 1 == segs.len();
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
            if active {
                if scan.valid_len < size {
                    report.torn_tail_bytes = size - scan.valid_len;
                    file.set_len(scan.valid_len)?;
                    file.sync_data()?;
                }
                (tail_seg, tail_len) = (seg, scan.valid_len);
                writer = Writer {
                    seg,
                    file: Some(file.try_clone()?),
                };
            }
            files.insert(seg, Arc::new(file));
        }
        let queue = Queue {
            writer: Some(writer),
            tail_seg,
            tail_len,
            durable_seg: tail_seg,
            durable_len: tail_len,
            groups: Vec::new(),
            inflight: HashMap::new(),
            queued_seq: 0,
            durable_seq: 0,
            failed: false,
            refused: Vec::new(),
        };
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
            queue: Mutex::new(queue),
            flushed: Condvar::new(),
        };
        Ok((store, report))
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Stores a small blob in the active segment unless the store already
    /// holds it. Returns when its bytes are durable.
    pub fn put_small(&self, digest: &Digest, payload: &[u8]) -> Result<()> {
        if self.blob_path(digest).exists() {
            return Ok(());
        }
        self.append(&[(digest, payload, None)])
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

    /// Appends records and waits until they are durable and indexed. An
    /// item with a `from` location is a compaction copy: it is always
    /// written, and replaces the index entry only if that still is `from`.
    /// Other items are skipped when the blob is indexed or being appended.
    fn append(&self, items: &[(&Digest, &[u8], Option<Loc>)]) -> Result<()> {
        let mut queue = self.lock_queue();
        if queue.failed {
            return Err(EngineError::PreviousIo);
        }
        let mut wait_for = 0u64;
        let mut queued_any = false;
        for (digest, payload, from) in items {
            if from.is_none() {
                if self.read_index().map.contains(&digest.to_raw()) {
                    continue;
                }
                if let Some(&seq) = queue.inflight.get(*digest) {
                    wait_for = wait_for.max(seq);
                    continue;
                }
            }
            let rec_len = segment::record_len(digest, payload.len() as u64);
            if queue.tail_len > 0 && queue.tail_len + rec_len > self.opts.segment_bytes_max {
                queue.tail_seg += 1;
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
            group.entries.push(Entry {
                digest: (*digest).clone(),
                loc,
                from: *from,
            });
            queue.tail_len += rec_len;
            if !queued_any {
                queue.queued_seq += 1;
                queued_any = true;
            }
            let seq = queue.queued_seq;
            if from.is_none() {
                queue.inflight.insert((*digest).clone(), seq);
            }
            wait_for = seq;
        }
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
            if queue.failed {
                return Err(EngineError::PreviousIo);
            }
            let Some(mut writer) = queue.writer.take() else {
                queue = self.flushed.wait(queue).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let groups = std::mem::take(&mut queue.groups);
            let upto = queue.queued_seq;
            drop(queue);
            let written = self.write_groups(&mut writer, &groups);
            queue = self.lock_queue();
            match written {
                Ok(new_files) => {
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
                    for e in groups.iter().flat_map(|g| &g.entries) {
                        if queue.inflight.get(&e.digest).is_some_and(|&s| s <= upto) {
                            queue.inflight.remove(&e.digest);
                        }
                    }
                    if let Some(last) = groups.last() {
                        queue.durable_seg = last.seg;
                        queue.durable_len = last.start + last.bytes.len() as u64;
                    }
                    queue.writer = Some(writer);
                    queue.durable_seq = upto;
                    self.flushed.notify_all();
                }
                Err(WriteFail::Write(e)) => {
                    // Roll back to the durable end; this batch and anything
                    // queued behind it (whose offsets assumed it) fail, and
                    // the store takes writes again (e.g. once space is freed).
                    match self.roll_back(&mut writer, queue.durable_seg, queue.durable_len) {
                        Ok(()) => {
                            let (after, upto) = (queue.durable_seq, queue.queued_seq);
                            queue.refused.push((after, upto, e.to_string()));
                            if queue.refused.len() > 64 {
                                queue.refused.remove(0);
                            }
                            queue.groups.clear();
                            queue.inflight.retain(|_, seq| *seq <= after);
                            (queue.tail_seg, queue.tail_len) =
                                (queue.durable_seg, queue.durable_len);
                            queue.durable_seq = upto;
                        }
                        Err(_) => queue.failed = true,
                    }
                    queue.writer = Some(writer);
                    self.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
                Err(WriteFail::Sync(e)) => {
                    queue.failed = true;
                    queue.writer = Some(writer);
                    self.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
            }
        }
    }

    /// Undoes a failed write: removes segments created after the durable
    /// one and cuts the durable segment back to its durable length.
    fn roll_back(&self, writer: &mut Writer, durable_seg: u32, durable_len: u64) -> io::Result<()> {
        if writer.seg > durable_seg {
            for seg in durable_seg + 1..=writer.seg {
                match fs::remove_file(seg_path(&self.seg_dir, seg)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let path = seg_path(&self.seg_dir, durable_seg);
            let file = if path.exists() {
                Some(OpenOptions::new().read(true).write(true).open(&path)?)
            } else {
                None
            };
            *writer = Writer {
                seg: durable_seg,
                file,
            };
        }
        if let Some(file) = &writer.file {
            file.set_len(durable_len)?;
        }
        Ok(())
    }

    /// Writes queued groups and makes them durable: one fdatasync per
    /// segment touched, and a directory fsync when a segment was created.
    fn write_groups(
        &self,
        writer: &mut Writer,
        groups: &[Group],
    ) -> std::result::Result<Vec<(u32, Arc<File>)>, WriteFail> {
        let mut created = Vec::new();
        for g in groups {
            if writer.file.is_none() || writer.seg != g.seg {
                if let Some(old) = &writer.file {
                    old.sync_data().map_err(WriteFail::Sync)?;
                }
                let path = seg_path(&self.seg_dir, g.seg);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(WriteFail::Write)?;
                created.push((
                    g.seg,
                    Arc::new(File::open(&path).map_err(WriteFail::Write)?),
                ));
                *writer = Writer {
                    seg: g.seg,
                    file: Some(file),
                };
            }
            let file = writer
                .file
                .as_ref()
                .ok_or(WriteFail::Write(io::ErrorKind::NotFound.into()))?;
            file.write_all_at(&g.bytes, g.start)
                .map_err(WriteFail::Write)?;
        }
        if let Some(file) = &writer.file {
            file.sync_data().map_err(WriteFail::Sync)?;
        }
        if !created.is_empty() {
            fsutil::sync_dir(&self.seg_dir).map_err(WriteFail::Sync)?;
        }
        Ok(created)
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

    /// The lowest segment that may still receive appends; it and every
    /// later one are never compacted. Appends queued or being written always
    /// target a segment at or after the last one made durable, so every
    /// segment before it is sealed for good.
    pub fn active_segment(&self) -> u32 {
        let q = self.lock_queue();
        q.durable_seg.min(q.tail_seg)
    }

    /// Every segment with its size on disk, and the durable length of the
    /// active one.
    pub fn segments(&self) -> Vec<(u32, u64)> {
        let (dseg, dlen) = {
            let q = self.lock_queue();
            (q.durable_seg, q.durable_len)
        };
        let files: Vec<(u32, Arc<File>)> = self
            .read_index()
            .files
            .iter()
            .map(|(s, f)| (*s, f.clone()))
            .collect();
        files
            .into_iter()
            .map(|(seg, f)| {
                let size = if seg == dseg {
                    dlen
                } else {
                    f.metadata().map(|m| m.len()).unwrap_or(0)
                };
                (seg, size)
            })
            .collect()
    }

    /// Writes the index snapshot (see `snapshot`): every indexed record in
    /// the durable part of the segments. Atomic (temporary file, fsync,
    /// rename); a crash leaves the previous snapshot.
    pub fn write_snapshot(&self) -> Result<usize> {
        let (dseg, dlen) = {
            let q = self.lock_queue();
            (q.durable_seg, q.durable_len)
        };
        let bytes = {
            let index = self.read_index();
            let mut covered = Vec::new();
            for (&seg, file) in &index.files {
                if seg < dseg {
                    covered.push((seg, file.metadata()?.len()));
                } else if seg == dseg {
                    covered.push((seg, dlen));
                }
            }
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

    /// Copies the live records of a sealed segment to the active one, makes
    /// the copies durable and indexed, then deletes the segment. Reads that
    /// already hold the old file keep reading it (the descriptor outlives
    /// the unlink). Returns (records moved, bytes freed).
    pub fn compact(&self, seg: u32) -> Result<(usize, u64)> {
        if seg >= self.active_segment() {
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
        self.append(&items)
    }
}
