//! The index snapshot's glue to the store (the codec is `crate::snapshot`):
//! loading it at open when it agrees with the segment files, and writing it.

use std::collections::HashMap;
use std::path::Path;

use crate::digest::Algorithm;
use crate::error::Result;
use crate::fsutil;
use crate::index::Loc;
use crate::index::LocMap;
use crate::io::Io;

use super::report::StoreOpen;
use super::{seg_path, BlobStore};

const SNAPSHOT_FILE: &str = "index.snap";

/// Loads the index snapshot into `map` when it agrees with the segment files
/// (each covered segment still at least as long as covered; removed
/// segments' entries dropped). Returns how far into each segment it reaches,
/// so only the rest is scanned. Any disagreement means a full scan.
pub(super) fn load_snapshot(
    io: &dyn Io,
    seg_dir: &Path,
    segs: &[u32],
    map: &mut LocMap,
    report: &mut StoreOpen,
) -> HashMap<u32, u64> {
    // One read of the whole file (a plain read: the engine forbids unsafe
    // code, so no mmap; from the page cache this is a memcpy).
    let Ok(bytes) = io.read(&seg_dir.join(SNAPSHOT_FILE)) else {
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
        match io.stat(&seg_path(seg_dir, seg)) {
            Ok(Some(stat)) if stat.len >= len => {
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
    /// Writes the index snapshot (see `snapshot`): every indexed record in
    /// the durable part of the segments (all of a sealed segment, the
    /// durable prefix of each lane's active one). Atomic (temporary file,
    /// fsync, rename); a crash leaves the previous snapshot.
    pub fn write_snapshot(&self) -> Result<usize> {
        let covered: Vec<(u32, u64)> = self.segments();
        let bytes = {
            let index = self.read_index();
            let reach: HashMap<u32, u64> = covered.iter().copied().collect();
            // Only durable bytes are covered: an entry past them would let
            // the next open skip a scan of bytes that may not be there.
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
        fsutil::replace_file(
            &*self.io,
            &self.seg_dir.join("index.snap.tmp"),
            &self.seg_dir.join(SNAPSHOT_FILE),
            &bytes,
        )?;
        Ok(count)
    }
}
