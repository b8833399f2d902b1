//! Maintenance of the blob store for GC, compaction and scrub: listings of
//! what is stored, which segments may be compacted, and the compaction of a
//! sealed segment (copy its live records to a lane, then delete it).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{EngineError, Result};

use crate::index::Loc;
use crate::io::IoFile;
use crate::segment;

use super::lanes::write_active_list;
use super::{seg_path, BlobStore};

/// A shared handle on a segment file.
type SegmentFile = Arc<dyn IoFile>;

impl BlobStore {
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
        let Ok(algs) = self.io.read_dir(&blobs) else {
            return Ok(out);
        };
        for alg in algs.into_iter().filter(|a| a.is_dir) {
            let alg_dir = blobs.join(&alg.name);
            let alg_name = alg.name.to_string_lossy().into_owned();
            for prefix in self.io.read_dir(&alg_dir)?.into_iter().filter(|p| p.is_dir) {
                let prefix_dir = alg_dir.join(&prefix.name);
                for file in self.io.read_dir(&prefix_dir)? {
                    let name = file.name.to_string_lossy().into_owned();
                    if let Ok(digest) = format!("{alg_name}:{name}").parse::<Digest>() {
                        let path = prefix_dir.join(&file.name);
                        let len = self.io.stat(&path)?.map_or(0, |s| s.len);
                        out.push((digest, path, len));
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
        let files: Vec<(u32, Arc<dyn IoFile>)> = self
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
                    None => f.len().unwrap_or(0),
                };
                (seg, size)
            })
            .collect()
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
        let (live, file): (Vec<(Digest, Loc)>, Option<SegmentFile>) = {
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
        let size = file.len()?;
        // Read and check every live record first: a segment holding a live
        // record that fails its crc is left alone (scrub reports it).
        let mut batch: Vec<(Digest, Vec<u8>, Loc)> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut moved = 0usize;
        for (digest, loc) in live {
            let mut bytes = Self::read_record(&*file, &loc)?;
            if !segment::record_crc_ok(&bytes) {
                return Err(EngineError::Corrupt(format!(
                    "segment {seg} record at {} fails its checksum",
                    loc.record
                )));
            }
            assert!(
                loc.payload + loc.len <= size,
                "compaction: an entry of segment {seg} ends past its {size} bytes"
            );
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
        // Compaction never deletes a segment a lane appends to: a sealed
        // segment stays sealed (lanes only move on to new numbers).
        for (i, lane) in self.lanes.iter().enumerate() {
            let q = lane.lock();
            assert!(
                q.durable_seg != seg && q.tail_seg != seg,
                "compaction: segment {seg} is lane {i}'s active segment"
            );
        }
        {
            // The list may still name this sealed segment (it is rewritten
            // lazily); a listed segment found missing at open counts as
            // lost in a crash (see `Survival::kept`), so unlist it first.
            let active = self.lock_active();
            assert!(
                !active.contains(&seg),
                "compaction: segment {seg} is listed as active"
            );
            write_active_list(&*self.io, &self.seg_dir, &active)?;
        }
        self.io.remove_file(&seg_path(&self.seg_dir, seg))?;
        self.io.sync_dir(&self.seg_dir)?;
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
