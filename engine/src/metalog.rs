//! The metadata log: an append-only file of checksummed records, each a
//! batch of [`Op`]s applied atomically. Replaying the log from the start
//! rebuilds every repository, tag and link; no directory is ever walked.
//!
//! Record layout (little endian):
//!
//! ```text
//! offset size field
//! 0      4    magic "BRML"
//! 4      1    format version (1)
//! 5      3    reserved, zero
//! 8      4    payload length N
//! 12     4    crc32c over bytes 0..12 and the payload
//! 16     N    payload: JSON array of Op
//! ```
//!
//! A record is visible only when its whole length and checksum are on disk.
//! A torn tail (a crash mid-append) fails the length or checksum check and is
//! truncated away on open; it was never acknowledged, because callers are
//! answered only after the record is fdatasync'ed.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::io::{Io, IoFile, OpenMode};

const MAGIC: &[u8; 4] = b"BRML";
const FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = 16;
/// Largest payload a record may carry; larger lengths are treated as torn.
const PAYLOAD_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// One metadata mutation. Repository names and tags are stored as validated
/// strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Make a stored blob visible in a repository.
    LinkBlob {
        /// Repository name.
        repo: String,
        /// Blob digest.
        digest: Digest,
        /// Blob length in bytes.
        len: u64,
        /// When the link was made (Unix seconds); garbage collection keeps
        /// unreferenced links younger than its grace period. Absent in
        /// records written before format 1.1 (treated as old).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
        /// Where the blob's bytes were appended in the same commit round as
        /// this record (see [`Written`]); absent when they were durable
        /// before the record was written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        written: Option<Written>,
    },
    /// Remove a blob's link from a repository.
    UnlinkBlob {
        /// Repository name.
        repo: String,
        /// Blob digest.
        digest: Digest,
    },
    /// Record a manifest in a repository.
    PutManifest {
        /// Repository name.
        repo: String,
        /// Manifest digest.
        digest: Digest,
        /// Manifest length in bytes.
        len: u64,
        /// Media type it is served with.
        media_type: String,
        /// Blobs and child manifests it references.
        references: Vec<Digest>,
        /// Its subject, for referrers.
        subject: Option<Digest>,
        /// Its artifact type, for referrers.
        artifact_type: Option<String>,
        /// When it was pushed (Unix seconds); see `LinkBlob::at`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
        /// Where the manifest's bytes were appended in the same commit
        /// round; see `LinkBlob::written`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        written: Option<Written>,
    },
    /// Remove a manifest (and every tag pointing at it) from a repository.
    DeleteManifest {
        /// Repository name.
        repo: String,
        /// Manifest digest.
        digest: Digest,
    },
    /// Point a tag at a manifest.
    SetTag {
        /// Repository name.
        repo: String,
        /// Tag.
        tag: String,
        /// Manifest digest.
        digest: Digest,
    },
    /// Remove a tag.
    DeleteTag {
        /// Repository name.
        repo: String,
        /// Tag.
        tag: String,
    },
}

/// Where a blob's segment record was appended: the record that names it
/// was written to the log before those bytes were fdatasynced (both are
/// synced before anyone is answered). After a crash the log may hold such a
/// record while the segment lost the bytes; opening the store drops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The segment number.
    pub seg: u32,
    /// One past the record's last byte in that segment.
    pub end: u64,
}

impl Op {
    /// The blob this op stores bytes for in its own commit round, and where:
    /// `Some` only for a link or manifest carrying [`Written`].
    pub fn written(&self) -> Option<(&Digest, Written)> {
        match self {
            Op::LinkBlob {
                digest,
                written: Some(w),
                ..
            }
            | Op::PutManifest {
                digest,
                written: Some(w),
                ..
            } => Some((digest, *w)),
            _ => None,
        }
    }

    /// Marks a link or manifest of `blob` as depending on the segment bytes
    /// at `at`; other ops are left as they are.
    pub fn set_written(&mut self, blob: &Digest, at: Written) {
        match self {
            Op::LinkBlob {
                digest, written, ..
            }
            | Op::PutManifest {
                digest, written, ..
            } if digest == blob => *written = Some(at),
            _ => {}
        }
    }
}

/// Encodes one record holding `ops`.
pub fn encode_record(ops: &[Op], out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(ops).unwrap_or_default();
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 12]), &payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The outcome of decoding a log image.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every complete record's ops, in log order.
    pub batches: Vec<Vec<Op>>,
    /// Length of the valid prefix; anything after it is a torn or corrupt tail.
    pub valid_bytes: u64,
}

/// Decodes records from the start of `image` until the end or the first
/// record that is incomplete or fails its checksum.
pub fn decode_log(image: &[u8]) -> Replay {
    let mut replay = Replay::default();
    let mut pos = 0usize;
    while image.len() - pos >= HEADER_BYTES {
        let header = &image[pos..pos + HEADER_BYTES];
        // Reserved bytes must be zero: a record from a newer format stops
        // replay instead of being misread.
        if &header[0..4] != MAGIC || header[4] != FORMAT_VERSION || header[5..8] != [0, 0, 0] {
            break;
        }
        let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        if len > PAYLOAD_BYTES_MAX || image.len() - pos - HEADER_BYTES < len as usize {
            break;
        }
        let payload = &image[pos + HEADER_BYTES..pos + HEADER_BYTES + len as usize];
        if crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), payload) != crc {
            break;
        }
        let Ok(ops) = serde_json::from_slice::<Vec<Op>>(payload) else {
            break;
        };
        replay.batches.push(ops);
        pos += HEADER_BYTES + len as usize;
        replay.valid_bytes = pos as u64;
    }
    replay
}

/// The open log file. Records are appended at its end; making them durable
/// is a separate step (see `commit`), so several appends can share one
/// fdatasync.
pub struct LogFile {
    file: Box<dyn IoFile>,
    /// Length of the valid prefix: where the next record goes.
    len: u64,
    /// The file's size: `len` plus zero padding written ahead.
    allocated: u64,
}

/// How far ahead of its records the log is padded with zeros: appends then
/// overwrite allocated blocks without changing the file's size, so their
/// fdatasync writes the data and flushes, without the inode and block-map
/// writes an append needs. A zero byte never starts a record, so replay
/// stops at the padding; an all-zero tail is kept at open, any other tail
/// is torn and cut.
const PAD_BYTES: u64 = 1024 * 1024;

/// How an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// Writing failed (disk full, quota): the partial record was cut off
    /// again and the log is as before; later appends may succeed.
    Write(io::Error),
    /// Undoing a failed write failed: what is on disk is unknown, so the
    /// log must not be written again in this process.
    Undo(io::Error),
}

impl LogFile {
    /// Opens (or creates) the log at `path`, replays it, and truncates any
    /// torn tail so the next append starts on a record boundary (an all-zero
    /// tail is padding and stays). Returns the log, the replayed batches and
    /// how many torn bytes were discarded (padding not counted).
    pub fn open(io: &dyn Io, path: &Path) -> io::Result<(LogFile, Vec<Vec<Op>>, u64)> {
        let file = io.open(path, OpenMode::OPEN_OR_CREATE)?;
        let len = usize::try_from(file.len()?).map_err(|_| io::ErrorKind::OutOfMemory)?;
        let mut image = vec![0u8; len];
        file.read_exact_at(&mut image, 0)?;
        let replay = decode_log(&image);
        assert!(
            replay.valid_bytes <= image.len() as u64,
            "log replay: valid prefix {} past the file's {} bytes",
            replay.valid_bytes,
            image.len()
        );
        let tail = image.get(replay.valid_bytes as usize..).unwrap_or_default();
        // Bytes from the first to the last non-zero one: the torn write,
        // without the padding around it.
        let torn = tail
            .iter()
            .position(|&b| b != 0)
            .zip(tail.iter().rposition(|&b| b != 0));
        let padding = torn.is_none();
        let discarded = torn.map_or(0, |(first, last)| (last + 1 - first) as u64);
        if !padding {
            file.set_len(replay.valid_bytes)?;
            file.sync_data()?;
        }
        Ok((
            LogFile {
                file,
                len: replay.valid_bytes,
                allocated: replay.valid_bytes + if padding { tail.len() as u64 } else { 0 },
            },
            replay.batches,
            discarded,
        ))
    }

    /// Replaces the log at `path` with one holding exactly `batches`,
    /// durably (temporary file, fsync, rename, directory fsync): a crash
    /// leaves the old log or the new one.
    pub fn rewrite(io: &dyn Io, path: &Path, batches: &[Vec<Op>]) -> io::Result<LogFile> {
        let mut image = Vec::new();
        for ops in batches {
            encode_record(ops, &mut image);
        }
        crate::fsutil::replace_file(io, &path.with_extension("rewrite"), path, &image)?;
        let file = io.open(path, OpenMode::READ_WRITE)?;
        Ok(LogFile {
            file,
            len: image.len() as u64,
            allocated: image.len() as u64,
        })
    }

    /// Appends already-encoded records (not yet durable: see
    /// [`LogFile::sync_handle`]). A failed write is cut off again.
    pub fn append(&mut self, records: &[u8]) -> Result<(), AppendError> {
        assert!(
            self.len <= self.allocated,
            "log: records end at {} past the file's {} bytes",
            self.len,
            self.allocated
        );
        let end = self.len + records.len() as u64;
        let extends = end > self.allocated;
        let mut written = self.file.write_all_at(records, self.len);
        if written.is_ok() && extends {
            // Past the padding: new padding after the records.
            written = crate::fsutil::write_zeros(&*self.file, end, end + PAD_BYTES);
        }
        if let Err(e) = written {
            // Nothing of this record is acknowledged: cut it off again.
            self.file.set_len(self.len).map_err(AppendError::Undo)?;
            self.allocated = self.len;
            return Err(AppendError::Write(e));
        }
        if extends {
            self.allocated = end + PAD_BYTES;
        }
        self.len = end;
        Ok(())
    }

    /// A second descriptor of the log, to fdatasync it while appends go on.
    pub fn sync_handle(&self) -> io::Result<Box<dyn IoFile>> {
        self.file.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> Vec<Op> {
        vec![Op::SetTag {
            repo: "a/b".into(),
            tag: format!("t{i}"),
            digest: Digest::sha256_of(&[i]),
        }]
    }

    #[test]
    fn round_trips_records() {
        let mut image = Vec::new();
        for i in 0..3 {
            encode_record(&sample(i), &mut image);
        }
        let replay = decode_log(&image);
        assert_eq!(replay.batches, (0..3).map(sample).collect::<Vec<_>>());
        assert_eq!(replay.valid_bytes, image.len() as u64);
    }

    #[test]
    fn every_torn_tail_is_cut_at_the_last_whole_record() {
        let mut image = Vec::new();
        encode_record(&sample(0), &mut image);
        let first = image.len();
        encode_record(&sample(1), &mut image);
        for cut in first..image.len() {
            let replay = decode_log(&image[..cut]);
            assert_eq!(replay.batches.len(), 1, "cut at {cut}");
            assert_eq!(replay.valid_bytes, first as u64);
        }
    }

    #[test]
    fn appends_pad_ahead_and_reopen_keeps_padding_but_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _, _) = LogFile::open(&crate::io::RealIo, &path).unwrap();
        let mut records = Vec::new();
        encode_record(&sample(0), &mut records);
        log.append(&records).unwrap();
        let padded = std::fs::metadata(&path).unwrap().len();
        assert_eq!(padded, records.len() as u64 + PAD_BYTES);
        // Within the padding the size stays.
        log.append(&records).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), padded);
        drop(log);
        let (mut log, batches, discarded) = LogFile::open(&crate::io::RealIo, &path).unwrap();
        assert_eq!((batches.len(), discarded), (2, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), padded);
        // The next record goes right after the last one, not after the padding.
        log.append(&records).unwrap();
        drop(log);
        let (_, batches, _) = LogFile::open(&crate::io::RealIo, &path).unwrap();
        assert_eq!(batches.len(), 3);
        // A torn record inside the padding: the tail is cut, padding and all.
        let whole = 3 * records.len() as u64;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &records[..records.len() - 1], whole)
            .unwrap();
        let (_, batches, discarded) = LogFile::open(&crate::io::RealIo, &path).unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(discarded, records.len() as u64 - 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    #[test]
    fn a_flipped_bit_stops_replay_at_that_record() {
        let mut image = Vec::new();
        encode_record(&sample(0), &mut image);
        let first = image.len();
        encode_record(&sample(1), &mut image);
        for bit in 0..8 {
            let mut bad = image.clone();
            bad[first + 20] ^= 1 << bit;
            assert_eq!(decode_log(&bad).batches.len(), 1);
        }
    }
}
