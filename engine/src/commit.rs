//! Group commit: many threads commit op batches at once; one of them (the
//! leader) writes every pending record with a single fdatasync, applies them
//! to the in-memory state in log order, and wakes the rest. A caller returns
//! only after its record is durable and visible, so an acknowledged change
//! survives a crash and readers never see a change that could be lost.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::error::{EngineError, Result};
use crate::metalog::{encode_record, AppendError, LogFile, Op};
use crate::state::State;

struct Queue {
    /// The log; `None` while a leader is writing to it.
    log: Option<LogFile>,
    pending_records: Vec<u8>,
    pending_batches: Vec<Vec<Op>>,
    /// Sequence number of the newest queued batch.
    queued_seq: u64,
    /// Every batch with a sequence number up to this one is durable and applied.
    durable_seq: u64,
    /// A write failed: the log's tail is unknown, refuse further commits.
    failed: bool,
    /// Sequence ranges `(after, upto]` whose write failed (disk full) and
    /// was undone, with the error: those callers fail, later ones go on.
    /// Kept short: a caller looks right after its batch is decided.
    refused: Vec<(u64, u64, String)>,
}

/// The metadata state and the log that makes it durable.
pub struct Committer {
    queue: Mutex<Queue>,
    flushed: Condvar,
    state: RwLock<State>,
}

impl Committer {
    /// Wraps an open log and the state replayed from it.
    pub fn new(log: LogFile, state: State) -> Committer {
        Committer {
            queue: Mutex::new(Queue {
                log: Some(log),
                pending_records: Vec::new(),
                pending_batches: Vec::new(),
                queued_seq: 0,
                durable_seq: 0,
                failed: false,
                refused: Vec::new(),
            }),
            flushed: Condvar::new(),
            state: RwLock::new(state),
        }
    }

    /// Read access to the current, durable state. Never hold it across I/O.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `ops` durable as one atomic record, then applies them. Blocks
    /// the calling thread until then (call it off the event loop).
    pub fn commit(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut queue = self.lock_queue();
        if queue.failed {
            return Err(EngineError::PreviousIo);
        }
        encode_record(&ops, &mut queue.pending_records);
        queue.pending_batches.push(ops);
        queue.queued_seq += 1;
        let mine = queue.queued_seq;
        loop {
            if let Some((_, _, message)) = queue
                .refused
                .iter()
                .find(|(after, upto, _)| *after < mine && mine <= *upto)
            {
                return Err(EngineError::Io(std::io::Error::other(message.clone())));
            }
            if queue.durable_seq >= mine {
                return Ok(());
            }
            if queue.failed {
                return Err(EngineError::PreviousIo);
            }
            let Some(mut log) = queue.log.take() else {
                queue = self
                    .flushed
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            };
            // This thread leads: flush everything queued so far.
            let records = std::mem::take(&mut queue.pending_records);
            let batches = std::mem::take(&mut queue.pending_batches);
            let upto = queue.queued_seq;
            drop(queue);
            let written = log.append_durable(&records);
            if written.is_ok() {
                let mut state = self
                    .state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for op in batches.iter().flatten() {
                    state.apply(op);
                }
            }
            queue = self.lock_queue();
            queue.log = Some(log);
            match written {
                Ok(()) => queue.durable_seq = upto,
                Err(AppendError::Write(e)) => {
                    // Undone: these commits fail, the log stays usable. The
                    // sequence moves past them so later batches can succeed.
                    let after = queue.durable_seq;
                    queue.refused.push((after, upto, e.to_string()));
                    if queue.refused.len() > 64 {
                        queue.refused.remove(0);
                    }
                    queue.durable_seq = upto;
                    self.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
                Err(AppendError::Sync(e)) => {
                    queue.failed = true;
                    self.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
            }
            self.flushed.notify_all();
        }
    }
}
