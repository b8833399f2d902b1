//! The I/O seam: an engine opened on another [`Io`] does every file
//! operation through it (the upload sessions' files excepted, not routed
//! yet), and serves reads by copy where the disk has no real descriptor.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::blob_store::{manifest_body, repo};
use crate::io::{DirEntry, Io, IoFile, OpenMode, RealIo, Stat};
use crate::*;

/// A disk that lives in another directory: every path under `from` is
/// served from the same place under `to`. Anything the engine does to
/// `from` without this `Io` lands in `from` itself. Its files hide their
/// descriptor (as a simulated disk's would) and count fdatasyncs.
#[derive(Debug)]
struct Redirect {
    from: PathBuf,
    to: PathBuf,
    syncs: Arc<AtomicUsize>,
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
        Ok(Box::new(Hidden {
            file: RealIo.open(&self.map(path), mode)?,
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
    // The upload journal is not routed yet: it is the one thing allowed
    // in the directory the engine was given.
    std::fs::create_dir(seen.path().join("uploads")).unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let io: Arc<dyn Io> = Arc::new(Redirect {
        from: seen.path().to_owned(),
        to: disk.path().to_owned(),
        syncs: syncs.clone(),
    });
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
        BTreeSet::from(["uploads".to_owned()]),
        "the engine wrote to its directory without its Io"
    );
    let on_disk = names(disk.path());
    for part in ["lock", "segments", "meta", "blobs", "tmp"] {
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
