//! Scrub: read every stored byte and check it. Segment records are checked
//! against their crc32c and their payload against their digest; standalone
//! blob files against their name; every digest the metadata names must be
//! stored somewhere. A segment record that fails is dropped from the index
//! on the spot, so it is never served again (a new push of the blob stores a
//! good copy); each problem lists the repositories, manifests and tags that
//! reach the blob, so an operator knows which images to push again.

use std::collections::HashSet;

use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::Result;
use crate::io::{Io, OpenMode};
use crate::state::{Repository, State};
use crate::Engine;

/// Where a problem was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobLocation {
    /// A byte range of a segment file.
    Segment {
        /// Segment number (`segments/<n>.seg`).
        segment: u32,
        /// First byte of the record or damaged range.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// A standalone blob file.
    File(PathBuf),
    /// Nowhere: the metadata names a blob the store does not hold.
    Nowhere,
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The bytes fail their crc32c (or the record cannot even be framed).
    Checksum,
    /// The bytes do not hash to the digest they are stored under.
    DigestMismatch,
    /// The bytes could not be read.
    Unreadable(String),
    /// The metadata names the blob but no stored copy exists.
    Missing,
}

/// How one repository reaches a damaged blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoReference {
    /// Repository name.
    pub repo: String,
    /// The blob is linked into the repository (or is one of its manifests).
    pub linked: bool,
    /// Manifests of the repository that are the blob or reference it
    /// directly.
    pub manifests: Vec<Digest>,
    /// Tags whose image (following index children) includes the blob.
    pub tags: Vec<String>,
}

/// One damaged or missing blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubProblem {
    /// The digest the damaged bytes are stored under, when readable.
    pub digest: Option<Digest>,
    /// Where.
    pub location: BlobLocation,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Whether another, intact copy of the blob is still stored (then
    /// nothing is lost).
    pub intact_copy: bool,
    /// Who references it.
    pub references: Vec<RepoReference>,
}

/// What a scrub checked and found.
#[derive(Clone, Debug, Default)]
pub struct ScrubReport {
    /// Segment files read.
    pub segments_checked: usize,
    /// Valid segment records checked.
    pub records_checked: u64,
    /// Standalone blob files checked.
    pub files_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Everything found wrong; empty means the store is sound.
    pub problems: Vec<ScrubProblem>,
}

fn reaches(r: &Repository, from: &Digest, target: &Digest, seen: &mut HashSet<Digest>) -> bool {
    if from == target {
        return true;
    }
    if !seen.insert(from.clone()) {
        return false;
    }
    let Some(m) = r.manifests.get(from) else {
        return false;
    };
    m.references
        .iter()
        .any(|child| child == target || reaches(r, child, target, seen))
}

/// Who references `digest`, from the metadata.
pub(crate) fn references(state: &State, digest: &Digest) -> Vec<RepoReference> {
    let mut out = Vec::new();
    for (name, r) in &state.repos {
        let linked = r.blobs.contains_key(digest) || r.manifests.contains_key(digest);
        let mut manifests: Vec<Digest> = r
            .manifests
            .iter()
            .filter(|(d, m)| *d == digest || m.references.contains(digest))
            .map(|(d, _)| d.clone())
            .collect();
        manifests.sort();
        let tags: Vec<String> = r
            .tags
            .iter()
            .filter(|(_, m)| reaches(r, m, digest, &mut HashSet::new()))
            .map(|(t, _)| t.clone())
            .collect();
        if linked || !manifests.is_empty() || !tags.is_empty() {
            out.push(RepoReference {
                repo: name.clone(),
                linked,
                manifests,
                tags,
            });
        }
    }
    out
}

impl Engine {
    /// Reads and verifies every stored byte; see [`crate::scrub`]. Safe to
    /// run while the engine serves; blocks the calling thread for as long as
    /// reading the whole store takes.
    pub fn scrub(&self) -> Result<ScrubReport> {
        self.scrub_with_progress(&mut |_, _| {})
    }

    /// As [`Engine::scrub`], calling `progress(bytes_checked, bytes_total)`
    /// after each segment and file (for a progress bar).
    pub fn scrub_with_progress(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut found: Vec<(Option<Digest>, BlobLocation, ProblemKind)> = Vec::new();
        let segments = self.store.segments();
        let files = self.store.list_files()?;
        let total = segments.iter().map(|(_, size)| size).sum::<u64>()
            + files.iter().map(|(_, _, size)| size).sum::<u64>();
        for (seg, size) in segments {
            let scan = self.store.scan_segment(seg, size)?;
            report.segments_checked += 1;
            report.records_checked += scan.records.len() as u64;
            report.bytes_checked += size;
            for d in scan.damaged {
                self.store.quarantine_range(seg, d.start, d.end);
                let location = BlobLocation::Segment {
                    segment: seg,
                    start: d.start,
                    end: d.end,
                };
                found.push((d.claimed, location, ProblemKind::Checksum));
            }
            for r in scan.digest_mismatches {
                self.store.quarantine_range(seg, r.offset, r.end());
                let location = BlobLocation::Segment {
                    segment: seg,
                    start: r.offset,
                    end: r.end(),
                };
                found.push((
                    Some(r.digest.to_digest()),
                    location,
                    ProblemKind::DigestMismatch,
                ));
            }
            progress(report.bytes_checked, total);
        }
        for (digest, path, _) in files {
            report.files_checked += 1;
            match hash_file(&*self.io, &path, &digest) {
                Ok((actual, n)) => {
                    report.bytes_checked += n;
                    if actual != digest {
                        found.push((
                            Some(digest),
                            BlobLocation::File(path),
                            ProblemKind::DigestMismatch,
                        ));
                    }
                }
                Err(e) => found.push((
                    Some(digest),
                    BlobLocation::File(path),
                    ProblemKind::Unreadable(e.to_string()),
                )),
            }
            progress(report.bytes_checked, total);
        }
        let state = self.meta.read();
        let reported: HashSet<Digest> = found.iter().filter_map(|(d, _, _)| d.clone()).collect();
        let mut named: Vec<&Digest> = state
            .repos
            .values()
            .flat_map(|r| r.blobs.keys().chain(r.manifests.keys()))
            .collect();
        named.sort();
        named.dedup();
        for d in named {
            if !reported.contains(d) && !self.store.contains(d) {
                found.push((Some(d.clone()), BlobLocation::Nowhere, ProblemKind::Missing));
            }
        }
        for (digest, location, kind) in found {
            let references = digest
                .as_ref()
                .map(|d| references(&state, d))
                .unwrap_or_default();
            let intact_copy = kind != ProblemKind::Missing
                && digest
                    .as_ref()
                    .is_some_and(|d| self.stored_intact(d, &location));
            report.problems.push(ScrubProblem {
                digest,
                location,
                kind,
                intact_copy,
                references,
            });
        }
        Ok(report)
    }

    /// Whether `digest` is stored somewhere other than `bad`.
    fn stored_intact(&self, digest: &Digest, bad: &BlobLocation) -> bool {
        if let Some(loc) = self.store.locate(digest) {
            return !matches!(bad, BlobLocation::Segment { segment, start, .. } if *segment == loc.seg && *start == loc.record);
        }
        !matches!(bad, BlobLocation::File(_)) && self.io.exists(&self.store.blob_path(digest))
    }
}

fn hash_file(io: &dyn Io, path: &Path, digest: &Digest) -> std::io::Result<(Digest, u64)> {
    let file = io.open(path, OpenMode::READ)?;
    let total = file.len()?;
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < total {
        let n = usize::try_from((total - at).min(buf.len() as u64))
            .map_err(|_| std::io::ErrorKind::InvalidInput)?;
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok((hasher.finish(), total))
}
