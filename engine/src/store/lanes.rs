//! The write lanes' commit protocol: queue records on the calling thread's
//! lane, lead the lane's group commit (pwrite, the riding metadata records,
//! fdatasync, publish), roll back a failed batch, pad ahead, and keep
//! `segments/active` ahead of every segment a lane creates.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use crate::active_list;
use crate::commit::Committer;
use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::index::Loc;
use crate::io::{Io, IoFile, OpenMode};
use crate::lane::{self, Entry, Group, Queue, WriteFail, Writer};
use crate::metalog::{Op, Written};
use crate::segment;

use super::{seg_path, BlobStore, PAD_BYTES};

/// What `BlobStore::write_groups` leaves to its caller: the segment files
/// it created, and the metadata records it wrote (if any were queued), to
/// publish once the new index entries are.
type GroupsWritten<'a> = (
    Vec<(u32, Arc<dyn IoFile>)>,
    Option<Result<crate::commit::WrittenRecords<'a>>>,
);

/// Replaces `segments/active` with `segments`, durably: temporary file,
/// fsync, rename, directory fsync.
pub(super) fn write_active_list(
    io: &dyn Io,
    seg_dir: &Path,
    segments: &BTreeSet<u32>,
) -> io::Result<()> {
    let list: Vec<u32> = segments.iter().copied().collect();
    fsutil::replace_file(
        io,
        &seg_dir.join("active.tmp"),
        &seg_dir.join(active_list::FILE_NAME),
        &active_list::encode(&list),
    )
}

impl BlobStore {
    // ----- writes ------------------------------------------------------

    /// Stores a small blob in the active segment of the calling thread's
    /// lane unless the store already holds it (or another lane is storing
    /// it: then waits for that). Returns when its bytes are durable and
    /// indexed.
    pub fn put_small(&self, digest: &Digest, payload: &[u8]) -> Result<()> {
        self.put_small_linked(digest, payload, Vec::new())
    }

    /// [`BlobStore::put_small`], then commits `link` (one metadata record)
    /// to the attached log; returns once both are durable and visible. When
    /// the blob's record is appended by this call, the link is written to
    /// the log in the same round as the segment bytes (marked with where
    /// they went, see [`Written`]) and the two files are fdatasynced
    /// together; otherwise it is committed after the blob is durable.
    pub fn put_small_linked(&self, digest: &Digest, payload: &[u8], link: Vec<Op>) -> Result<()> {
        let unlinked = if self.io.exists(&self.blob_path(digest)) {
            link
        } else {
            self.append(&[(digest, payload, None)], link)?
        };
        if unlinked.is_empty() {
            return Ok(());
        }
        self.committer()?.commit(unlinked)
    }

    /// Attaches the metadata log that [`BlobStore::put_small_linked`]
    /// commits to (once; later calls are ignored).
    pub fn attach_log(&self, log: Arc<Committer>) {
        let _ = self.log.set(log);
    }

    fn committer(&self) -> Result<&Committer> {
        self.log
            .get()
            .map(|log| &**log)
            .ok_or_else(|| EngineError::Io(io::Error::other("no metadata log attached")))
    }

    /// Commits a large blob whose verified, fdatasynced bytes are in `src`
    /// by renaming it into `blobs/` (or drops `src` if the blob is already
    /// stored).
    pub fn install_large(&self, digest: &Digest, src: &Path) -> Result<()> {
        if self.read_index().map.contains(&digest.to_raw()) {
            self.io.remove_file(src)?;
            return Ok(());
        }
        fsutil::install_file(&*self.io, src, &self.blob_path(digest))?;
        Ok(())
    }

    /// Appends records on the calling thread's lane and waits until they
    /// are durable and indexed. An item with a `from` location is a
    /// compaction copy: it is always written, and replaces the index entry
    /// only if that still is `from`. Other items are skipped when the blob
    /// is indexed, or waited for when some lane is appending it.
    ///
    /// `link` (ops of one metadata record) rides with the lane's batch when
    /// this call queued any record; it is then marked with where each
    /// blob it names went. Otherwise it is returned, for the caller to
    /// commit after this call (the blobs are durable by then).
    pub(super) fn append(
        &self,
        items: &[(&Digest, &[u8], Option<Loc>)],
        link: Vec<Op>,
    ) -> Result<Vec<Op>> {
        let mut link = link;
        if self.failed.load(Ordering::Acquire) {
            return Err(EngineError::PreviousIo);
        }
        let me = lane::current(self.lanes.len());
        let mut queue = self.lanes[me].lock();
        let mut wait_for = 0u64;
        // Appends of the same blobs already queued on other lanes.
        let mut elsewhere: Vec<(usize, u64)> = Vec::new();
        let mut queued_any = false;
        for (digest, payload, from) in items {
            // This append's sequence number on the lane.
            let seq = queue.queued_seq + u64::from(!queued_any);
            if from.is_none() {
                // Index and in-flight set are checked under the in-flight
                // lock: a leader publishes the index entry before it clears
                // the in-flight one, so one of the two always shows a blob
                // that is being or has been appended.
                let mut inflight = self.lock_inflight();
                if self.read_index().map.contains(&digest.to_raw()) {
                    continue;
                }
                match inflight.get(*digest) {
                    Some(&(lane, seq)) if lane == me => {
                        wait_for = wait_for.max(seq);
                        continue;
                    }
                    Some(&other) => {
                        elsewhere.push(other);
                        continue;
                    }
                    None => {
                        inflight.insert((*digest).clone(), (me, seq));
                    }
                }
            }
            let rec_len = segment::record_len(digest, payload.len() as u64);
            if queue.tail_len > 0 && queue.tail_len + rec_len > self.opts.segment_bytes_max {
                queue.tail_seg = self.next_seg.fetch_add(1, Ordering::Relaxed);
                queue.tail_len = 0;
            }
            let (seg, start) = (queue.tail_seg, queue.tail_len);
            let loc = Loc {
                seg,
                record: start,
                payload: start + segment::payload_offset(digest),
                len: payload.len() as u64,
            };
            if queue.groups.last().is_none_or(|g| g.seg != seg) {
                queue.groups.push(Group {
                    seg,
                    start,
                    bytes: Vec::new(),
                    entries: Vec::new(),
                });
            }
            let flags = if from.is_some() {
                segment::FLAG_COMPACTED
            } else {
                0
            };
            let group = queue.groups.last_mut().expect("a group was just ensured");
            segment::encode_record(digest, flags, payload, &mut group.bytes);
            for op in &mut link {
                op.set_written(
                    digest,
                    Written {
                        seg,
                        end: start + rec_len,
                    },
                );
            }
            group.entries.push(Entry {
                digest: (*digest).clone(),
                loc,
                from: *from,
            });
            queue.tail_len += rec_len;
            queue.queued_seq = seq;
            queued_any = true;
            wait_for = seq;
        }
        if queued_any && !link.is_empty() {
            queue.links.push(std::mem::take(&mut link));
        }
        // Own lane first: this thread may have to lead its batch.
        self.wait_durable(me, queue, wait_for)?;
        for (lane, seq) in elsewhere {
            self.wait_durable(lane, self.lanes[lane].lock(), seq)?;
        }
        Ok(link)
    }

    /// Waits until sequence number `wait_for` of lane `me` is durable,
    /// leading the lane's group commit whenever its writer is free.
    fn wait_durable<'a>(
        &'a self,
        me: usize,
        mut queue: MutexGuard<'a, Queue>,
        wait_for: u64,
    ) -> Result<()> {
        let lane = &self.lanes[me];
        loop {
            if let Some((_, _, message)) = queue
                .refused
                .iter()
                .find(|(after, upto, _)| *after < wait_for && wait_for <= *upto)
            {
                return Err(EngineError::Io(io::Error::other(message.clone())));
            }
            if queue.durable_seq >= wait_for {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(EngineError::PreviousIo);
            }
            let Some(mut writer) = queue.writer.take() else {
                queue = lane.wait(queue);
                continue;
            };
            let groups = std::mem::take(&mut queue.groups);
            let links = std::mem::take(&mut queue.links);
            let upto = queue.queued_seq;
            drop(queue);
            let written = self.write_groups(&mut writer, &groups, links);
            queue = lane.lock();
            match written {
                Ok((new_files, records)) => {
                    {
                        let mut index = self.write_index();
                        index.files.extend(new_files);
                        debug_assert!(
                            groups.iter().all(|g| g.entries.iter().all(|e| {
                                e.loc.seg == g.seg
                                    && e.loc.record >= g.start
                                    && e.loc.payload + e.loc.len <= g.start + g.bytes.len() as u64
                            })),
                            "lane {me}: an index entry points outside the bytes written"
                        );
                        for e in groups.iter().flat_map(|g| &g.entries) {
                            let raw = e.digest.to_raw();
                            match e.from {
                                None => index.map.insert(&raw, e.loc),
                                Some(from) => {
                                    if index.map.get(&raw) == Some(from) {
                                        index.map.insert(&raw, e.loc);
                                    }
                                }
                            }
                        }
                    }
                    {
                        let mut inflight = self.lock_inflight();
                        for e in groups.iter().flat_map(|g| &g.entries) {
                            if inflight
                                .get(&e.digest)
                                .is_some_and(|&(l, s)| l == me && s <= upto)
                            {
                                inflight.remove(&e.digest);
                            }
                        }
                    }
                    // The durable point only moves forward: to a longer
                    // prefix of the same segment, or to a newer segment.
                    assert!(
                        upto >= queue.durable_seq,
                        "lane {me}: durable sequence moves back from {} to {upto}",
                        queue.durable_seq
                    );
                    if let Some(last) = groups.last() {
                        let end = last.start + last.bytes.len() as u64;
                        assert!(
                            last.seg > queue.durable_seg
                                || (last.seg == queue.durable_seg && end >= queue.durable_len),
                            "lane {me}: durable end moves back from {}:{} to {}:{end}",
                            queue.durable_seg,
                            queue.durable_len,
                            last.seg
                        );
                        // Every segment the lane left behind is sealed: it
                        // was fdatasynced before the next one was created.
                        let sealed: Vec<u32> = std::iter::once(queue.durable_seg)
                            .chain(groups.iter().map(|g| g.seg))
                            .filter(|&s| s != last.seg)
                            .collect();
                        if !sealed.is_empty() {
                            let mut active = self.lock_active();
                            for s in sealed {
                                active.remove(&s);
                            }
                        }
                        queue.durable_seg = last.seg;
                        queue.durable_len = end;
                    }
                    // The blobs are durable and indexed: now the links that
                    // name them may become visible (outside the lane lock:
                    // this waits for the log's fdatasync).
                    drop(queue);
                    let linked = records.map_or(Ok(()), |r| r.and_then(|w| w.publish()));
                    queue = lane.lock();
                    if let Err(e) = linked {
                        // The blobs stay stored; the callers' links failed.
                        let after = queue.durable_seq;
                        queue.refused.push((after, upto, e.to_string()));
                        if queue.refused.len() > 64 {
                            queue.refused.remove(0);
                        }
                    }
                    queue.writer = Some(writer);
                    queue.durable_seq = upto;
                    lane.flushed.notify_all();
                }
                Err(WriteFail::Write(e)) => {
                    // Roll back to the durable end; this batch and anything
                    // queued behind it (whose offsets assumed it) fail, and
                    // the lane takes writes again (e.g. once space is freed).
                    let (durable_seg, durable_len) = (queue.durable_seg, queue.durable_len);
                    match self.roll_back(&mut writer, &groups, durable_seg, durable_len) {
                        Ok(()) => {
                            let (after, upto) = (queue.durable_seq, queue.queued_seq);
                            queue.refused.push((after, upto, e.to_string()));
                            if queue.refused.len() > 64 {
                                queue.refused.remove(0);
                            }
                            queue.groups.clear();
                            self.lock_inflight()
                                .retain(|_, &mut (l, s)| l != me || s <= after);
                            (queue.tail_seg, queue.tail_len) = (durable_seg, durable_len);
                            queue.durable_seq = upto;
                        }
                        Err(_) => self.failed.store(true, Ordering::Release),
                    }
                    queue.writer = Some(writer);
                    lane.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
                Err(WriteFail::Sync(e)) => {
                    self.failed.store(true, Ordering::Release);
                    queue.writer = Some(writer);
                    lane.flushed.notify_all();
                    return Err(EngineError::Io(e));
                }
            }
        }
    }

    /// Undoes a failed write of `groups`: removes the segments the batch
    /// created (all of them this lane's: every group segment other than the
    /// durable one) and cuts the durable segment back to its durable length.
    fn roll_back(
        &self,
        writer: &mut Writer,
        groups: &[Group],
        durable_seg: u32,
        durable_len: u64,
    ) -> io::Result<()> {
        let created: BTreeSet<u32> = groups
            .iter()
            .map(|g| g.seg)
            .filter(|&s| s != durable_seg)
            .collect();
        for &seg in &created {
            match self.io.remove_file(&seg_path(&self.seg_dir, seg)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        {
            let mut active = self.lock_active();
            for seg in &created {
                active.remove(seg);
            }
        }
        if writer.seg != durable_seg {
            let path = seg_path(&self.seg_dir, durable_seg);
            let file = if self.io.exists(&path) {
                Some(self.io.open(&path, OpenMode::READ_WRITE)?)
            } else {
                None
            };
            *writer = Writer::new(durable_seg, file, durable_len);
        }
        if let Some(file) = &writer.file {
            file.set_len(durable_len)?;
        }
        (writer.len, writer.allocated) = (durable_len, durable_len);
        Ok(())
    }

    /// Writes zeros past the end of the lane's records once they reach its
    /// padding (up to [`PAD_BYTES`] ahead, never past `segment_bytes_max`),
    /// so most appends overwrite allocated blocks and the file's size does
    /// not change: their fdatasync then writes the data and flushes, without
    /// the inode and block-map writes an append needs. Recovery cuts the
    /// padding of an active segment like a torn tail (a zero byte never
    /// starts a record), and sealing a segment cuts it first.
    ///
    /// Padding is an optimisation: when it cannot be written (disk full)
    /// the segment stays as long as its records and appends go on.
    fn pad_ahead(&self, writer: &mut Writer) {
        let Some(file) = &writer.file else {
            return;
        };
        if writer.len < writer.allocated {
            return;
        }
        let target = (writer.len + PAD_BYTES).min(self.opts.segment_bytes_max);
        if target <= writer.len {
            return;
        }
        match fsutil::write_zeros(&**file, writer.len, target) {
            Ok(()) => writer.allocated = target,
            Err(_) => {
                // Whatever zeros landed are padding too; cut them anyway.
                if file.set_len(writer.len).is_ok() {
                    writer.allocated = writer.len;
                }
            }
        }
    }

    /// Cuts each lane's padding off its active segment, durably (a clean
    /// shutdown leaves segments exactly as long as their records).
    pub fn trim_padding(&self) {
        for lane in &self.lanes {
            let mut queue = lane.lock();
            let durable_len = queue.durable_len;
            let Some(writer) = queue.writer.as_mut() else {
                continue;
            };
            if let Some(file) = &writer.file {
                if writer.allocated > writer.len
                    && writer.len == durable_len
                    && file.set_len(writer.len).is_ok()
                    && file.sync_all().is_ok()
                {
                    writer.allocated = writer.len;
                }
            }
        }
    }

    /// Adds `seg` to `segments/active` (durably) unless it is listed: done
    /// before the segment's file is created, so a crash never leaves a
    /// segment with a torn tail that the list does not name.
    fn register_active(&self, seg: u32) -> io::Result<()> {
        let mut active = self.lock_active();
        if active.insert(seg) {
            if let Err(e) = write_active_list(&*self.io, &self.seg_dir, &active) {
                active.remove(&seg);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes queued groups, then the metadata records that ride with them
    /// (not yet durable), then makes the groups durable: one fdatasync per
    /// segment touched, and a directory fsync when a segment was created
    /// (after it was registered in `segments/active`). Returns the new
    /// segment files and the written records (if any), to publish once the
    /// new index entries are (or why writing them failed: the groups are
    /// durable even then).
    fn write_groups(
        &self,
        writer: &mut Writer,
        groups: &[Group],
        links: Vec<Vec<Op>>,
    ) -> std::result::Result<GroupsWritten<'_>, WriteFail> {
        let mut created = Vec::new();
        for g in groups {
            if writer.file.is_none() || writer.seg != g.seg {
                if let Some(old) = &writer.file {
                    // Sealed: without its padding, and durable before the
                    // next segment exists.
                    old.set_len(writer.len).map_err(WriteFail::Write)?;
                    old.sync_data().map_err(WriteFail::Sync)?;
                }
                self.register_active(g.seg).map_err(WriteFail::Write)?;
                let path = seg_path(&self.seg_dir, g.seg);
                let file = self
                    .io
                    .open(&path, OpenMode::OPEN_OR_CREATE)
                    .map_err(WriteFail::Write)?;
                let reader = self
                    .io
                    .open(&path, OpenMode::READ)
                    .map_err(WriteFail::Write)?;
                created.push((g.seg, Arc::from(reader)));
                *writer = Writer::new(g.seg, Some(file), 0);
            }
            // A group continues the lane's records exactly where the last
            // write ended (where its padding starts): no gap, no overlap.
            assert!(
                g.start == writer.len,
                "lane: group for segment {} starts at {}, records end at {}",
                g.seg,
                g.start,
                writer.len
            );
            assert!(
                g.start + g.bytes.len() as u64 <= self.opts.segment_bytes_max || g.start == 0,
                "lane: group for segment {} ends past the segment size limit",
                g.seg
            );
            let file = writer
                .file
                .as_ref()
                .ok_or(WriteFail::Write(io::ErrorKind::NotFound.into()))?;
            file.write_all_at(&g.bytes, g.start)
                .map_err(WriteFail::Write)?;
            writer.len = g.start + g.bytes.len() as u64;
        }
        self.pad_ahead(writer);
        // Written before the segment's fdatasync so both syncs happen in one
        // round; dropped unpublished (poisoning the log) if that fails.
        let records =
            (!links.is_empty()).then(|| self.committer().and_then(|log| log.write(links)));
        if let Some(file) = &writer.file {
            file.sync_data().map_err(WriteFail::Sync)?;
        }
        if !created.is_empty() {
            self.io.sync_dir(&self.seg_dir).map_err(WriteFail::Sync)?;
        }
        Ok((created, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EngineOptions;
    use std::fs;

    /// Rolling back a failed batch removes only the segments that batch
    /// created, never another lane's segment numbered in between.
    #[test]
    fn roll_back_removes_only_the_failed_batch_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            active_segments: 2,
            ..EngineOptions::default()
        };
        let (store, _) = BlobStore::open(Arc::new(crate::io::RealIo), dir.path(), opts).unwrap();
        let store = Arc::new(store);
        // Put a blob on each lane (threads draw consecutive tickets).
        let mut seen = BTreeSet::new();
        for i in 0..64 {
            let store = store.clone();
            let lane = std::thread::spawn(move || {
                let bytes = format!("blob {i}").into_bytes();
                store.put_small(&Digest::sha256_of(&bytes), &bytes).unwrap();
                lane::current(2)
            })
            .join()
            .unwrap();
            seen.insert(lane);
            if seen.len() == 2 {
                break;
            }
        }
        let durables: Vec<(u32, u64)> = store
            .lanes
            .iter()
            .map(|l| {
                let q = l.lock();
                (q.durable_seg, q.durable_len)
            })
            .collect();
        let (low, high) = (durables[0].min(durables[1]), durables[0].max(durables[1]));
        assert!(low.0 < high.0 && low.1 > 0 && high.1 > 0, "{durables:?}");
        // The lower lane "created" a new segment in a batch that failed.
        let new = store.next_seg.fetch_add(1, Ordering::Relaxed);
        store.register_active(new).unwrap();
        let path = seg_path(&store.seg_dir, new);
        let file = store.io.open(&path, OpenMode::OPEN_OR_CREATE).unwrap();
        file.write_all_at(b"never durable", 0).unwrap();
        let mut writer = Writer::new(new, Some(file), 0);
        // The other lane's segment (records and padding) is not touched.
        let high_size = fs::metadata(seg_path(&store.seg_dir, high.0))
            .unwrap()
            .len();
        assert!(high_size >= high.1);
        let groups = [Group {
            seg: new,
            start: 0,
            bytes: Vec::new(),
            entries: Vec::new(),
        }];
        store.roll_back(&mut writer, &groups, low.0, low.1).unwrap();
        assert!(!path.exists());
        assert!(
            seg_path(&store.seg_dir, high.0).exists(),
            "another lane's segment was removed"
        );
        assert_eq!(writer.seg, low.0);
        assert!(!store.lock_active().contains(&new));
        assert_eq!(
            fs::metadata(seg_path(&store.seg_dir, high.0))
                .unwrap()
                .len(),
            high_size
        );
    }
}
