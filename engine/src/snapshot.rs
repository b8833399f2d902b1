//! The index snapshot: the segment index (digest → location) as of some
//! moment, with how far into each segment it reaches, so a restart reads one
//! small file and scans only the segment bytes written after it instead of
//! every record. A snapshot is only a cache of what the segments say: when
//! it is missing, damaged, or disagrees with the segment files, the engine
//! falls back to the full scan.
//!
//! Layout (little endian), written to a temporary file, fsynced and renamed:
//!
//! ```text
//! "BRIX" | version u8 (2) | 3 reserved | segments u32 | entries u64
//! hash key: 2 × u64 (version 2 only)
//! segments × (segment u32, covered bytes u64)
//! entries  × (algorithm code u8, raw digest, segment u32, record offset u64, payload length u64)
//! crc32c u32 over everything before it
//! ```
//!
//! Version 2 adds the index's hash key and lists the entries in the index's
//! bucket order (see `index::LocMap::seed`); version 1 files are still read.

use crate::digest::{Algorithm, RawDigest};
use crate::segment::PAYLOAD_BYTES_MAX;

const MAGIC: &[u8; 4] = b"BRIX";
const VERSION: u8 = 2;
/// Version 1: no hash key, entries in any order.
const VERSION_1: u8 = 1;
const HEADER_BYTES: usize = 36;

/// One index entry: digest, segment, record offset, payload length.
pub(crate) type Entry = (RawDigest, u32, u64, u64);

/// A decoded snapshot. The entries stay in the file's bytes and are parsed
/// as they are iterated (no second copy of a million entries); `decode` has
/// already checked every one of them.
#[derive(Debug)]
pub(crate) struct Snapshot<'a> {
    /// For each segment it covers, the byte length it covers.
    pub covered: Vec<(u32, u64)>,
    /// How many entries of each algorithm, in `Algorithm::code` order
    /// (sha256, sha512, blake3): the index is sized from them up front.
    pub counts: [usize; 3],
    /// The hash key the entries are ordered by (version 2).
    pub seed: Option<[u64; 2]>,
    entries: &'a [u8],
}

impl<'a> Snapshot<'a> {
    /// Every entry, in file order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + 'a {
        let mut r = Reader {
            bytes: self.entries,
            pos: 0,
        };
        std::iter::from_fn(move || r.entry())
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }
}

/// Encodes a snapshot.
pub(crate) fn encode(
    seed: [u64; 2],
    covered: &[(u32, u64)],
    entries: impl ExactSizeIterator<Item = Entry>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 4 + covered.len() * 12 + entries.len() * 53);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(covered.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&seed[0].to_le_bytes());
    out.extend_from_slice(&seed[1].to_le_bytes());
    for (seg, len) in covered {
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    for (digest, seg, record, len) in entries {
        out.push(digest.algorithm().code());
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&record.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        out.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(*self.take::<4>()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(*self.take::<8>()?))
    }
    /// The next entry; `None` at the end or on anything malformed.
    fn entry(&mut self) -> Option<Entry> {
        let algorithm = Algorithm::from_code(self.take::<1>()?[0])?;
        let raw = match algorithm.raw_len() {
            32 => RawDigest::new(algorithm, self.take::<32>()?)?,
            _ => RawDigest::new(algorithm, self.take::<64>()?)?,
        };
        let (seg, record, len) = (self.u32()?, self.u64()?, self.u64()?);
        (len <= PAYLOAD_BYTES_MAX).then_some((raw, seg, record, len))
    }
}

/// Decodes a snapshot; `None` if it is damaged or of another version.
pub(crate) fn decode(bytes: &[u8]) -> Option<Snapshot<'_>> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    if r.take::<4>()? != MAGIC {
        return None;
    }
    let version = r.take::<4>()?[0];
    if version != VERSION && version != VERSION_1 {
        return None;
    }
    let segments = r.u32()? as usize;
    let entries = r.u64()?;
    let seed = match version {
        VERSION => Some([r.u64()?, r.u64()?]),
        _ => None,
    };
    let mut covered = Vec::with_capacity(segments.min(1 << 20));
    for _ in 0..segments {
        covered.push((r.u32()?, r.u64()?));
    }
    // Check every entry now, so iterating them later cannot fail halfway.
    let start = r.pos;
    let mut counts = [0usize; 3];
    for _ in 0..entries {
        let (digest, ..) = r.entry()?;
        counts[usize::from(digest.algorithm().code() - 1)] += 1;
    }
    (r.pos == body.len()).then_some(Snapshot {
        covered,
        counts,
        seed,
        entries: &body[start..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    /// Covered segments, counts per algorithm and entries of a snapshot.
    type Decoded = (Vec<(u32, u64)>, [usize; 3], Vec<Entry>);

    fn entries(bytes: &[u8]) -> Option<Decoded> {
        let snapshot = decode(bytes)?;
        let entries: Vec<Entry> = snapshot.entries().collect();
        assert_eq!(entries.len(), snapshot.len());
        Some((snapshot.covered, snapshot.counts, entries))
    }

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let d1 = Digest::sha256_of(b"a").to_raw();
        let d2 = Digest::of(Algorithm::Sha512, b"b").to_raw();
        let d3 = Digest::of(Algorithm::Blake3, b"c").to_raw();
        let list = [(d1, 1u32, 0u64, 10u64), (d2, 2, 100, 20), (d3, 2, 200, 0)];
        let bytes = encode([7, 9], &[(1, 62), (2, 204)], list.iter().copied());
        assert_eq!(decode(&bytes).unwrap().seed, Some([7, 9]));
        let (covered, counts, decoded) = entries(&bytes).unwrap();
        assert_eq!(covered, vec![(1, 62), (2, 204)]);
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(decoded, list);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_none(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none());
        }
    }

    /// Damage that a crc cannot see (a writer bug, not bit rot): each is
    /// refused as a whole, never half-loaded.
    #[test]
    fn refuses_well_checksummed_nonsense() {
        let d1 = Digest::sha256_of(b"a").to_raw();
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let good = encode([1, 1], &[(1, 62)], [(d1, 1u32, 0u64, 10u64)].into_iter());
        assert!(decode(&good).is_some());
        // An unknown algorithm code.
        let mut bad = good.clone();
        bad[HEADER_BYTES + 12] = 9;
        assert!(decode(&reseal(bad)).is_none());
        // More entries announced than present, and fewer.
        for count in [0u64, 2] {
            let mut bad = good.clone();
            bad[12..20].copy_from_slice(&count.to_le_bytes());
            assert!(decode(&reseal(bad)).is_none());
        }
        // A payload length no record can have.
        let big = encode(
            [1, 1],
            &[(1, 62)],
            [(d1, 1u32, 0u64, PAYLOAD_BYTES_MAX + 1)].into_iter(),
        );
        assert!(decode(&big).is_none());
        // Another version.
        let mut bad = good.clone();
        bad[4] = 3;
        assert!(decode(&reseal(bad)).is_none());
    }

    /// Version 1 (written by the previous release: no hash key) is read.
    #[test]
    fn reads_version_1() {
        let d1 = Digest::sha256_of(b"a").to_raw();
        let d2 = Digest::of(Algorithm::Sha512, b"b").to_raw();
        let list = [(d1, 1u32, 0u64, 10u64), (d2, 1, 62, 20)];
        let v2 = encode([5, 5], &[(1, 166)], list.iter().copied());
        // The same snapshot as version 1 wrote it: no key after the counts.
        let mut v1 = v2[..20].to_vec();
        v1[4] = VERSION_1;
        v1.extend_from_slice(&v2[36..v2.len() - 4]);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let snapshot = decode(&v1).unwrap();
        assert_eq!(snapshot.seed, None);
        assert_eq!(snapshot.covered, vec![(1, 166)]);
        assert_eq!(snapshot.entries().collect::<Vec<_>>(), list);
    }
}
