//! The hashing and writing threads behind a [`super::BodyWriter`]: blocks
//! of a large body are hashed on one thread and written on another while
//! the caller fills the next, so receiving, hashing and writing overlap.
//!
//! 1. the caller (an event loop) fills blocks from the socket;
//! 2. a hashing thread feeds each block to the session's running sha256;
//! 3. a writing thread hands it to the session's [`BlockSink`] (the local
//!    data file, direct I/O where the file system allows it) and returns
//!    the block for reuse.
//!
//! At most [`PIPELINE_BLOCKS`] blocks exist per body, so memory stays
//! bounded whatever the body's size, and at most [`pipelines_max`] (four
//! per core, at least eight) pipelines run at once; the caller appends
//! block by block when no place is free ([`PipelineSlot::acquire`]).
//!
//! The session is leased while the threads run, and the writing thread
//! itself ends the lease once both stages are done, so the session is
//! released even if the request is dropped midway. The session then holds
//! every block that was written, in order; the hash is kept only if it
//! covers exactly those bytes. The hasher never leaves the engine.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use super::block::{Block, BlockWriter};
use super::session::Sessions;
use super::session::UploadId;
use crate::digest::Hasher;
use crate::error::EngineError;
use crate::names::RepositoryName;

/// Blocks in flight per body (filling, hashing, writing, one spare).
pub(crate) const PIPELINE_BLOCKS: usize = 4;

/// Body bytes written through a pipeline since start (a metric).
pub(crate) static UPLOAD_BYTES_PIPED: AtomicU64 = AtomicU64::new(0);
/// Of those, bytes written with direct I/O (a metric).
pub(crate) static UPLOAD_BYTES_DIRECT: AtomicU64 = AtomicU64::new(0);

/// Where the writing thread puts a session's blocks, in file order.
///
/// The local-disk sink is [`BlockWriter`] (the session's data file). The
/// S3 writer of a later issue is a second implementation: it gathers
/// blocks into parts of the object store's minimum part size, sends each
/// with a multipart-upload `UploadPart` from this same writing thread, and
/// records the part list with the session; finishing then completes the
/// multipart upload instead of renaming a file. The receiving side, the
/// hashing thread, the slot limit and the lease protocol stay as they are.
pub(crate) trait BlockSink: Send + 'static {
    /// Writes `block` at its offset. On error some prefix of the block may
    /// have been written; the lease's end cuts back to what is complete.
    fn write_block(&mut self, block: &Block) -> io::Result<()>;

    /// Bytes written so far without a page-cache copy (for the metric).
    fn direct_bytes(&self) -> u64;
}

impl BlockSink for BlockWriter {
    fn write_block(&mut self, block: &Block) -> io::Result<()> {
        self.write(block)
    }

    fn direct_bytes(&self) -> u64 {
        BlockWriter::direct_bytes(self)
    }
}

/// Pipelines running at once, across all connections.
static PIPELINES_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Most pipelines running at once: beyond this, large bodies are appended
/// block by block by the caller, so threads and block memory stay bounded
/// (each pipeline holds two threads and [`PIPELINE_BLOCKS`] blocks) however
/// many clients push at once.
pub(crate) fn pipelines_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        (4 * cores).max(8)
    })
}

/// One of the [`pipelines_max`] pipeline places, released on drop.
pub(crate) struct PipelineSlot;

impl PipelineSlot {
    /// A place, if one is free.
    pub(crate) fn acquire() -> Option<PipelineSlot> {
        let max = pipelines_max();
        PIPELINES_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PipelineSlot)
    }
}

impl Drop for PipelineSlot {
    fn drop(&mut self) {
        PIPELINES_RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running stages of one body.
pub(crate) struct Pipeline {
    /// Blocks to hash (then write).
    to_hash: flume::Sender<Block>,
    /// Blocks written, back for reuse.
    written: flume::Receiver<Block>,
    /// Blocks that may still be allocated.
    unallocated: usize,
    /// The writing thread's final answer: the session's length.
    done: flume::Receiver<Result<u64, EngineError>>,
}

impl Pipeline {
    /// Leases the session and starts the hashing and writing threads.
    pub(crate) fn start(
        sessions: &Arc<Sessions>,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
        slot: PipelineSlot,
    ) -> Result<Pipeline, EngineError> {
        let lease = sessions.lease(repo, id, at)?;
        let (to_hash, hash_in) = flume::bounded::<Block>(PIPELINE_BLOCKS);
        let (to_write, write_in) = flume::bounded::<Block>(PIPELINE_BLOCKS);
        let (written_out, written) = flume::unbounded::<Block>();
        let (hashed_out, hashed) = flume::bounded::<(Hasher, u64)>(1);
        let (done_out, done) = flume::bounded(1);
        let writing = WritingStage {
            sessions: sessions.clone(),
            repo: repo.clone(),
            id,
            at,
            sink: lease.writer,
            input: write_in,
            output: written_out,
            hashed,
            done: done_out,
            _slot: slot,
        };
        let spawned = thread::Builder::new()
            .name("berth-upload-write".into())
            .spawn(move || writing.run());
        if let Err(e) = spawned {
            sessions.end_lease(repo, id, at, Some(lease.hasher))?;
            return Err(spawn_failed(e));
        }
        // If this spawn fails, the closure's channel ends drop: the writing
        // thread sees no blocks and no hash, and ends the lease at `at`.
        let mut hasher = lease.hasher;
        thread::Builder::new()
            .name("berth-upload-hash".into())
            .spawn(move || {
                let mut hashed_to = at;
                for block in hash_in.iter() {
                    hasher.update(block.bytes());
                    hashed_to = block.end();
                    if to_write.send(block).is_err() {
                        break;
                    }
                }
                drop(to_write);
                let _ = hashed_out.send((hasher, hashed_to));
            })
            .map_err(spawn_failed)?;
        Ok(Pipeline {
            to_hash,
            written,
            unallocated: PIPELINE_BLOCKS - 1,
            done,
        })
    }

    /// Sends the full `block` down the pipeline, leaving in its place an
    /// empty one starting at file offset `next`; `false` once the writer
    /// has stopped (then `block` is left as it was or empty).
    pub(crate) async fn push(&mut self, block: &mut Block, next: u64) -> bool {
        let mut fresh = match self.written.try_recv() {
            Ok(reused) => reused,
            Err(_) if self.unallocated > 0 => {
                self.unallocated -= 1;
                Block::new(next)
            }
            Err(_) => match self.written.recv_async().await {
                Ok(reused) => reused,
                Err(_) => return false,
            },
        };
        fresh.reset(next);
        let full = std::mem::replace(block, fresh);
        self.to_hash.send_async(full).await.is_ok()
    }

    /// Sends the body's last, partly filled block.
    pub(crate) async fn push_last(&mut self, block: Block) {
        let _ = self.to_hash.send_async(block).await;
    }

    /// Closes the input and waits for the writing thread to end the lease:
    /// the session's length.
    pub(crate) async fn finish(self) -> Result<u64, EngineError> {
        drop(self.to_hash);
        match self.done.recv_async().await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Io(io::Error::other(
                "the upload writer stopped without an answer",
            ))),
        }
    }
}

/// The writing thread's state.
struct WritingStage<S: BlockSink> {
    sessions: Arc<Sessions>,
    repo: RepositoryName,
    id: UploadId,
    /// Where the body started in the session.
    at: u64,
    sink: S,
    input: flume::Receiver<Block>,
    output: flume::Sender<Block>,
    /// The hashing thread's hasher and the offset it hashed up to.
    hashed: flume::Receiver<(Hasher, u64)>,
    done: flume::Sender<Result<u64, EngineError>>,
    /// Held until the stage ends.
    _slot: PipelineSlot,
}

impl<S: BlockSink> WritingStage<S> {
    /// Writes blocks until the input ends or a write fails, then ends the
    /// lease with what was written and reports the outcome.
    fn run(mut self) {
        let mut written_to = self.at;
        let mut failure = None;
        for block in self.input.iter() {
            debug_assert_eq!(block.start(), written_to, "blocks arrive in file order");
            let direct_before = self.sink.direct_bytes();
            match self.sink.write_block(&block) {
                Ok(()) => {
                    written_to = block.end();
                    UPLOAD_BYTES_PIPED.fetch_add(block.bytes().len() as u64, Ordering::Relaxed);
                    let direct = self.sink.direct_bytes() - direct_before;
                    UPLOAD_BYTES_DIRECT.fetch_add(direct, Ordering::Relaxed);
                    let _ = self.output.send(block);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Unblocks a hashing thread waiting to hand over a block.
        drop(self.input);
        let hasher = match self.hashed.recv() {
            Ok((hasher, hashed_to)) if hashed_to == written_to => Some(hasher),
            _ => None,
        };
        let ended = self
            .sessions
            .end_lease(&self.repo, self.id, written_to, hasher);
        let outcome = match (failure, ended) {
            (Some(e), _) => Err(EngineError::Io(e)),
            (None, ended) => ended,
        };
        let _ = self.done.send(outcome);
    }
}

fn spawn_failed(e: io::Error) -> EngineError {
    EngineError::Io(io::Error::new(
        e.kind(),
        format!("starting an upload thread failed: {e}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_places_are_bounded_and_released_on_drop() {
        let max = pipelines_max();
        assert!(max >= 8);
        let held: Vec<PipelineSlot> = std::iter::from_fn(PipelineSlot::acquire)
            .take(max + 1)
            .collect();
        assert_eq!(held.len(), max, "more places than the bound");
        assert!(PipelineSlot::acquire().is_none());
        drop(held);
        assert!(PipelineSlot::acquire().is_some());
    }
}
