//! Large request bodies into an upload session through a three-stage
//! pipeline, so receiving, hashing and writing overlap instead of taking
//! turns on the event loop:
//!
//! 1. the event loop receives the body into aligned blocks
//!    ([`berth_engine::Block`]): a length-framed body straight from the
//!    socket into the block's memory, a chunked one through the decoder
//!    with one copy;
//! 2. a hashing thread feeds each block to the session's running sha256;
//! 3. a writing thread writes it into the session's data file (direct I/O
//!    where the file system allows it, see [`berth_engine::bulk`]) and
//!    hands the block back for reuse.
//!
//! At most [`PIPELINE_BLOCKS`] blocks exist per body, so memory stays
//! bounded whatever the body's size, and at most `pipelines_max()` (four
//! per core, at least eight) pipelines run at once; a large body arriving
//! when all are busy is appended on the event loop block by block. The
//! first block is filled before any thread starts: a body that fits in it
//! is appended directly.
//!
//! The session is leased (`Engine::lease_upload`) while the threads run,
//! and the writing thread itself ends the lease once both stages are done,
//! so the session is released even if the request is dropped midway. The
//! session then holds every block that was written, in order; the hash is
//! kept only if it covers exactly those bytes.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use berth_engine::{Block, BlockWriter, Engine, EngineError, Hasher, RepositoryName, UploadId};

use super::error::{ApiError, ErrorCode};
use super::uploads::Received;
use crate::exchange::RequestBody;

/// Blocks in flight per body (filling, hashing, writing, one spare).
pub const PIPELINE_BLOCKS: usize = 4;

/// Body bytes written through the pipeline since start (a metric).
pub static UPLOAD_BYTES_PIPED: AtomicU64 = AtomicU64::new(0);
/// Of those, bytes written with direct I/O (a metric).
pub static UPLOAD_BYTES_DIRECT: AtomicU64 = AtomicU64::new(0);

/// Streams `body` into session `id`, which holds `at` bytes, through the
/// pipeline: `Appended` with the session's new length, or `OutOfOrder` if
/// the session no longer held `at` bytes. A body that breaks off
/// (client gone, bad framing) leaves what arrived before in the session and
/// is reported as `BLOB_UPLOAD_INVALID`, as with unpiped bodies; one that
/// stalls leaves what arrived before the block being filled (the abandoned
/// read keeps that block), and the client resumes from the reported range.
pub async fn receive(
    engine: &Arc<Engine>,
    repo: &RepositoryName,
    id: UploadId,
    at: u64,
    body: &mut RequestBody<'_>,
) -> Result<Received, ApiError> {
    let mut block = Block::new(at);
    let mut sink = Sink {
        pipe: None,
        unpiped: false,
        held: at,
    };
    let mut body_error = None;
    'body: loop {
        if let Some(limit) = body.direct_read_limit() {
            // Straight from the socket into the block: no copy.
            let (storage, room) = block.lend_room(usize::try_from(limit).unwrap_or(usize::MAX));
            let (result, storage) = body.read_direct(storage, room).await;
            match storage {
                Some(storage) => block.take_back(storage, *result.as_ref().unwrap_or(&0)),
                // The abandoned read kept the block's memory and bytes: the
                // session keeps what was handed on before them.
                None => block = Block::new(block.start()),
            }
            if let Err(e) = result {
                body_error = Some(e);
                break;
            }
            if block.is_full() {
                match sink.take_full(engine, repo, id, &mut block).await? {
                    Taken::Yes => {}
                    Taken::WriterStopped => break 'body,
                    Taken::OutOfOrder(received) => return Ok(received),
                }
            }
            continue;
        }
        let mut piece = match body.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                body_error = Some(e);
                break;
            }
        };
        while !piece.is_empty() {
            let n = block.fill(piece);
            piece = &piece[n..];
            if !block.is_full() {
                continue;
            }
            match sink.take_full(engine, repo, id, &mut block).await? {
                Taken::Yes => {}
                Taken::WriterStopped => break 'body,
                Taken::OutOfOrder(received) => return Ok(received),
            }
        }
    }
    let len = match sink.pipe {
        None if block.is_empty() => sink.held,
        None => engine.upload_append(repo, id, sink.held, block.bytes())?,
        Some(mut running) => {
            if !block.is_empty() {
                running.push_last(block).await;
            }
            running.finish().await?
        }
    };
    match body_error {
        Some(e) => Err(ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())),
        None => Ok(Received::Appended(len)),
    }
}

/// Where full blocks go: the pipeline once one runs, or straight into the
/// session on the event loop when every pipeline place is taken.
struct Sink {
    pipe: Option<Pipeline>,
    /// No pipeline place was free: every block is appended directly.
    unpiped: bool,
    /// Bytes the session holds while no pipeline runs.
    held: u64,
}

/// What became of a full block handed to [`Sink::take_full`].
enum Taken {
    /// Taken; the caller's block is now an empty one following it.
    Yes,
    /// The writing thread has stopped (its error is reported at the end);
    /// the caller's block is empty.
    WriterStopped,
    /// The session no longer held the bytes the body starts after.
    OutOfOrder(Received),
}

impl Sink {
    /// Hands on the full `block` (starting the pipeline with the first
    /// one), leaving an empty block that starts where it ended.
    async fn take_full(
        &mut self,
        engine: &Arc<Engine>,
        repo: &RepositoryName,
        id: UploadId,
        block: &mut Block,
    ) -> Result<Taken, ApiError> {
        let next = block.end();
        if self.pipe.is_none() && !self.unpiped {
            match PipelineSlot::acquire() {
                Some(slot) => match Pipeline::start(engine, repo, id, self.held, slot) {
                    Ok(started) => self.pipe = Some(started),
                    Err(EngineError::RangeMismatch { expected, got }) => {
                        return Ok(Taken::OutOfOrder(Received::OutOfOrder {
                            len: expected,
                            got,
                        }))
                    }
                    Err(e) => return Err(e.into()),
                },
                None => self.unpiped = true,
            }
        }
        match &mut self.pipe {
            Some(running) => {
                if !running.push(block, next).await {
                    block.reset(next);
                    return Ok(Taken::WriterStopped);
                }
            }
            None => {
                self.held = engine.upload_append(repo, id, self.held, block.bytes())?;
                block.reset(next);
            }
        }
        Ok(Taken::Yes)
    }
}

/// Pipelines running at once, across all connections.
static PIPELINES_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Most pipelines running at once: beyond this, large bodies are appended
/// on the event loop, so threads and block memory stay bounded (each
/// pipeline holds two threads and [`PIPELINE_BLOCKS`] blocks) however many
/// clients push at once.
fn pipelines_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        (4 * cores).max(8)
    })
}

/// One of the [`pipelines_max`] pipeline places, released on drop.
struct PipelineSlot;

impl PipelineSlot {
    /// A place, if one is free.
    fn acquire() -> Option<PipelineSlot> {
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
struct Pipeline {
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
    fn start(
        engine: &Arc<Engine>,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
        slot: PipelineSlot,
    ) -> Result<Pipeline, EngineError> {
        let lease = engine.lease_upload(repo, id, at)?;
        let (to_hash, hash_in) = flume::bounded::<Block>(PIPELINE_BLOCKS);
        let (to_write, write_in) = flume::bounded::<Block>(PIPELINE_BLOCKS);
        let (written_out, written) = flume::unbounded::<Block>();
        let (hashed_out, hashed) = flume::bounded::<(Hasher, u64)>(1);
        let (done_out, done) = flume::bounded(1);
        let writing = WritingStage {
            engine: engine.clone(),
            repo: repo.clone(),
            id,
            at,
            writer: lease.writer,
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
            engine.end_upload_lease(repo, id, at, Some(lease.hasher))?;
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
    async fn push(&mut self, block: &mut Block, next: u64) -> bool {
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
    async fn push_last(&mut self, block: Block) {
        let _ = self.to_hash.send_async(block).await;
    }

    /// Closes the input and waits for the writing thread to end the lease.
    async fn finish(self) -> Result<u64, ApiError> {
        drop(self.to_hash);
        match self.done.recv_async().await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unknown,
                "the upload writer stopped without an answer",
            )),
        }
    }
}

/// The writing thread's state.
struct WritingStage {
    engine: Arc<Engine>,
    repo: RepositoryName,
    id: UploadId,
    /// Where the body started in the session.
    at: u64,
    writer: BlockWriter,
    input: flume::Receiver<Block>,
    output: flume::Sender<Block>,
    /// The hashing thread's hasher and the offset it hashed up to.
    hashed: flume::Receiver<(Hasher, u64)>,
    done: flume::Sender<Result<u64, EngineError>>,
    /// Held until the stage ends.
    _slot: PipelineSlot,
}

impl WritingStage {
    /// Writes blocks until the input ends or a write fails, then ends the
    /// lease with what was written and reports the outcome.
    fn run(mut self) {
        let mut written_to = self.at;
        let mut failure = None;
        for block in self.input.iter() {
            let direct_before = self.writer.direct_bytes();
            match self.writer.write(&block) {
                Ok(()) => {
                    written_to = block.end();
                    UPLOAD_BYTES_PIPED.fetch_add(block.bytes().len() as u64, Ordering::Relaxed);
                    let direct = self.writer.direct_bytes() - direct_before;
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
            .engine
            .end_upload_lease(&self.repo, self.id, written_to, hasher);
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
