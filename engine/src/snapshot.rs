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
//! "BRIX" | version u8 (1) | 3 reserved | segments u32 | entries u64
//! segments × (segment u32, covered bytes u64)
//! entries  × (algorithm code u8, raw digest, segment u32, record offset u64, payload length u64)
//! crc32c u32 over everything before it
//! ```

use crate::digest::{Algorithm, Digest};

const MAGIC: &[u8; 4] = b"BRIX";
const VERSION: u8 = 1;

/// A decoded snapshot.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// For each segment it covers, the byte length it covers.
    pub covered: Vec<(u32, u64)>,
    /// (digest, segment, record offset, payload length).
    pub entries: Vec<(Digest, u32, u64, u64)>,
}

/// Encodes a snapshot.
pub(crate) fn encode<'a>(
    covered: &[(u32, u64)],
    entries: impl ExactSizeIterator<Item = (&'a Digest, u32, u64, u64)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + covered.len() * 12 + entries.len() * 53);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(covered.len() as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (seg, len) in covered {
        out.extend_from_slice(&seg.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    for (digest, seg, record, len) in entries {
        out.push(digest.algorithm().code());
        out.extend_from_slice(&digest.raw());
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
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes a snapshot; `None` if it is damaged or of another version.
pub(crate) fn decode(bytes: &[u8]) -> Option<Snapshot> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    if r.take(4)? != MAGIC || r.take(4)?[0] != VERSION {
        return None;
    }
    let segments = r.u32()? as usize;
    let entries = r.u64()? as usize;
    let mut snapshot = Snapshot {
        covered: Vec::with_capacity(segments.min(1 << 20)),
        entries: Vec::with_capacity(entries.min(1 << 26)),
    };
    for _ in 0..segments {
        snapshot.covered.push((r.u32()?, r.u64()?));
    }
    for _ in 0..entries {
        let algorithm = Algorithm::from_code(r.take(1)?[0])?;
        let digest = Digest::from_raw(algorithm, r.take(algorithm.raw_len())?)?;
        snapshot
            .entries
            .push((digest, r.u32()?, r.u64()?, r.u64()?));
    }
    (r.pos == body.len()).then_some(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let d1 = Digest::sha256_of(b"a");
        let d2 = Digest::of(Algorithm::Sha512, b"b");
        let entries = [(&d1, 1u32, 0u64, 10u64), (&d2, 2, 100, 20)];
        let bytes = encode(&[(1, 62), (2, 204)], entries.iter().copied());
        let snapshot = decode(&bytes).unwrap();
        assert_eq!(snapshot.covered, vec![(1, 62), (2, 204)]);
        assert_eq!(snapshot.entries, vec![(d1, 1, 0, 10), (d2, 2, 100, 20)]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_none(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none());
        }
    }
}
