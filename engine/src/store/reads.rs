//! Reads of the blob store: where a blob is, and its bytes or a descriptor
//! on them (a record from the snapshot-covered range is checked once first).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::index::Loc;
use crate::io::{self as disk, IoFile, OpenMode};
use crate::segment;

use super::BlobStore;

impl BlobStore {
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Whether the store holds the blob (in a segment or as a file).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.read_index().map.contains(&digest.to_raw()) || self.io.exists(&self.blob_path(digest))
    }

    /// The segment location of a blob, if it is in a segment.
    pub fn locate(&self, digest: &Digest) -> Option<Loc> {
        self.read_index().map.get(&digest.to_raw())
    }

    fn segment_file(&self, digest: &Digest) -> Option<(Loc, Arc<dyn IoFile>)> {
        let index = self.read_index();
        let loc = index.map.get(&digest.to_raw())?;
        let file = index.files.get(&loc.seg)?.clone();
        // An index entry points inside its segment: past the record's
        // header, at most a record's payload long.
        assert!(
            loc.record < loc.payload && loc.len <= segment::PAYLOAD_BYTES_MAX,
            "index: {digest} at segment {} record {} payload {} len {}",
            loc.seg,
            loc.record,
            loc.payload,
            loc.len
        );
        Some((loc, file))
    }

    pub(super) fn read_record(file: &dyn IoFile, loc: &Loc) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; loc.record_len() as usize];
        file.read_exact_at(&mut bytes, loc.record)?;
        Ok(bytes)
    }

    /// Drops a record that failed its check from the index, so it is never
    /// served again (a new push of the blob stores a good copy).
    fn quarantine(&self, digest: &Digest, loc: &Loc) -> EngineError {
        let mut index = self.write_index();
        let raw = digest.to_raw();
        if index.map.get(&raw) == Some(*loc) {
            index.map.remove(&raw);
        }
        EngineError::Corrupt(format!(
            "segment {} record at {} ({digest}) fails its checksum",
            loc.seg, loc.record
        ))
    }

    /// Opens a blob for reading: its file, offset and length. `None` if the
    /// store does not hold it.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<(File, u64, u64)>> {
        if let Some((loc, file)) = self.segment_file(digest) {
            let unchecked = self.read_index().unchecked(digest, &loc);
            if self.opts.verify_reads || unchecked {
                if !segment::record_crc_ok(&Self::read_record(&*file, &loc)?) {
                    return Err(self.quarantine(digest, &loc));
                }
                if unchecked {
                    self.write_index().verified.insert(digest.clone());
                }
            }
            debug_assert!(
                file.len().is_ok_and(|size| loc.payload + loc.len <= size),
                "index: {digest} ends past segment {}",
                loc.seg
            );
            let (fd, offset) = disk::readable_fd(&*file, loc.payload, loc.len)?;
            return Ok(Some((fd, offset, loc.len)));
        }
        match self.io.open(&self.blob_path(digest), OpenMode::READ) {
            Ok(file) => {
                let len = file.len()?;
                match file.into_file() {
                    Ok(fd) => Ok(Some((fd, 0, len))),
                    Err(simulated) => {
                        let (fd, offset) = disk::readable_fd(&*simulated, 0, len)?;
                        Ok(Some((fd, offset, len)))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A blob's bytes, checked against the record's crc32c when it is in a
    /// segment. `None` if the store does not hold it.
    pub fn read(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        if let Some((loc, file)) = self.segment_file(digest) {
            let mut bytes = Self::read_record(&*file, &loc)?;
            if !segment::record_crc_ok(&bytes) {
                return Err(self.quarantine(digest, &loc));
            }
            bytes.drain(..(loc.payload - loc.record) as usize);
            return Ok(Some(bytes));
        }
        match self.io.read(&self.blob_path(digest)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
