//! The I/O seam: an engine opened on another [`Io`] does every file
//! operation through it (upload sessions included: journal, data files,
//! the body pipeline's direct writes), and serves reads by copy where the
//! disk has no real descriptor.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::blob_store::{manifest_body, repo};
use crate::io::{DirEntry, Io, IoFile, OpenMode, RealIo, Stat};
use crate::*;

/// A disk that lives in another directory: every path under `from` is
/// served from the same place under `to`. Anything the engine does to
/// `from` without this `Io` lands in `from` itself. Its files hide their
/// descriptor (as a simulated disk's would) and count fdatasyncs; it
/// counts the files opened with `O_DIRECT`, and may keep no modification
/// times (as a simulated disk might not).
#[derive(Debug)]
struct Redirect {
    from: PathBuf,
    to: PathBuf,
    syncs: Arc<AtomicUsize>,
    direct_opens: Arc<AtomicUsize>,
    mtimes: bool,
}

impl Redirect {
    fn map(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.from) {
            Ok(rest) if rest.as_os_str().is_empty() => self.to.clone(),
            Ok(rest) => self.to.join(rest),
            Err(_) => path.to_owned(),
        }
    }
}

/// A real file that will not show its descriptor.
#[derive(Debug)]
struct Hidden {
    file: Box<dyn IoFile>,
    syncs: Arc<AtomicUsize>,
}

impl IoFile for Hidden {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.allocate(offset, len)
    }
    fn try_lock(&self) -> io::Result<bool> {
        self.file.try_lock()
    }
    fn try_clone(&self) -> io::Result<Box<dyn IoFile>> {
        Ok(Box::new(Hidden {
            file: self.file.try_clone()?,
            syncs: self.syncs.clone(),
        }))
    }
    fn as_file(&self) -> Option<&File> {
        None
    }
    fn into_file(self: Box<Self>) -> std::result::Result<File, Box<dyn IoFile>> {
        Err(self)
    }
}

impl Io for Redirect {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn IoFile>> {
        let file = RealIo.open(&self.map(path), mode)?;
        if mode.direct {
            self.direct_opens.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Box::new(Hidden {
            file,
            syncs: self.syncs.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealIo.rename(&self.map(from), &self.map(to))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_file(&self.map(path))
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        RealIo.create_dir(&self.map(path))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealIo.sync_dir(&self.map(path))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        RealIo.read_dir(&self.map(path))
    }
    fn stat(&self, path: &Path) -> io::Result<Option<Stat>> {
        RealIo.stat(&self.map(path))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        RealIo.remove_dir(&self.map(path))
    }
    fn modified(&self, path: &Path) -> io::Result<Option<SystemTime>> {
        if !self.mtimes {
            return Ok(None);
        }
        RealIo.modified(&self.map(path))
    }
}

/// A [`Redirect`] from `from` to `to` (with modification times).
fn redirect(from: &Path, to: &Path) -> Redirect {
    Redirect {
        from: from.to_owned(),
        to: to.to_owned(),
        syncs: Arc::new(AtomicUsize::new(0)),
        direct_opens: Arc::new(AtomicUsize::new(0)),
        mtimes: true,
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn read_all(read: &BlobRead) -> Vec<u8> {
    let mut buf = vec![0u8; read.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&read.file, &mut buf, read.offset).unwrap();
    buf
}

#[test]
fn an_engine_on_another_io_touches_the_disk_only_through_it_and_reads_by_copy() {
    let seen = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let redirect = redirect(seen.path(), disk.path());
    let syncs = redirect.syncs.clone();
    let io: Arc<dyn Io> = Arc::new(redirect);
    let options = EngineOptions {
        small_blob_max: 64,
        ..EngineOptions::default()
    };
    let r = repo("seam/app");
    let config = b"{}".to_vec();
    let layer = b"a layer small enough for a segment".to_vec();
    let (config_digest, layer_digest) = (Digest::sha256_of(&config), Digest::sha256_of(&layer));
    // Larger than small_blob_max: written to tmp/ and renamed into blobs/.
    let body = manifest_body(&config_digest, &[&layer_digest]);
    assert!(body.len() > 64);
    {
        let engine = Engine::open_with_io(seen.path(), options, io.clone()).unwrap();
        for (data, digest) in [(&config, &config_digest), (&layer, &layer_digest)] {
            let id = engine.start_upload(&r).unwrap();
            engine.finish_upload_with(&r, id, data, digest).unwrap();
        }
        let tag: Reference = "v1".parse().unwrap();
        engine
            .put_manifest(&r, &tag, Some(manifest::OCI_MANIFEST), &body)
            .unwrap();
        // A segment read on a disk without descriptors is a copy: the
        // blob's bytes alone, from offset 0 (in the segment it starts
        // after a record header).
        let read = engine.open_blob(&r, &layer_digest).unwrap();
        assert_eq!(read.offset, 0);
        assert_eq!(read_all(&read), layer);
        assert_ne!(
            engine.store.locate(&layer_digest).map(|l| l.payload),
            Some(0)
        );
        assert_eq!(&*engine.manifest(&r, &tag).unwrap().bytes, &body[..]);
        assert!(
            syncs.load(Ordering::Relaxed) > 0,
            "no fdatasync went through the Io"
        );
    }
    assert_eq!(
        names(seen.path()),
        BTreeSet::new(),
        "the engine wrote to its directory without its Io"
    );
    let on_disk = names(disk.path());
    for part in ["lock", "segments", "meta", "blobs", "tmp", "uploads"] {
        assert!(on_disk.contains(part), "{part} missing from {on_disk:?}");
    }
    // Reopened on the same Io: everything is there, by scan or snapshot.
    let engine = Engine::open_with_io(seen.path(), options, io).unwrap();
    let manifest_digest = Digest::sha256_of(&body);
    let by_digest = Reference::Digest(manifest_digest.clone());
    assert_eq!(
        engine.manifest(&r, &by_digest).unwrap().digest,
        manifest_digest
    );
    assert_eq!(
        read_all(&engine.open_blob(&r, &config_digest).unwrap()),
        config
    );
    let large = engine.open_blob(&r, &manifest_digest).unwrap();
    assert_eq!((large.offset, read_all(&large)), (0, body));
    assert!(engine.scrub().unwrap().problems.is_empty());
}

#[test]
fn the_real_disk_hands_out_the_segment_descriptor_itself() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("seam/real");
    let data = b"small".to_vec();
    let digest = Digest::sha256_of(&data);
    let id = engine.start_upload(&r).unwrap();
    engine.finish_upload_with(&r, id, &data, &digest).unwrap();
    let read = engine.open_blob(&r, &digest).unwrap();
    // Zero-copy: the segment file at the record's payload offset.
    assert_eq!(
        Some(read.offset),
        engine.store.locate(&digest).map(|l| l.payload)
    );
    assert!(read.offset > 0);
    assert_eq!(read_all(&read), data);
}

/// `len` bytes of a pattern seeded by `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 12) as u8)
        .collect()
}

/// Pushes `data` into session `id` from byte `at` through a [`BodyWriter`]
/// (blocks handed over to the pipeline's threads); returns the length.
fn push_body(engine: &Engine, r: &RepositoryName, id: UploadId, at: u64, data: &[u8]) -> u64 {
    let mut writer = engine.upload_body(r, id, at);
    let mut rest = data;
    crate::upload::tests::futures_lite_block_on(async {
        while !rest.is_empty() {
            let n = writer.block().fill(rest);
            rest = &rest[n..];
            if writer.block().is_full() {
                assert_eq!(writer.hand_over().await.unwrap(), Handed::Taken);
            }
        }
        writer.finish().await
    })
    .unwrap()
}

#[test]
fn upload_sessions_touch_the_disk_only_through_the_engines_io() {
    // Where a real store would be (not a tmpfs /tmp), so that direct I/O
    // is taken where the file system has it.
    let seen = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let redirect = redirect(seen.path(), disk.path());
    let direct_opens = redirect.direct_opens.clone();
    let io: Arc<dyn Io> = Arc::new(redirect);
    let options = EngineOptions {
        small_blob_max: 1024,
        ..EngineOptions::default()
    };
    let r = repo("seam/uploads");
    let small = pattern(900, 1);
    let large = pattern(3 * upload::block::BLOCK_BYTES + 5000, 2);
    let kept = pattern(2 * upload::block::BLOCK_BYTES + 77, 3);
    let direct_before = upload_counters().bytes_direct;
    let uploads = disk.path().join("uploads");
    let resumed = {
        let engine = Engine::open_with_io(seen.path(), options, io.clone()).unwrap();
        // Small appends, finished by copy into a segment.
        let id = engine.start_upload(&r).unwrap();
        for (at, piece) in [(0, &small[..300]), (300, &small[300..])] {
            engine.upload_append(&r, id, at, piece).unwrap();
        }
        engine
            .finish_upload(&r, id, &Digest::sha256_of(&small))
            .unwrap();
        // A large body: a small head, the rest through the pipeline, then
        // finished by renaming the data file into the store.
        let id = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, id, 0, &large[..100]).unwrap();
        let len = push_body(&engine, &r, id, 100, &large[100..]);
        assert_eq!(len, large.len() as u64);
        engine
            .finish_upload(&r, id, &Digest::sha256_of(&large))
            .unwrap();
        // Cancelled and purged sessions leave no data file behind.
        let cancelled = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, cancelled, 0, b"gone").unwrap();
        assert!(uploads.join(format!("{cancelled}.data")).exists());
        engine.cancel_upload(&r, cancelled).unwrap();
        assert!(!uploads.join(format!("{cancelled}.data")).exists());
        let purged = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, purged, 0, b"idle").unwrap();
        assert_eq!(
            engine.purge_uploads(Duration::ZERO, false).unwrap(),
            vec![purged]
        );
        assert!(!uploads.join(format!("{purged}.data")).exists());
        // A session holding data across a restart.
        let id = engine.start_upload(&r).unwrap();
        let half = upload::block::BLOCK_BYTES + 13;
        assert_eq!(push_body(&engine, &r, id, 0, &kept[..half]), half as u64);
        id
    };
    if RealIo
        .open(&disk.path().join("lock"), OpenMode::READ_WRITE.direct())
        .is_ok()
    {
        assert!(
            direct_opens.load(Ordering::Relaxed) > 0,
            "the block writer opened no O_DIRECT file through the Io"
        );
        assert!(upload_counters().bytes_direct > direct_before);
    }
    let engine = Engine::open_with_io(seen.path(), options, io).unwrap();
    let half = upload::block::BLOCK_BYTES as u64 + 13;
    assert_eq!(engine.upload_len(&r, resumed).unwrap(), half);
    engine
        .upload_append(&r, resumed, half, &kept[half as usize..])
        .unwrap();
    let kept_digest = Digest::sha256_of(&kept);
    engine.finish_upload(&r, resumed, &kept_digest).unwrap();
    for (data, digest) in [
        (&small, Digest::sha256_of(&small)),
        (&large, Digest::sha256_of(&large)),
        (&kept, kept_digest),
    ] {
        assert!(read_all(&engine.open_blob(&r, &digest).unwrap()) == *data);
    }
    drop(engine);
    assert_eq!(
        names(seen.path()),
        BTreeSet::new(),
        "the engine wrote to its directory without its Io"
    );
    assert_eq!(names(&uploads), BTreeSet::from(["sessions".to_owned()]));
}

#[test]
fn a_session_written_since_the_restart_is_not_idle_on_a_disk_without_times() {
    let seen = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let mut redirect = redirect(seen.path(), disk.path());
    redirect.mtimes = false;
    let io: Arc<dyn Io> = Arc::new(redirect);
    let r = repo("seam/idle");
    // A session started two hours ago holding bytes, as a restart finds it.
    let id = UploadId::random();
    let started = SystemTime::now() - Duration::from_secs(2 * 3600);
    let secs = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let uploads = disk.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    std::fs::write(
        uploads.join("sessions"),
        format!("+ {id} {secs} {}\n", r.as_str()),
    )
    .unwrap();
    std::fs::write(uploads.join(format!("{id}.data")), b"abc").unwrap();
    let engine = Engine::open_with_io(seen.path(), EngineOptions::default(), io).unwrap();
    assert_eq!(engine.upload_len(&r, id).unwrap(), 3);
    let hour = Duration::from_secs(3600);
    // Nothing tells when its bytes came: it is as idle as it is old.
    assert_eq!(engine.purge_uploads(hour, true).unwrap(), vec![id]);
    // Written now: no longer idle, though the disk keeps no times.
    engine.upload_append(&r, id, 3, b"def").unwrap();
    assert!(engine.purge_uploads(hour, false).unwrap().is_empty());
    assert_eq!(engine.upload_len(&r, id).unwrap(), 6);
}
