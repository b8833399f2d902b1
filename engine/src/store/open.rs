//! Opening the blob store after a clean stop or a crash: list the segments,
//! load the index snapshot, scan what it does not cover, cut the torn tail of
//! every segment `segments/active` names, and give each lane its active
//! segment.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::active_list;
use crate::digest::Algorithm;
use crate::error::Result;
use crate::fsutil;
use crate::index::Loc;
use crate::index::LocMap;
use crate::io::{Io, IoFile, OpenMode};
use crate::lane::{Lane, Queue};
use crate::segment::{self, Damage};

use super::lanes::write_active_list;
use super::report::{StoreOpen, Survival};
use super::snapshot::load_snapshot;
use super::{seg_path, BlobStore, DamagedRecord, EngineOptions, Index, ACTIVE_SEGMENTS_MAX};

/// Segment numbers present in `dir`, ascending.
fn list_segments(io: &dyn Io, dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in io.read_dir(dir)? {
        let name = entry.name;
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

fn read_active_list(io: &dyn Io, seg_dir: &Path) -> io::Result<ActiveList> {
    match io.read(&seg_dir.join(active_list::FILE_NAME)) {
        Ok(bytes) => Ok(match active_list::decode(&bytes) {
            Some(list) => ActiveList::Listed(list),
            None => ActiveList::Damaged,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ActiveList::Missing),
        Err(e) => Err(e),
    }
}

/// Whether bytes `from..to` of `file` are all zero.
fn zeros_only(file: &dyn IoFile, from: u64, to: u64) -> io::Result<bool> {
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

/// A segment kept as a lane's active one at open: its number, durable
/// length and a writable descriptor.
struct Reused {
    seg: u32,
    len: u64,
    file: Box<dyn IoFile>,
}

impl BlobStore {
    /// Opens the store: loads the index snapshot, scans what it does not
    /// cover, truncates the torn tail of every segment `segments/active`
    /// names (the highest-numbered one for a store without that file), and
    /// gives each lane an active segment: one of those (lowest first) while
    /// they last, else a new number whose file is created by the lane's
    /// first write. The others are sealed from now on.
    pub fn open(
        io: Arc<dyn Io>,
        root: &Path,
        opts: EngineOptions,
    ) -> Result<(BlobStore, StoreOpen)> {
        let seg_dir = root.join("segments");
        fsutil::create_dir_durable(&*io, &seg_dir)?;
        let segs = list_segments(&*io, &seg_dir)?;
        let listed = read_active_list(&*io, &seg_dir)?;
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
        let covered = load_snapshot(&*io, &seg_dir, &segs, &mut map, &mut report);
        for &seg in &segs {
            let active = candidates.contains(&seg);
            let path = seg_path(&seg_dir, seg);
            let mode = if active {
                OpenMode::READ_WRITE
            } else {
                OpenMode::READ
            };
            let file = io.open(&path, mode)?;
            let size = file.len()?;
            let from = covered.get(&seg).copied().unwrap_or(0);
            assert!(
                from <= size,
                "open: snapshot covers segment {seg} to {from}, past its {size} bytes"
            );
            let scan = segment::scan_from(&*file, from, size, active, false)?;
            // Recovery's cut offset lies inside the file, and every record
            // found lies inside the part kept.
            assert!(
                scan.valid_len <= size,
                "open: segment {seg} cut at {} past its {size} bytes",
                scan.valid_len
            );
            debug_assert!(
                scan.records
                    .iter()
                    .all(|r| r.payload_offset + r.len <= scan.valid_len),
                "open: a record of segment {seg} ends past its valid length"
            );
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
                    if !zeros_only(&*file, scan.valid_len, size)? {
                        // Padding alone (see `pad_ahead`) is not a torn write.
                        report.torn_tail_bytes += size - scan.valid_len;
                    }
                    file.set_len(scan.valid_len)?;
                    file.sync_data()?;
                }
                assert!(
                    !active || file.len()? == scan.valid_len,
                    "open: active segment {seg} not cut to its valid length"
                );
                if reused.len() < lane_count {
                    reused.push(Reused {
                        seg,
                        len: scan.valid_len,
                        file: file.try_clone()?,
                    });
                }
            }
            files.insert(seg, Arc::from(file));
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
            write_active_list(&*io, &seg_dir, &kept)?;
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
        debug_assert!(
            map.locs().all(|l| files.contains_key(&l.seg)),
            "open: an index entry names a segment that is not open"
        );
        assert!(
            kept.len() <= lane_count,
            "open: {} segments kept active for {lane_count} lanes",
            kept.len()
        );
        assert!(
            segs.last()
                .is_none_or(|&h| next_seg.load(Ordering::Relaxed) > h),
            "open: the next segment number does not exceed every existing one"
        );
        let store = BlobStore {
            io,
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
}
