//! The active-segment list (`segments/active`): the segments that may hold
//! bytes that were written but never made durable, i.e. every segment some
//! lane of the store appends to (see `store`). After a crash, open truncates
//! a torn tail only in the segments this list names; a failing tail of any
//! other segment is media damage (isolated and reported, never truncated).
//!
//! A segment is added (file written, fsynced, renamed, directory fsynced)
//! *before* its file is created, so the list on disk always names every
//! segment that may have a torn tail. Sealed segments are dropped from it
//! lazily, at the next rewrite: it may name a few segments that were sealed
//! since, which is harmless (a sealed segment has no torn tail to cut).
//!
//! Layout (little endian):
//!
//! ```text
//! "BRAS" | version u8 (1) | 3 reserved | count u32 | count × segment u32 | crc32c u32
//! ```
//!
//! The crc32c covers every byte before it. Pure codec: no file access.

const MAGIC: &[u8; 4] = b"BRAS";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 12;
/// More segments than any store has lanes: a count above it is damage.
pub(crate) const SEGMENTS_MAX: usize = 1 << 16;

/// The file's name under `segments/`.
pub(crate) const FILE_NAME: &str = "active";

/// Encodes the list (segments in the order given).
pub(crate) fn encode(segments: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 4 * segments.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for seg in segments {
        out.extend_from_slice(&seg.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the list; `None` if it is damaged, truncated or of another
/// version.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<u32>> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    if body.len() < HEADER_BYTES || &body[..4] != MAGIC || body[4] != VERSION {
        return None;
    }
    let count = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let list = &body[HEADER_BYTES..];
    if count > SEGMENTS_MAX || list.len() != count * 4 {
        return None;
    }
    Some(
        list.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_any_damage() {
        for list in [vec![], vec![7], vec![3, 9, 12, 40_000]] {
            let bytes = encode(&list);
            assert_eq!(decode(&bytes), Some(list.clone()));
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 1;
                assert_eq!(decode(&bad), None, "flip at {i} accepted");
            }
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None, "cut at {cut} accepted");
            }
        }
    }

    #[test]
    fn refuses_a_well_checksummed_wrong_count_or_version() {
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let good = encode(&[1, 2]);
        for count in [1u32, 3, u32::MAX] {
            let mut bad = good.clone();
            bad[8..12].copy_from_slice(&count.to_le_bytes());
            assert_eq!(decode(&reseal(bad)), None, "count {count}");
        }
        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(decode(&reseal(bad)), None);
    }
}
