//! What opening the store found: counts for the open report, the damaged
//! ranges, and which segment bytes survived the last crash (`Survival`),
//! filled by `open` and `snapshot`.

use std::collections::{BTreeSet, HashMap};

use crate::metalog::Written;

use super::DamagedRecord;

pub(crate) struct StoreOpen {
    pub segments: usize,
    pub survival: Survival,
    pub records: usize,
    /// Index entries taken from the snapshot instead of a scan.
    pub snapshot_entries: usize,
    pub torn_tail_bytes: u64,
    pub damaged: Vec<DamagedRecord>,
}

/// What opening the store found on disk, to tell whether segment bytes a
/// metadata record names (see [`Written`]) survived the last crash.
pub(crate) struct Survival {
    /// Every segment's length after its torn tail (if any) was cut.
    pub(super) lengths: HashMap<u32, u64>,
    /// What `segments/active` listed, if it was readable.
    pub(super) listed: Option<BTreeSet<u32>>,
    /// The highest-numbered segment on disk.
    pub(super) highest: Option<u32>,
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
