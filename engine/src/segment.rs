//! Segment files: append-only sequences of self-describing blob records.
//!
//! Record layout (little endian; `docs/design/segment-store.md` has the
//! full story):
//!
//! ```text
//! offset  size  field
//! 0       4     magic "BRSG"
//! 4       1     format version (1)
//! 5       1     flags (bit 0: written by compaction; other bits zero)
//! 6       1     digest algorithm: 1 sha256, 2 sha512, 3 blake3
//! 7       1     digest length D in bytes (32 for sha256/blake3, 64 for sha512)
//! 8       8     payload length N
//! 16      4     crc32c over bytes 0..16, the digest bytes and the payload
//! 20      D     the raw digest
//! 20+D    N     the payload (the blob's bytes)
//! ```
//!
//! Records are not aligned. A record is valid when its header parses, its
//! whole length is in the file and its crc32c matches. The scanner here
//! rebuilds the list of records of a segment from its bytes alone: a record
//! that fails is skipped (the scanner resynchronises on the next record that
//! validates, including its digest), and a failure with nothing valid after
//! it is a torn tail, which the caller truncates in an active segment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::digest::{Algorithm, Digest, RawDigest};

/// The record magic.
pub const MAGIC: &[u8; 4] = b"BRSG";
/// The record format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Fixed header bytes before the digest.
pub const HEADER_BYTES: u64 = 20;
/// Largest payload a record may carry; a larger length is damage.
pub const PAYLOAD_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Flag bit: the record was copied by compaction.
pub const FLAG_COMPACTED: u8 = 1;

const WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// The length of a record carrying `digest` and `payload_len` bytes.
pub fn record_len(digest: &Digest, payload_len: u64) -> u64 {
    HEADER_BYTES + digest.algorithm().raw_len() as u64 + payload_len
}

/// Offset of the payload from the record's start.
pub fn payload_offset(digest: &Digest) -> u64 {
    HEADER_BYTES + digest.algorithm().raw_len() as u64
}

/// Appends one record to `out`.
pub fn encode_record(digest: &Digest, flags: u8, payload: &[u8], out: &mut Vec<u8>) {
    let raw = digest.to_raw();
    let raw = raw.as_bytes();
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(flags);
    out.push(digest.algorithm().code());
    out.push(raw.len() as u8);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 16]), raw),
        payload,
    );
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(raw);
    out.extend_from_slice(payload);
}

/// Checks a whole record's crc32c (`bytes` is exactly one record).
pub fn record_crc_ok(bytes: &[u8]) -> bool {
    if bytes.len() < HEADER_BYTES as usize {
        return false;
    }
    let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    crc32c::crc32c_append(crc32c::crc32c(&bytes[..16]), &bytes[20..]) == stored
}

/// One valid record found by a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The digest the record carries (binary: scanning a million records
    /// allocates no strings; [`RawDigest::to_digest`] gives the hex form).
    pub digest: RawDigest,
    /// Its flags byte.
    pub flags: u8,
    /// Where the record starts in the segment.
    pub offset: u64,
    /// Where its payload starts.
    pub payload_offset: u64,
    /// Payload length.
    pub len: u64,
}

impl Record {
    /// The offset just past the record.
    pub fn end(&self) -> u64 {
        self.payload_offset + self.len
    }
}

/// A byte range of a segment that holds no valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// First damaged byte.
    pub start: u64,
    /// One past the last damaged byte (the next valid record or the end).
    pub end: u64,
    /// The digest the damaged record's header names, if it could be read.
    pub claimed: Option<Digest>,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid records, in file order.
    pub records: Vec<Record>,
    /// Damaged ranges that have valid records (or, in a sealed segment, the
    /// end) after them: isolated, never indexed.
    pub damaged: Vec<Damage>,
    /// Records whose crc is right but whose payload does not hash to their
    /// digest (only looked for when the scan verifies digests).
    pub digest_mismatches: Vec<Record>,
    /// Length of the part of the segment to keep; in an active segment,
    /// everything after it is a torn tail.
    pub valid_len: u64,
}

/// A random-access byte source: a segment file or (in tests) a slice.
pub trait Source {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl Source for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = self
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A read window over a source, so a scan costs one read per few MiB
/// instead of one per record.
struct Window<'a, S: Source + ?Sized> {
    src: &'a S,
    size: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<S: Source + ?Sized> Window<'_, S> {
    fn get(&mut self, offset: u64, len: u64) -> io::Result<Option<&[u8]>> {
        let Some(end) = offset.checked_add(len).filter(|&end| end <= self.size) else {
            return Ok(None);
        };
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let want = len.max(WINDOW_BYTES as u64).min(self.size - offset);
            self.buf.resize(want as usize, 0);
            self.src.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + len as usize]))
    }
}

enum Parsed {
    Valid(Record),
    /// The crc is right but the payload does not hash to the digest.
    WrongDigest(Record),
    Bad {
        /// Where the record would end, if its header is readable and that
        /// end is inside the segment.
        claimed_end: Option<u64>,
        claimed: Option<RawDigest>,
    },
}

fn parse_at<S: Source + ?Sized>(
    w: &mut Window<'_, S>,
    pos: u64,
    verify_digest: bool,
) -> io::Result<Parsed> {
    let bad = Parsed::Bad {
        claimed_end: None,
        claimed: None,
    };
    let Some(h) = w.get(pos, HEADER_BYTES)? else {
        return Ok(bad);
    };
    if &h[0..4] != MAGIC || h[4] != FORMAT_VERSION {
        return Ok(bad);
    }
    let flags = h[5];
    let Some(algorithm) = Algorithm::from_code(h[6]) else {
        return Ok(bad);
    };
    let dlen = h[7] as u64;
    let len = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    if dlen != algorithm.raw_len() as u64 || len > PAYLOAD_BYTES_MAX {
        return Ok(bad);
    }
    let claimed = match w.get(pos + HEADER_BYTES, dlen)? {
        Some(raw) => RawDigest::new(algorithm, raw),
        None => None,
    };
    let total = HEADER_BYTES + dlen + len;
    let Some(bytes) = w.get(pos, total)? else {
        return Ok(Parsed::Bad {
            claimed_end: None,
            claimed,
        });
    };
    if !record_crc_ok(bytes) {
        return Ok(Parsed::Bad {
            claimed_end: Some(pos + total),
            claimed,
        });
    }
    let Some(digest) = claimed else {
        return Ok(bad);
    };
    let payload_start = (HEADER_BYTES + dlen) as usize;
    let digest_ok =
        !verify_digest || Digest::of(algorithm, &bytes[payload_start..]).to_raw() == digest;
    let record = Record {
        digest,
        flags,
        offset: pos,
        payload_offset: pos + HEADER_BYTES + dlen,
        len,
    };
    Ok(if digest_ok {
        Parsed::Valid(record)
    } else {
        Parsed::WrongDigest(record)
    })
}

/// The first position at or after `from` where a record validates fully
/// (crc and digest).
fn resync<S: Source + ?Sized>(w: &mut Window<'_, S>, from: u64) -> io::Result<Option<u64>> {
    let mut p = from;
    while p + HEADER_BYTES <= w.size {
        let n = (WINDOW_BYTES as u64).min(w.size - p);
        let hits: Vec<u64> = match w.get(p, n)? {
            Some(chunk) => chunk
                .windows(4)
                .enumerate()
                .filter(|(_, win)| win == MAGIC)
                .map(|(i, _)| p + i as u64)
                .collect(),
            None => break,
        };
        for hit in hits {
            if let Parsed::Valid(_) = parse_at(w, hit, true)? {
                return Ok(Some(hit));
            }
        }
        if n < 4 {
            break;
        }
        p += n - 3;
    }
    Ok(None)
}

/// Scans the first `size` bytes of a segment. `active`: the segment is the
/// one being appended to, so trailing damage is a torn tail (excluded from
/// `valid_len`) rather than isolated damage. `verify_digests`: hash every
/// payload (scrub); records after a damaged range are always verified, so a
/// resynchronisation can never index bytes under a digest they do not have.
pub fn scan<S: Source + ?Sized>(
    src: &S,
    size: u64,
    active: bool,
    verify_digests: bool,
) -> io::Result<Scan> {
    scan_from(src, 0, size, active, verify_digests)
}

/// As [`scan`], starting at `from`, which must be a record boundary (the end
/// of the part an index snapshot already covers).
pub fn scan_from<S: Source + ?Sized>(
    src: &S,
    from: u64,
    size: u64,
    active: bool,
    verify_digests: bool,
) -> io::Result<Scan> {
    let mut w = Window {
        src,
        size,
        buf: Vec::new(),
        start: 0,
    };
    let mut out = Scan {
        valid_len: size,
        ..Scan::default()
    };
    let mut pos = from.min(size);
    let mut after_damage = false;
    while pos < size {
        let verify = verify_digests || after_damage;
        let (claimed_end, claimed) = match parse_at(&mut w, pos, verify)? {
            Parsed::Valid(record) => {
                pos = record.end();
                out.records.push(record);
                continue;
            }
            Parsed::WrongDigest(record) if !after_damage => {
                pos = record.end();
                out.digest_mismatches.push(record);
                continue;
            }
            Parsed::WrongDigest(record) => (Some(record.end()), Some(record.digest)),
            Parsed::Bad {
                claimed_end,
                claimed,
            } => (claimed_end, claimed),
        };
        let mut next = None;
        if let Some(end) = claimed_end.filter(|&end| end < size) {
            if let Parsed::Valid(_) = parse_at(&mut w, end, true)? {
                next = Some(end);
            }
        }
        if next.is_none() {
            next = resync(&mut w, pos + 1)?;
        }
        match next {
            Some(next) => {
                out.damaged.push(Damage {
                    start: pos,
                    end: next,
                    claimed: claimed.map(|c| c.to_digest()),
                });
                pos = next;
                after_damage = true;
            }
            None if active => {
                out.valid_len = pos;
                break;
            }
            None => {
                out.damaged.push(Damage {
                    start: pos,
                    end: size,
                    claimed: claimed.map(|c| c.to_digest()),
                });
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for p in payloads {
            starts.push(out.len() as u64);
            encode_record(&Digest::sha256_of(p), 0, p, &mut out);
        }
        (out, starts)
    }

    #[test]
    fn round_trips_records_of_every_algorithm() {
        let mut img = Vec::new();
        let payloads: [&[u8]; 3] = [b"a", b"", b"some longer payload"];
        let algs = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3];
        for (p, a) in payloads.iter().zip(algs) {
            encode_record(&Digest::of(a, p), 0, p, &mut img);
        }
        let s = scan(&img[..], img.len() as u64, true, true).unwrap();
        assert_eq!(s.records.len(), 3);
        assert!(s.damaged.is_empty() && s.digest_mismatches.is_empty());
        assert_eq!(s.valid_len, img.len() as u64);
        for (r, (p, a)) in s.records.iter().zip(payloads.iter().zip(algs)) {
            assert_eq!(r.digest, Digest::of(a, p).to_raw());
            assert_eq!(&img[r.payload_offset as usize..r.end() as usize], *p);
        }
    }

    #[test]
    fn a_tail_cut_at_every_byte_is_torn_in_the_active_segment() {
        let (img, starts) = image(&[b"first", b"second record"]);
        for cut in starts[1]..img.len() as u64 {
            let s = scan(&img[..], cut, true, false).unwrap();
            assert_eq!(s.records.len(), 1, "cut at {cut}");
            assert_eq!(s.valid_len, starts[1], "cut at {cut}");
            assert!(s.damaged.is_empty());
            let sealed = scan(&img[..], cut, false, false).unwrap();
            assert_eq!(sealed.records.len(), 1);
            assert_eq!(sealed.damaged.len(), usize::from(cut > starts[1]));
        }
    }

    #[test]
    fn a_flipped_bit_in_a_middle_record_is_isolated() {
        let (img, starts) = image(&[b"one", b"two two", b"three"]);
        for byte in starts[1]..starts[2] {
            for bit in [0u8, 3, 7] {
                let mut bad = img.clone();
                bad[byte as usize] ^= 1 << bit;
                let s = scan(&bad[..], bad.len() as u64, true, false).unwrap();
                let digests: Vec<_> = s.records.iter().map(|r| r.digest.to_digest()).collect();
                assert_eq!(
                    digests,
                    vec![Digest::sha256_of(b"one"), Digest::sha256_of(b"three")],
                    "byte {byte} bit {bit}"
                );
                assert_eq!(
                    s.damaged,
                    vec![Damage {
                        start: starts[1],
                        end: starts[2],
                        claimed: s.damaged[0].claimed.clone()
                    }]
                );
                assert_eq!(s.valid_len, bad.len() as u64);
            }
        }
    }

    #[test]
    fn resync_never_trusts_a_record_hidden_in_a_payload() {
        // A payload that is itself a well-formed record naming a digest its
        // bytes do not have: after damage it must not be indexed.
        let mut forged = Vec::new();
        encode_record(&Digest::sha256_of(b"victim"), 0, b"evil", &mut forged);
        let mut img = Vec::new();
        encode_record(&Digest::sha256_of(&forged), 0, &forged, &mut img);
        img[8] ^= 0x40; // damage the outer record's length
        let s = scan(&img[..], img.len() as u64, true, false).unwrap();
        assert!(s.records.is_empty());
        assert_eq!(s.valid_len, 0);
    }
}
