//! Write lanes of the blob store: each lane owns one active segment and one
//! group-commit queue (its own leader, fdatasync and roll-over), so threads
//! on different lanes never wait on each other's lock or fsync. This module
//! holds a lane's state and picks the calling thread's lane; the commit
//! protocol itself is in `store`.
//!
//! A thread draws a ticket from a process-wide counter the first time it
//! appends and keeps it for its life; its lane is `ticket % lanes`. Callers
//! are long-lived event-loop and blocking-pool threads, so the threads that
//! append concurrently are spread round-robin over the lanes.

use crate::io::IoFile;
use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::digest::Digest;
use crate::index::Loc;
use crate::metalog::Op;

static NEXT_TICKET: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TICKET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's lane among `lanes` (at least one). Always the same
/// for a thread and a lane count; consecutive new threads get consecutive
/// lanes.
pub(crate) fn current(lanes: usize) -> usize {
    let ticket = TICKET.with(|t| match t.get() {
        Some(ticket) => ticket,
        None => {
            let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
            t.set(Some(ticket));
            ticket
        }
    });
    ticket % lanes.max(1)
}

/// The segment file a lane's leader writes to.
pub(crate) struct Writer {
    pub seg: u32,
    pub file: Option<Box<dyn IoFile>>,
    /// End of the records written to it.
    pub len: u64,
    /// Its size: `len` plus zero padding written ahead (see
    /// `BlobStore::pad_ahead`).
    pub allocated: u64,
}

impl Writer {
    /// A writer for segment `seg` (`None`: not created yet) whose records
    /// end at `len`, its file being that long.
    pub fn new(seg: u32, file: Option<Box<dyn IoFile>>, len: u64) -> Writer {
        Writer {
            seg,
            file,
            len,
            allocated: len,
        }
    }
}

/// One record queued for a lane: its index entry once durable.
pub(crate) struct Entry {
    pub digest: Digest,
    pub loc: Loc,
    /// For a compaction copy: the location it replaces.
    pub from: Option<Loc>,
}

/// A run of queued records for one segment, written with one `pwrite`.
pub(crate) struct Group {
    pub seg: u32,
    pub start: u64,
    pub bytes: Vec<u8>,
    pub entries: Vec<Entry>,
}

/// A lane's queue, under the lane's mutex.
pub(crate) struct Queue {
    /// `None` while a leader is writing.
    pub writer: Option<Writer>,
    /// The logical end of the lane, pending records included.
    pub tail_seg: u32,
    pub tail_len: u64,
    /// The durable end of the lane's active segment: it is the lane's
    /// active segment from the moment its first batch is durable until the
    /// lane has made a later segment durable.
    pub durable_seg: u32,
    pub durable_len: u64,
    pub groups: Vec<Group>,
    /// Metadata records to commit with the queued groups, one per append
    /// that carried any (see `BlobStore::put_small_linked`).
    pub links: Vec<Vec<Op>>,
    pub queued_seq: u64,
    pub durable_seq: u64,
    /// Sequence ranges `(after, upto]` whose write failed (disk full) and
    /// was rolled back, with the error: those callers fail, later ones go on.
    pub refused: Vec<(u64, u64, String)>,
}

impl Queue {
    /// A lane whose active segment `seg` is durable up to `len` bytes (0 and
    /// no file for a segment not created yet).
    pub fn new(seg: u32, len: u64, file: Option<Box<dyn IoFile>>) -> Queue {
        Queue {
            writer: Some(Writer::new(seg, file, len)),
            tail_seg: seg,
            tail_len: len,
            durable_seg: seg,
            durable_len: len,
            groups: Vec::new(),
            links: Vec::new(),
            queued_seq: 0,
            durable_seq: 0,
            refused: Vec::new(),
        }
    }
}

/// One lane: its queue and the condition its waiters sleep on.
pub(crate) struct Lane {
    queue: Mutex<Queue>,
    /// Notified whenever the lane's durable sequence moves (or a batch
    /// fails).
    pub flushed: Condvar,
}

impl Lane {
    /// A lane with the given queue.
    pub fn new(queue: Queue) -> Lane {
        Lane {
            queue: Mutex::new(queue),
            flushed: Condvar::new(),
        }
    }

    /// Locks the lane's queue (a poisoned lock is taken over: the queue is
    /// consistent between statements that can panic).
    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps until the lane's waiters are notified.
    pub fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.flushed.wait(queue).unwrap_or_else(|p| p.into_inner())
    }
}

/// How writing a batch of groups failed.
pub(crate) enum WriteFail {
    /// A write (or file creation) failed, e.g. the disk is full: nothing of
    /// the batch is acknowledged and it can be rolled back.
    Write(io::Error),
    /// An fsync failed: what is on disk is unknown, the store stops writing.
    Sync(io::Error),
}

/// Digests being appended, by any lane, with the lane and the sequence
/// number that makes them durable: a second append of the same blob waits
/// for the first instead of writing it again.
pub(crate) type Inflight = HashMap<Digest, (usize, u64)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_lane_and_new_threads_spread_over_the_lanes() {
        let mine = current(4);
        assert_eq!(current(4), mine);
        // Eight fresh threads draw eight consecutive tickets unless other
        // tests draw in between; either way they cannot all land on one lane
        // of four unless tickets interleave in lockstep.
        let lanes: std::collections::BTreeSet<usize> = (0..8)
            .map(|_| std::thread::spawn(|| (current(4), current(4))))
            .map(|t| t.join().unwrap())
            .map(|(a, b)| {
                assert_eq!(a, b);
                a
            })
            .collect();
        assert!(lanes.len() >= 2, "{lanes:?}");
        assert!(lanes.iter().all(|&l| l < 4));
        assert_eq!(current(1), 0);
        assert_eq!(current(0), 0);
    }
}
