//! Garbage collection: mark what the repositories reach, commit the removal
//! of what they do not, delete unreferenced blob bytes, and compact segments
//! that are mostly garbage.
//!
//! Semantics follow registry:2's `garbage-collect`: a blob that no manifest
//! in any repository references is deleted, and its links are removed; with
//! `delete_untagged`, manifests that no tag reaches are deleted first.
//! Unlike registry:2, collection is safe while the registry serves pushes:
//!
//! - links and manifests younger than the grace period are kept, so a blob
//!   pushed (or mounted) for a manifest that is not pushed yet survives;
//! - the decision and its metadata commit happen under the engine's gate,
//!   which every reference-adding write holds shared: no push can link or
//!   reference a blob between "it is garbage" and "it is gone";
//! - bytes are deleted only after the metadata no longer names them.
//!
//! Compaction copies a sealed segment's live records to the collecting
//! thread's lane (its active segment), waits until the copies are durable
//! and indexed, then unlinks the old segment. A segment any lane appends to
//! is never compacted, nor is the highest-numbered one. A reader holding
//! the old file keeps a valid descriptor.

use std::collections::{BTreeSet, HashMap, HashSet};

use std::time::Duration;

use crate::digest::Digest;
use crate::error::Result;
use crate::metalog::Op;
use crate::state::State;
use crate::{lock, unix_now, Engine};

/// What [`Engine::garbage_collect`] does.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Report what would be deleted, change nothing.
    pub dry_run: bool,
    /// Delete manifests that no tag reaches (directly, through an index, or
    /// as a referrer of a reached manifest), like registry:2's
    /// `--delete-untagged`.
    pub delete_untagged: bool,
    /// Links and manifests younger than this are kept even if unreferenced,
    /// so pushes in progress are safe.
    pub grace_period: Duration,
    /// A sealed segment whose garbage (bytes not belonging to a live record)
    /// is at least this fraction of its size is compacted. Above 1.0 turns
    /// compaction off.
    pub compact_garbage_ratio: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace_period: Duration::from_secs(3600),
            compact_garbage_ratio: 0.5,
        }
    }
}

/// A repository and a digest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoDigest {
    /// Repository name.
    pub repo: String,
    /// The digest.
    pub digest: Digest,
}

/// One compacted (or, in a dry run, compactable) segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCompaction {
    /// Segment number.
    pub segment: u32,
    /// Its size before compaction.
    pub size: u64,
    /// Bytes of live records in it (copied to a lane's active segment).
    pub live_bytes: u64,
    /// Live records copied.
    pub records_moved: usize,
}

/// What a garbage collection did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Untagged manifests deleted (with `delete_untagged`).
    pub manifests_deleted: Vec<RepoDigest>,
    /// Links to unreferenced blobs removed.
    pub links_removed: Vec<RepoDigest>,
    /// Links to unreferenced blobs kept because they are younger than the
    /// grace period.
    pub links_kept_in_grace: Vec<RepoDigest>,
    /// Blobs whose bytes were deleted from the store (segment records become
    /// garbage for compaction; standalone files are unlinked).
    pub blobs_deleted: Vec<Digest>,
    /// Sum of the deleted blobs' lengths.
    pub bytes_deleted: u64,
    /// Segments compacted.
    pub segments_compacted: Vec<SegmentCompaction>,
    /// Disk bytes freed: deleted standalone files plus compacted segments'
    /// garbage.
    pub bytes_reclaimed: u64,
}

/// The decision, computed from the metadata alone.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub delete_manifests: Vec<RepoDigest>,
    pub unlink: Vec<RepoDigest>,
    pub kept_in_grace: Vec<RepoDigest>,
    /// Every digest whose bytes must stay.
    pub live: HashSet<Digest>,
}

pub(crate) fn plan(state: &State, now: u64, options: &GcOptions) -> Plan {
    let cutoff = now.saturating_sub(options.grace_period.as_secs());
    let young = |at: u64| at > cutoff;
    let mut out = Plan::default();
    let mut deleted: HashSet<(&str, &Digest)> = HashSet::new();
    if options.delete_untagged {
        for (name, r) in &state.repos {
            let mut reached: HashSet<&Digest> = r.tags.values().collect();
            reached.extend(
                r.manifests
                    .iter()
                    .filter(|(_, m)| young(m.at))
                    .map(|(d, _)| d),
            );
            loop {
                let mut changed = false;
                for (d, m) in &r.manifests {
                    if reached.contains(d) {
                        for child in &m.references {
                            if let Some((child, _)) = r.manifests.get_key_value(child) {
                                changed |= reached.insert(child);
                            }
                        }
                    } else if m.subject.as_ref().is_some_and(|s| reached.contains(s)) {
                        changed |= reached.insert(d);
                    }
                }
                if !changed {
                    break;
                }
            }
            for d in r.manifests.keys().filter(|d| !reached.contains(d)) {
                deleted.insert((name.as_str(), d));
                out.delete_manifests.push(RepoDigest {
                    repo: name.clone(),
                    digest: d.clone(),
                });
            }
        }
    }
    let mut marked: HashSet<&Digest> = HashSet::new();
    for (name, r) in &state.repos {
        for (d, m) in &r.manifests {
            if !deleted.contains(&(name.as_str(), d)) {
                marked.insert(d);
                marked.extend(m.references.iter());
            }
        }
    }
    for (name, r) in &state.repos {
        for d in r.blobs.keys() {
            if marked.contains(d) {
                continue;
            }
            let item = RepoDigest {
                repo: name.clone(),
                digest: d.clone(),
            };
            if young(r.linked_at.get(d).copied().unwrap_or(0)) {
                out.live.insert(d.clone());
                out.kept_in_grace.push(item);
            } else {
                out.unlink.push(item);
            }
        }
    }
    out.live.extend(marked.into_iter().cloned());
    out.delete_manifests.sort();
    out.unlink.sort();
    out.kept_in_grace.sort();
    out
}

impl Engine {
    /// Collects garbage: see the module docs of [`crate::gc`]. Safe to run
    /// while the engine serves reads and pushes; blocks the calling thread
    /// (fsyncs, file deletion, segment copies). One collection runs at a
    /// time; a second caller waits.
    pub fn garbage_collect(&self, options: &GcOptions) -> Result<GcReport> {
        let _one = lock(&self.gc_lock);
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        // Listing files may be slow; it happens outside the gate. A file
        // created after the listing is simply not considered.
        let files = self.store.list_files()?;
        let mut deleted: BTreeSet<Digest> = BTreeSet::new();
        let mut dead_in_segments: HashMap<u32, u64> = HashMap::new();
        let mut dead_file_paths = Vec::new();
        {
            let _gate = self
                .gate
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let plan = plan(&self.meta.read(), unix_now(), options);
            let dead_index: Vec<_> = self
                .store
                .index_snapshot()
                .into_iter()
                .filter(|(d, _)| !plan.live.contains(d))
                .collect();
            for (d, loc) in &dead_index {
                deleted.insert(d.clone());
                report.bytes_deleted += loc.len;
                *dead_in_segments.entry(loc.seg).or_insert(0) += loc.payload + loc.len - loc.record;
            }
            for (d, path, len) in &files {
                if !plan.live.contains(d) {
                    if deleted.insert(d.clone()) {
                        report.bytes_deleted += len;
                    }
                    report.bytes_reclaimed += len;
                    dead_file_paths.push(path.clone());
                }
            }
            if !options.dry_run {
                let mut ops: Vec<Op> = plan
                    .delete_manifests
                    .iter()
                    .map(|m| Op::DeleteManifest {
                        repo: m.repo.clone(),
                        digest: m.digest.clone(),
                    })
                    .collect();
                ops.extend(plan.unlink.iter().map(|l| Op::UnlinkBlob {
                    repo: l.repo.clone(),
                    digest: l.digest.clone(),
                }));
                self.meta.commit(ops)?;
                let digests: Vec<Digest> = dead_index.into_iter().map(|(d, _)| d).collect();
                // Nothing forgotten or deleted is still linked or pushed as
                // a manifest once the unlinks are committed.
                debug_assert!(
                    {
                        let state = self.meta.read();
                        state.repos.values().all(|r| {
                            r.blobs
                                .keys()
                                .chain(r.manifests.keys())
                                .all(|d| !deleted.contains(d))
                        })
                    },
                    "gc: a blob about to be deleted is still linked"
                );
                self.store.forget(&digests);
                for path in &dead_file_paths {
                    match self.io.remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            report.manifests_deleted = plan.delete_manifests;
            report.links_removed = plan.unlink;
            report.links_kept_in_grace = plan.kept_in_grace;
        }
        if !options.dry_run {
            let dirs: BTreeSet<_> = dead_file_paths
                .iter()
                .filter_map(|p| p.parent().map(|p| p.to_owned()))
                .collect();
            for dir in dirs {
                self.io.sync_dir(&dir)?;
            }
        }
        report.blobs_deleted = deleted.into_iter().collect();
        // Compaction of sealed segments (never one a lane appends to).
        let mut live = self.store.live_bytes();
        if options.dry_run {
            for (seg, dead) in &dead_in_segments {
                if let Some(l) = live.get_mut(seg) {
                    *l = l.saturating_sub(*dead);
                }
            }
        }
        for (seg, size) in self.store.segments() {
            if !self.store.compactable(seg) {
                continue;
            }
            let live_bytes = live.get(&seg).copied().unwrap_or(0).min(size);
            let garbage = if size == 0 {
                1.0
            } else {
                (size - live_bytes) as f64 / size as f64
            };
            if garbage < options.compact_garbage_ratio {
                continue;
            }
            let records_moved = if options.dry_run {
                self.store
                    .index_snapshot()
                    .iter()
                    .filter(|(_, l)| l.seg == seg)
                    .count()
            } else {
                self.store.compact(seg)?.0
            };
            report.bytes_reclaimed += size - live_bytes;
            report.segments_compacted.push(SegmentCompaction {
                segment: seg,
                size,
                live_bytes,
                records_moved,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(repo: &str, d: &Digest, refs: Vec<Digest>, at: u64) -> Op {
        Op::PutManifest {
            repo: repo.into(),
            digest: d.clone(),
            len: 1,
            media_type: "m".into(),
            references: refs,
            subject: None,
            artifact_type: None,
            at: Some(at),
            written: None,
        }
    }

    #[test]
    fn plan_marks_referenced_blobs_and_keeps_young_links() {
        let d = |s: &str| Digest::sha256_of(s.as_bytes());
        let mut s = State::default();
        for (blob, at) in [("layer", 10), ("old orphan", 10), ("young orphan", 995)] {
            s.apply(&Op::LinkBlob {
                repo: "r".into(),
                digest: d(blob),
                len: 1,
                at: Some(at),
                written: None,
            });
        }
        s.apply(&manifest("r", &d("m"), vec![d("layer")], 10));
        s.apply(&Op::SetTag {
            repo: "r".into(),
            tag: "t".into(),
            digest: d("m"),
        });
        s.apply(&manifest("r", &d("untagged"), vec![d("layer")], 10));
        let opts = GcOptions {
            grace_period: Duration::from_secs(100),
            delete_untagged: true,
            ..GcOptions::default()
        };
        let p = plan(&s, 1000, &opts);
        assert_eq!(
            p.delete_manifests,
            vec![RepoDigest {
                repo: "r".into(),
                digest: d("untagged")
            }]
        );
        assert_eq!(
            p.unlink,
            vec![RepoDigest {
                repo: "r".into(),
                digest: d("old orphan")
            }]
        );
        assert_eq!(
            p.kept_in_grace,
            vec![RepoDigest {
                repo: "r".into(),
                digest: d("young orphan")
            }]
        );
        for live in ["layer", "m", "young orphan"] {
            assert!(p.live.contains(&d(live)), "{live}");
        }
        assert!(!p.live.contains(&d("untagged")) && !p.live.contains(&d("old orphan")));
    }
}
