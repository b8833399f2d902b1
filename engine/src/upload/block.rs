//! Bulk appends: the bytes of a large request body, written to an upload
//! session's data file in aligned blocks while the request keeps receiving.
//!
//! A large body is cut into [`Block`]s of at most [`BLOCK_BYTES`] whose
//! ends fall on [`ALIGN`]-byte file offsets. A [`BlockWriter`] writes the
//! aligned middle of each block with `O_DIRECT` where the file system
//! allows it: the bytes go from the block to the device, with no copy into
//! the page cache and no writeback left for the commit's fdatasync to wait
//! for. The unaligned edges (the head of a session that ends mid-page, the
//! tail of the body) and file systems without direct I/O (tmpfs) take the
//! ordinary buffered path. Either way the file ends up holding exactly the
//! bytes written, in order, so the session's resume, rehash and commit
//! paths read it as they always have (the kernel keeps the page cache
//! coherent with direct writes).
//!
//! Blocks are plain owned values, so one thread can hash a block while
//! another writes the previous one (see `super::pipeline`). The API layer
//! only ever fills a block it borrowed from a [`super::BodyWriter`]; making
//! and writing blocks stays in the engine.
//!
//! Both handles come from the engine's [`Io`]: the buffered one is the
//! session's cached data file, the direct one is opened with
//! [`OpenMode::direct`], which a disk without direct I/O refuses.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::io::{Io, IoFile, OpenMode};

/// Most bytes one block carries.
pub const BLOCK_BYTES: usize = 512 * 1024;

/// The alignment direct I/O needs for file offsets, lengths and memory (the
/// largest logical block size in common use).
pub const ALIGN: usize = 4096;

/// Consecutive bytes of an upload, from file offset [`Block::start`], held
/// in memory placed so that every [`ALIGN`]-aligned file offset in the block
/// is at an [`ALIGN`]-aligned address.
pub struct Block {
    /// Backing memory: `ALIGN` spare bytes so an aligned window always fits.
    storage: Vec<u8>,
    /// Where the aligned window starts in `storage`.
    window: usize,
    /// File offset of the first byte.
    start: u64,
    /// Bytes held.
    len: usize,
}

impl Block {
    /// An empty block whose first byte will be at file offset `start`.
    pub(crate) fn new(start: u64) -> Block {
        let storage = vec![0u8; BLOCK_BYTES + ALIGN];
        let window = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block {
            storage,
            window,
            start,
            len: 0,
        }
    }

    /// Empties the block for reuse from file offset `start`.
    pub(crate) fn reset(&mut self, start: u64) {
        self.start = start;
        self.len = 0;
    }

    /// File offset of the first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// File offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Bytes of `start`'s page before it (the block's offset into its
    /// window).
    fn skew(&self) -> usize {
        (self.start % ALIGN as u64) as usize
    }

    /// Bytes the block can still take before its end reaches its last
    /// aligned boundary.
    pub fn room(&self) -> usize {
        BLOCK_BYTES - self.skew() - self.len
    }

    /// Whether the block is full (its end is on an aligned boundary).
    pub fn is_full(&self) -> bool {
        self.room() == 0
    }

    /// Whether the block holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies as much of `data` as fits; returns how many bytes it took.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        let at = self.window + self.skew() + self.len;
        self.storage[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Lends out the block's memory so a read that must own its buffer (an
    /// io_uring receive) can put the next bytes straight into the block:
    /// they belong in `storage[range]`, from its start, at most
    /// `min(max, room())` of them. The block holds no memory meanwhile;
    /// [`Block::take_back`] returns it. A block whose memory never comes
    /// back (the read was abandoned) has lost its bytes with it and must be
    /// replaced by a new block from [`Block::start`].
    pub fn lend_room(&mut self, max: usize) -> (Vec<u8>, std::ops::Range<usize>) {
        let at = self.window + self.skew() + self.len;
        let n = max.min(self.room());
        (std::mem::take(&mut self.storage), at..at + n)
    }

    /// Takes back memory lent by [`Block::lend_room`], whose read put
    /// `filled` bytes at the start of the lent range (more than the room
    /// counts as the room).
    pub fn take_back(&mut self, storage: Vec<u8>, filled: usize) {
        self.storage = storage;
        self.len += filled.min(self.room());
    }

    /// Replaces memory lent by [`Block::lend_room`] that never came back
    /// (the read was abandoned and kept it): the block starts again, empty,
    /// from the same file offset, with fresh memory.
    pub fn lent_lost(&mut self) {
        *self = Block::new(self.start);
    }

    /// The bytes held.
    pub fn bytes(&self) -> &[u8] {
        let at = self.window + self.skew();
        &self.storage[at..at + self.len]
    }

    /// The bytes from file offset `from` to `to` (both inside the block).
    fn range(&self, from: u64, to: u64) -> &[u8] {
        let at = self.window + self.skew() + (from - self.start) as usize;
        &self.storage[at..at + (to - from) as usize]
    }
}

/// Writes blocks at their file offsets into one upload's data file, the
/// aligned part with direct I/O when available: the local-disk
/// [`super::pipeline::BlockSink`].
pub(crate) struct BlockWriter {
    file: Arc<dyn IoFile>,
    /// The same file opened with `O_DIRECT`; `None` where the file system
    /// refuses direct I/O (then everything is buffered).
    direct: Option<Box<dyn IoFile>>,
    /// Bytes written with direct I/O (for tests and metrics).
    direct_bytes: u64,
}

impl BlockWriter {
    /// A writer for the data file at `path` on `io`, sharing `file` (its
    /// open handle, writable) for buffered writes; the aligned middles go
    /// through a second handle opened with `O_DIRECT` if `io` allows it.
    pub(crate) fn new(io: &dyn Io, file: Arc<dyn IoFile>, path: &Path) -> BlockWriter {
        let direct = io.open(path, OpenMode::READ_WRITE.direct()).ok();
        BlockWriter {
            file,
            direct,
            direct_bytes: 0,
        }
    }

    /// Whether direct I/O is in use.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Bytes written with direct I/O so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    /// Writes `block`'s bytes at their file offsets. On error some prefix
    /// of the block may have been written; the caller truncates back to
    /// what it knows is complete.
    pub fn write(&mut self, block: &Block) -> io::Result<()> {
        let (start, end) = (block.start(), block.end());
        let align = ALIGN as u64;
        let middle_start = start.div_ceil(align) * align;
        let middle_end = end / align * align;
        if let (Some(direct), true) = (&self.direct, middle_end > middle_start) {
            self.file
                .write_all_at(block.range(start, middle_start), start)?;
            match direct.write_all_at(block.range(middle_start, middle_end), middle_start) {
                Ok(()) => {
                    self.direct_bytes += middle_end - middle_start;
                    return self
                        .file
                        .write_all_at(block.range(middle_end, end), middle_end);
                }
                // The device wants a larger alignment than ALIGN, or the
                // file system changed its mind: buffered from here on.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(block.bytes(), start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn a_block_ends_on_an_aligned_offset_whatever_its_start() {
        for start in [0u64, 1, 4095, 4096, 10_000] {
            let mut block = Block::new(start);
            let data = pattern(BLOCK_BYTES * 2, 7);
            let taken = block.fill(&data);
            assert!(block.is_full());
            assert_eq!(block.end() % ALIGN as u64, 0, "start {start}");
            assert_eq!(block.bytes(), &data[..taken]);
        }
    }

    #[test]
    fn bytes_read_into_lent_room_join_the_block_in_order() {
        let data = pattern(BLOCK_BYTES + 10, 3);
        let mut block = Block::new(4000);
        let mut taken = block.fill(&data[..50]);
        while !block.is_full() {
            let room = block.room();
            let (mut storage, range) = block.lend_room(70_000);
            assert_eq!(range.len(), room.min(70_000));
            let n = range.len().min(data.len() - taken);
            storage[range.start..range.start + n].copy_from_slice(&data[taken..taken + n]);
            block.take_back(storage, n);
            taken += n;
        }
        assert_eq!(block.bytes(), &data[..taken]);
        assert_eq!(block.end() % ALIGN as u64, 0);
        // Lending a full block lends nothing.
        let (storage, range) = block.lend_room(usize::MAX);
        assert!(range.is_empty());
        block.take_back(storage, 5);
        assert_eq!(block.bytes(), &data[..taken]);
    }

    #[test]
    fn aligned_offsets_sit_at_aligned_addresses() {
        let mut block = Block::new(100);
        block.fill(&pattern(BLOCK_BYTES, 1));
        let middle = block.range(4096, 8192);
        assert_eq!(middle.as_ptr() as usize % ALIGN, 0);
    }

    /// Writes `data` from `start` block by block, as a request would.
    fn write_blocks(writer: &mut BlockWriter, start: u64, data: &[u8]) {
        let mut at = start;
        let mut rest = data;
        while !rest.is_empty() {
            let mut block = Block::new(at);
            let n = block.fill(rest);
            writer.write(&block).expect("write block");
            rest = &rest[n..];
            at += n as u64;
        }
    }

    #[test]
    fn the_file_holds_exactly_the_bytes_written_across_unaligned_requests() {
        // Run where the data directory of a real store would be (not a
        // tmpfs /tmp), so the direct path is exercised where it exists.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let path = dir.path().join("data");
        let io = crate::io::RealIo;
        let file: Arc<dyn IoFile> = Arc::from(io.open(&path, OpenMode::CREATE_NEW).expect("open"));
        let mut writer = BlockWriter::new(&io, file.clone(), &path);
        // Where the file system takes O_DIRECT, the writer uses it.
        let direct_possible = io.open(&path, OpenMode::READ_WRITE.direct()).is_ok();
        assert_eq!(writer.is_direct(), direct_possible);
        // Three "requests": an odd head, a large middle, an odd tail.
        let data = pattern(3 * BLOCK_BYTES + 12_345, 9);
        let cuts = [0usize, 777, 2 * BLOCK_BYTES + 5, data.len()];
        for pair in cuts.windows(2) {
            write_blocks(&mut writer, pair[0] as u64, &data[pair[0]..pair[1]]);
        }
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, 0).expect("read back");
        assert!(back == data, "file content differs from what was written");
        assert_eq!(file.len().expect("len"), data.len() as u64);
        if writer.is_direct() {
            assert!(writer.direct_bytes() >= 2 * BLOCK_BYTES as u64);
        }
    }
}
