//! The upload writer: how a caller that receives a request body (the API
//! layer, which knows sockets) hands the body's bytes to an upload session
//! without knowing how they are hashed or stored.
//!
//! The caller borrows a block ([`BodyWriter::block`]), fills it (straight
//! from the socket through [`Block::lend_room`], or by [`Block::fill`]),
//! hands it back when full ([`BodyWriter::hand_over`]) and at the end calls
//! [`BodyWriter::finish`] for the session's new length. Everything else is
//! the engine's: whether the body is piped (a hashing and a writing thread,
//! `super::pipeline`) or appended block by block, the global pipeline
//! limit, the lease on the session, the running hash and the metrics.
//!
//! The first block is filled before any thread starts: a body that fits
//! in it is appended directly. The back end that receives the blocks is a
//! [`super::pipeline::BlockSink`]; today the session's local data file,
//! later (a second implementation, see that trait) parts of an S3
//! multipart upload, behind this same interface.

use std::sync::Arc;

use super::block::{Block, BLOCK_BYTES};
use super::pipeline::{Pipeline, PipelineSlot};
use super::session::Sessions;
use super::session::UploadId;
use crate::error::{EngineError, Result};
use crate::names::RepositoryName;

/// What became of a full block handed over with [`BodyWriter::hand_over`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Taken; [`BodyWriter::block`] is now an empty block following it.
    Taken,
    /// The writer has stopped (its error comes from
    /// [`BodyWriter::finish`]); stop receiving and finish.
    Stopped,
    /// The session no longer held the bytes the body starts after: nothing
    /// was written. The body is out of order.
    OutOfOrder {
        /// Bytes the session holds.
        len: u64,
        /// Where the body claimed to start.
        got: u64,
    },
}

/// One request body on its way into an upload session (see the module
/// docs). Dropping it midway is safe: the session keeps the blocks handed
/// over before, and its lease ends when the writing thread has written
/// them.
pub struct BodyWriter {
    sessions: Arc<Sessions>,
    repo: RepositoryName,
    id: UploadId,
    /// The block being filled.
    block: Block,
    /// The running pipeline, once one started.
    pipe: Option<Pipeline>,
    /// No pipeline place was free: every block is appended directly.
    unpiped: bool,
    /// Bytes the session holds while no pipeline runs.
    held: u64,
}

impl BodyWriter {
    /// Whether a body of `declared_len` bytes (`None`: unknown, chunked)
    /// should go through a [`BodyWriter`]; smaller bodies are cheaper
    /// appended as they arrive with `Engine::upload_append`.
    pub fn suits(declared_len: Option<u64>) -> bool {
        declared_len.is_none_or(|n| n >= BLOCK_BYTES as u64)
    }

    pub(crate) fn new(
        sessions: &Arc<Sessions>,
        repo: &RepositoryName,
        id: UploadId,
        at: u64,
    ) -> Self {
        BodyWriter {
            sessions: sessions.clone(),
            repo: repo.clone(),
            id,
            block: Block::new(at),
            pipe: None,
            unpiped: false,
            held: at,
        }
    }

    /// The block to fill next.
    pub fn block(&mut self) -> &mut Block {
        &mut self.block
    }

    /// Hands over the full block (starting the pipeline with the first
    /// one), leaving an empty block that starts where it ended. An error
    /// is one of appending directly (no pipeline place was free).
    pub async fn hand_over(&mut self) -> Result<Handed> {
        debug_assert!(self.block.is_full(), "only full blocks are handed over");
        let next = self.block.end();
        if self.pipe.is_none() && !self.unpiped {
            match PipelineSlot::acquire() {
                Some(slot) => {
                    match Pipeline::start(&self.sessions, &self.repo, self.id, self.held, slot) {
                        Ok(started) => self.pipe = Some(started),
                        Err(EngineError::RangeMismatch { expected, got }) => {
                            return Ok(Handed::OutOfOrder { len: expected, got })
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => self.unpiped = true,
            }
        }
        match &mut self.pipe {
            Some(running) => {
                if !running.push(&mut self.block, next).await {
                    self.block.reset(next);
                    return Ok(Handed::Stopped);
                }
            }
            None => {
                self.held =
                    self.sessions
                        .append(&self.repo, self.id, self.held, self.block.bytes())?;
                self.block.reset(next);
            }
        }
        Ok(Handed::Taken)
    }

    /// Writes what is left and returns the session's length. A body that
    /// broke off is finished the same way: the session keeps what arrived.
    pub async fn finish(self) -> Result<u64> {
        let BodyWriter {
            sessions,
            repo,
            id,
            block,
            pipe,
            held,
            ..
        } = self;
        match pipe {
            None if block.is_empty() => Ok(held),
            None => sessions.append(&repo, id, held, block.bytes()),
            Some(mut running) => {
                if !block.is_empty() {
                    running.push_last(block).await;
                }
                running.finish().await
            }
        }
    }
}
