//! Group commit of the metadata log, in two steps: records are *written*
//! (appended, not yet durable) one batch at a time, then *published*: made
//! durable by an fdatasync that one thread (the syncer) runs for everything
//! written so far, and applied to the in-memory state in log order. A caller
//! returns only after its record is durable and visible, so an acknowledged
//! change survives a crash and readers never see a change that could be lost.
//!
//! Between the two steps a writer may make other bytes durable first: the
//! blob store writes a lane's segment records, writes the links naming them
//! here, fdatasyncs the segment, and then publishes the links, so both files
//! share one round of fsyncs. A record is applied only once its writer has
//! published it and every earlier record is applied, so the state is always
//! the replay of a durable log prefix whose segment bytes are durable too.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::error::{EngineError, Result};
use crate::io::IoFile;
use crate::metalog::{encode_record, AppendError, LogFile, Op};
use crate::state::State;

/// A written record not yet applied to the state.
struct Unapplied {
    seq: u64,
    ops: Vec<Op>,
    /// Its writer published it: it may be applied once durable.
    published: bool,
}

struct Queue {
    log: LogFile,
    /// Sequence number of the newest written record (the first is 1).
    written_seq: u64,
    /// Every record up to this one is durable.
    durable_seq: u64,
    /// Every record up to this one is applied to the state.
    applied_seq: u64,
    /// Written records not applied yet, in log order.
    unapplied: VecDeque<Unapplied>,
    /// A thread is running fdatasync on the log.
    syncing: bool,
    /// An fdatasync failed, or a written record was abandoned: what is on
    /// disk may differ from the state, refuse further commits.
    failed: bool,
}

/// The metadata state and the log that makes it durable.
pub struct Committer {
    queue: Mutex<Queue>,
    /// Notified whenever records become durable or applied, or the log fails.
    changed: Condvar,
    /// A second descriptor of the log for fdatasync outside the queue lock.
    sync_file: Box<dyn IoFile>,
    state: RwLock<State>,
}

/// Records written to the log by [`Committer::write`] and not yet
/// published. Dropping it unpublished poisons the committer: the records
/// may already be on disk, and the state must never skip over them.
#[must_use = "written records must be published"]
pub struct WrittenRecords<'a> {
    committer: &'a Committer,
    /// Sequence numbers `first..=last` (empty when `first > last`).
    first: u64,
    last: u64,
    published: bool,
}

impl Committer {
    /// Wraps an open log and the state replayed from it.
    pub fn new(log: LogFile, state: State) -> std::io::Result<Committer> {
        let sync_file = log.sync_handle()?;
        Ok(Committer {
            queue: Mutex::new(Queue {
                log,
                written_seq: 0,
                durable_seq: 0,
                applied_seq: 0,
                unapplied: VecDeque::new(),
                syncing: false,
                failed: false,
            }),
            changed: Condvar::new(),
            sync_file,
            state: RwLock::new(state),
        })
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

    fn wait<'a>(&self, queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed
            .wait(queue)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `ops` durable as one atomic record, then applies them. Blocks
    /// the calling thread until then (call it off the event loop).
    pub fn commit(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.write(vec![ops])?.publish()
    }

    /// Appends one record per batch (empty batches are skipped) with a
    /// single write, without waiting for durability. On a failed write
    /// (disk full) nothing is written and later writes may succeed.
    pub fn write(&self, batches: Vec<Vec<Op>>) -> Result<WrittenRecords<'_>> {
        let mut queue = self.lock_queue();
        if queue.failed {
            return Err(EngineError::PreviousIo);
        }
        let batches: Vec<Vec<Op>> = batches.into_iter().filter(|ops| !ops.is_empty()).collect();
        let mut records = Vec::new();
        for ops in &batches {
            encode_record(ops, &mut records);
        }
        let first = queue.written_seq + 1;
        assert!(
            queue.applied_seq <= queue.durable_seq && queue.durable_seq <= queue.written_seq,
            "commit: applied {} <= durable {} <= written {} broken",
            queue.applied_seq,
            queue.durable_seq,
            queue.written_seq
        );
        if !records.is_empty() {
            match queue.log.append(&records) {
                Ok(()) => {}
                Err(AppendError::Write(e)) => return Err(EngineError::Io(e)),
                Err(AppendError::Undo(e)) => {
                    queue.failed = true;
                    self.changed.notify_all();
                    return Err(EngineError::Io(e));
                }
            }
            for ops in batches {
                queue.written_seq += 1;
                let seq = queue.written_seq;
                queue.unapplied.push_back(Unapplied {
                    seq,
                    ops,
                    published: false,
                });
            }
        }
        Ok(WrittenRecords {
            committer: self,
            first,
            last: queue.written_seq,
            published: false,
        })
    }

    /// Applies, in log order, every durable and published record at the
    /// front of the unapplied ones.
    fn apply_ready(&self, queue: &mut Queue) {
        let ready = |queue: &Queue| {
            queue
                .unapplied
                .front()
                .is_some_and(|front| front.seq <= queue.durable_seq && front.published)
        };
        if !ready(queue) {
            return;
        }
        // One write lock for the whole run: readers wait once.
        let mut state = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while ready(queue) {
            let Some(record) = queue.unapplied.pop_front() else {
                break;
            };
            // Records apply in log order, each once, only after their
            // fdatasync round completed and their writer published them.
            assert!(
                record.seq == queue.applied_seq + 1,
                "commit: record {} applied after record {}",
                record.seq,
                queue.applied_seq
            );
            assert!(
                record.seq <= queue.durable_seq && record.published,
                "commit: record {} applied before it was durable and published",
                record.seq
            );
            for op in &record.ops {
                state.apply(op);
            }
            queue.applied_seq = record.seq;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until record `seq` is durable and applied, running the log's
    /// fdatasync whenever no other thread is.
    fn settle(&self, seq: u64) -> Result<()> {
        let mut queue = self.lock_queue();
        loop {
            self.apply_ready(&mut queue);
            if queue.applied_seq >= seq {
                return Ok(());
            }
            if queue.failed {
                return Err(EngineError::PreviousIo);
            }
            if queue.durable_seq < seq && !queue.syncing {
                queue.syncing = true;
                let upto = queue.written_seq;
                drop(queue);
                let synced = self.sync_file.sync_data();
                queue = self.lock_queue();
                queue.syncing = false;
                match synced {
                    Ok(()) => {
                        // A round makes durable what was written before it
                        // started, never more than was written.
                        assert!(
                            upto <= queue.written_seq,
                            "commit: synced up to record {upto}, only {} written",
                            queue.written_seq
                        );
                        queue.durable_seq = queue.durable_seq.max(upto);
                    }
                    Err(e) => {
                        queue.failed = true;
                        self.changed.notify_all();
                        return Err(EngineError::Io(e));
                    }
                }
                self.changed.notify_all();
                continue;
            }
            queue = self.wait(queue);
        }
    }
}

impl WrittenRecords<'_> {
    /// Makes the records durable and visible: waits until they are synced
    /// and applied (after every earlier record). Call it only once whatever
    /// they depend on is durable.
    pub fn publish(mut self) -> Result<()> {
        assert!(!self.published, "commit: records published twice");
        self.published = true;
        if self.first > self.last {
            return Ok(());
        }
        {
            let mut queue = self.committer.lock_queue();
            for record in queue.unapplied.iter_mut() {
                if (self.first..=self.last).contains(&record.seq) {
                    record.published = true;
                }
            }
        }
        self.committer.settle(self.last)
    }
}

impl Drop for WrittenRecords<'_> {
    fn drop(&mut self) {
        if !self.published && self.first <= self.last {
            // What these records depend on may be missing (its fsync
            // failed); they can never be applied, nor can anything after.
            let mut queue = self.committer.lock_queue();
            queue.failed = true;
            self.committer.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn tag(i: u8) -> Vec<Op> {
        vec![Op::SetTag {
            repo: "r".into(),
            tag: format!("t{i}"),
            digest: Digest::sha256_of(&[i]),
        }]
    }

    fn open(dir: &std::path::Path) -> Committer {
        let (log, _, _) = LogFile::open(&crate::io::RealIo, &dir.join("log")).unwrap();
        Committer::new(log, State::default()).unwrap()
    }

    fn tags(c: &Committer) -> usize {
        c.read().repos.get("r").map_or(0, |r| r.tags.len())
    }

    #[test]
    fn a_later_record_waits_for_an_earlier_unpublished_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let first = c.write(vec![tag(0)]).unwrap();
        std::thread::scope(|s| {
            let later = s.spawn(|| c.commit(tag(1)));
            std::thread::sleep(std::time::Duration::from_millis(100));
            // Durable, but applying it would skip the unpublished record.
            assert!(!later.is_finished());
            assert_eq!(tags(&c), 0);
            first.publish().unwrap();
            later.join().unwrap().unwrap();
        });
        assert_eq!(tags(&c), 2);
        let (_, batches, _) = LogFile::open(&crate::io::RealIo, &dir.path().join("log")).unwrap();
        assert_eq!(batches, vec![tag(0), tag(1)]);
    }

    #[test]
    fn abandoning_written_records_refuses_every_later_commit() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        drop(c.write(vec![tag(0)]).unwrap());
        assert!(matches!(c.commit(tag(1)), Err(EngineError::PreviousIo)));
        assert_eq!(tags(&c), 0);
    }

    #[test]
    fn empty_batches_write_nothing_and_publish_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.write(vec![Vec::new(), Vec::new()])
            .unwrap()
            .publish()
            .unwrap();
        c.commit(Vec::new()).unwrap();
        c.commit(tag(3)).unwrap();
        let (_, batches, _) = LogFile::open(&crate::io::RealIo, &dir.path().join("log")).unwrap();
        assert_eq!(batches, vec![tag(3)]);
    }
}
