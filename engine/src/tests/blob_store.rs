//! Segment store, recovery, scrub and garbage-collection tests against a
//! real temporary directory.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::*;

pub(super) fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn small_opts() -> EngineOptions {
    EngineOptions {
        small_blob_max: 64,
        segment_bytes_max: 4096,
        verify_reads: false,
        ..EngineOptions::default()
    }
}

pub(super) fn push(engine: &Engine, r: &RepositoryName, data: &[u8]) -> Digest {
    let id = engine.start_upload(r).unwrap();
    let mut at = 0;
    for chunk in data.chunks(13) {
        at = engine.upload_append(r, id, at, chunk).unwrap();
    }
    let digest = Digest::sha256_of(data);
    engine.finish_upload(r, id, &digest).unwrap();
    digest
}

pub(super) fn read(engine: &Engine, r: &RepositoryName, d: &Digest) -> Result<Vec<u8>> {
    let b = engine.open_blob(r, d)?;
    let mut out = vec![0u8; b.len as usize];
    b.file.read_exact_at(&mut out, b.offset)?;
    Ok(out)
}

/// An image manifest over `config` and `layers`. Its descriptors declare no
/// `size` (the lengths are not at hand here, and a declared size must match
/// the stored one).
pub(super) fn manifest_body(config: &Digest, layers: &[&Digest]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string()},
        "layers": layers
    }))
    .unwrap()
}

pub(super) fn segment_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The number of the segment file at `path`.
pub(super) fn seg_number(path: &Path) -> u32 {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
        .unwrap_or_else(|| panic!("not a segment file: {path:?}"))
}

fn blob_files(root: &Path) -> usize {
    let mut n = 0;
    for alg in std::fs::read_dir(root.join("blobs")).unwrap() {
        for p in std::fs::read_dir(alg.unwrap().path()).unwrap() {
            n += std::fs::read_dir(p.unwrap().path()).unwrap().count();
        }
    }
    n
}

/// Everything a client can observe, for comparing before and after reopen.
pub(super) fn view(engine: &Engine) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let state = engine.meta.read().clone();
    for (name, r) in &state.repos {
        let rn = repo(name);
        for (tag, d) in &r.tags {
            out.insert(format!("{name}:tag:{tag}"), d.to_string());
        }
        for d in r.manifests.keys() {
            let m = engine.manifest(&rn, &Reference::Digest(d.clone())).unwrap();
            out.insert(
                format!("{name}:manifest:{d}"),
                format!("{} {}", m.media_type, hex::encode(&m.bytes)),
            );
        }
        for d in r.blobs.keys() {
            out.insert(
                format!("{name}:blob:{d}"),
                hex::encode(read(engine, &rn, d).unwrap()),
            );
        }
    }
    out
}

#[test]
fn small_blobs_go_to_segments_large_ones_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let small = vec![7u8; 64];
    let large = vec![9u8; 65];
    let (ds, dl);
    {
        let engine = Engine::open_with(dir.path(), small_opts()).unwrap();
        ds = push(&engine, &r, &small);
        dl = push(&engine, &r, &large);
        let b = engine.open_blob(&r, &ds).unwrap();
        assert!(
            b.offset > 0,
            "a segment record's payload starts after its header"
        );
        assert_eq!(engine.open_blob(&r, &dl).unwrap().offset, 0);
        assert_eq!(blob_files(dir.path()), 1);
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
    let engine = Engine::open_with(dir.path(), small_opts()).unwrap();
    assert_eq!(engine.open_report().segment_records, 1);
    assert_eq!(read(&engine, &r, &ds).unwrap(), small);
    assert_eq!(read(&engine, &r, &dl).unwrap(), large);
    // The default threshold (1 MiB) puts both in segments when reopened so.
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(read(&engine, &r, &dl).unwrap(), large);
}

#[test]
fn a_blob_is_stored_once_however_often_it_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(dir.path(), small_opts()).unwrap();
    let d = push(&engine, &repo("a"), b"same bytes");
    push(&engine, &repo("b"), b"same bytes");
    engine
        .put_manifest(
            &repo("a"),
            &"t".parse().unwrap(),
            None,
            &manifest_body(&d, &[&d]),
        )
        .unwrap();
    engine
        .put_manifest(
            &repo("a"),
            &"u".parse().unwrap(),
            None,
            &manifest_body(&d, &[&d]),
        )
        .unwrap();
    drop(engine);
    let engine = Engine::open_with(dir.path(), small_opts()).unwrap();
    // One record for the blob; the manifest is larger than 64 bytes: a file.
    assert_eq!(engine.open_report().segment_records, 1);
    assert_eq!(blob_files(dir.path()), 1);
}

#[test]
fn segments_roll_at_the_size_limit_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let opts = EngineOptions {
        small_blob_max: 1024,
        segment_bytes_max: 300,
        verify_reads: true,
        ..EngineOptions::default()
    };
    let blobs: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("blob number {i} ").repeat(i % 5 + 1).into_bytes())
        .collect();
    let before = {
        let engine = Engine::open_with(dir.path(), opts).unwrap();
        for b in &blobs {
            push(&engine, &r, b);
        }
        view(&engine)
    };
    let segs = segment_files(dir.path());
    assert!(segs.len() > 5, "{} segments", segs.len());
    for s in &segs[..segs.len() - 1] {
        assert!(std::fs::metadata(s).unwrap().len() <= 300);
    }
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().segment_records, 40);
    assert_eq!(view(&engine), before);
}

#[test]
fn reopen_after_every_kind_of_write_shows_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let mut engine = Engine::open_with(dir.path(), small_opts()).unwrap();
    let check = |engine: Engine| -> Engine {
        let before = view(&engine);
        drop(engine);
        let engine = Engine::open_with(dir.path(), small_opts()).unwrap();
        assert_eq!(view(&engine), before);
        engine
    };
    let config = push(&engine, &a, b"{}");
    engine = check(engine);
    let layer = push(&engine, &a, &[5u8; 200]);
    engine = check(engine);
    let body = manifest_body(&config, &[&layer]);
    let m = engine
        .put_manifest(&a, &"v1".parse().unwrap(), None, &body)
        .unwrap()
        .digest;
    engine = check(engine);
    engine.mount_blob(&b, &a, &layer).unwrap();
    engine = check(engine);
    engine
        .put_manifest(&a, &"v2".parse().unwrap(), None, &body)
        .unwrap();
    engine.delete_tag(&a, &"v1".parse().unwrap()).unwrap();
    engine = check(engine);
    engine.delete_manifest(&a, &m).unwrap();
    engine = check(engine);
    engine.delete_blob(&b, &layer).unwrap();
    engine = check(engine);
    engine
        .garbage_collect(&GcOptions {
            grace_period: Duration::ZERO,
            ..GcOptions::default()
        })
        .unwrap();
    engine = check(engine);
    assert!(engine.catalog().is_empty());
}

pub(super) fn append_raw(path: &Path, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all_at(bytes, f.metadata().unwrap().len()).unwrap();
}

#[test]
fn a_torn_segment_tail_cut_at_every_byte_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let kept = {
        let engine = Engine::open(dir.path()).unwrap();
        push(&engine, &r, b"kept blob")
    };
    let seg = segment_files(dir.path())[0].clone();
    let whole = std::fs::metadata(&seg).unwrap().len();
    let torn_payload = b"an append that a crash cut short";
    let mut record = Vec::new();
    segment::encode_record(
        &Digest::sha256_of(torn_payload),
        0,
        torn_payload,
        &mut record,
    );
    for cut in 1..record.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(whole)
            .unwrap();
        append_raw(&seg, &record[..cut]);
        let engine = Engine::open(dir.path()).unwrap();
        let report = engine.open_report();
        assert_eq!(report.segment_torn_tail_bytes, cut as u64, "cut at {cut}");
        assert_eq!(report.damaged_records, 0);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole);
        assert_eq!(read(&engine, &r, &kept).unwrap(), b"kept blob");
    }
    // After the cut the store appends on a record boundary again.
    let engine = Engine::open(dir.path()).unwrap();
    let d = push(&engine, &r, torn_payload);
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().segment_torn_tail_bytes, 0);
    assert_eq!(read(&engine, &r, &d).unwrap(), torn_payload);
}

/// Flips one bit of the stored payload of `d`.
fn flip_payload_bit(engine: &Engine, d: &Digest) -> PathBuf {
    let loc = engine.store.locate(d).unwrap();
    let path = engine
        .root()
        .join("segments")
        .join(format!("{:08}.seg", loc.seg));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, loc.payload + 1).unwrap();
    byte[0] ^= 0x10;
    f.write_all_at(&byte, loc.payload + 1).unwrap();
    path
}

#[test]
fn a_flipped_bit_in_a_middle_record_is_isolated_reported_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let (d1, d2, d3);
    {
        let engine = Engine::open(dir.path()).unwrap();
        d1 = push(&engine, &r, b"first record");
        d2 = push(&engine, &r, b"middle record");
        d3 = push(&engine, &r, b"last record");
        flip_payload_bit(&engine, &d2);
    }
    // With the index snapshot (written at close) the damaged record is
    // indexed unchecked and refused on its first read...
    {
        let engine = Engine::open(dir.path()).unwrap();
        assert!(engine.open_report().snapshot_entries >= 3);
        assert!(matches!(
            read(&engine, &r, &d2),
            Err(EngineError::Corrupt(_))
        ));
        assert!(
            engine.open_blob(&r, &d2).is_err(),
            "a damaged record was handed out for sending"
        );
    }
    // ...and without it, the open-time scan isolates and reports it.
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let report = engine.open_report();
    assert_eq!(
        (report.damaged_records, report.segment_torn_tail_bytes),
        (1, 0)
    );
    assert_eq!(engine.damaged_records()[0].claimed.as_ref(), Some(&d2));
    assert_eq!(read(&engine, &r, &d1).unwrap(), b"first record");
    assert_eq!(read(&engine, &r, &d3).unwrap(), b"last record");
    assert!(matches!(
        read(&engine, &r, &d2),
        Err(EngineError::Corrupt(_))
    ));
    // Appends continue after the damage; the damage stays isolated.
    let d4 = push(&engine, &r, b"after the damage");
    // A new push of the damaged blob stores a good copy.
    push(&engine, &r, b"middle record");
    drop(engine);
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().damaged_records, 1);
    assert_eq!(read(&engine, &r, &d4).unwrap(), b"after the damage");
    assert_eq!(read(&engine, &r, &d2).unwrap(), b"middle record");
}

#[test]
fn scrub_finds_bit_rot_names_its_tags_and_stops_serving_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(
        dir.path(),
        EngineOptions {
            small_blob_max: 1 << 20,
            ..small_opts()
        },
    )
    .unwrap();
    let r = repo("team/app");
    let config = push(&engine, &r, b"{}");
    let layer = push(&engine, &r, b"layer that will rot");
    let m = engine
        .put_manifest(
            &r,
            &"v1".parse().unwrap(),
            None,
            &manifest_body(&config, &[&layer]),
        )
        .unwrap()
        .digest;
    assert!(engine.scrub().unwrap().problems.is_empty());
    flip_payload_bit(&engine, &layer);
    let report = engine.scrub().unwrap();
    assert_eq!(
        report.records_checked, 2,
        "config and manifest remain valid"
    );
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert_eq!(p.digest.as_ref(), Some(&layer));
    assert_eq!(p.kind, ProblemKind::Checksum);
    assert!(!p.intact_copy);
    assert_eq!(
        p.references,
        vec![RepoReference {
            repo: "team/app".into(),
            linked: true,
            manifests: vec![m],
            tags: vec!["v1".into()]
        }]
    );
    assert!(matches!(
        read(&engine, &r, &layer),
        Err(EngineError::Corrupt(_))
    ));
    // Scrub again: the damage is still there and still reported.
    assert_eq!(engine.scrub().unwrap().problems.len(), 1);
    // A missing standalone file is reported as missing.
    let big = push(&engine, &r, &[3u8; 2 << 20]);
    std::fs::remove_file(engine.store.blob_path(&big)).unwrap();
    let report = engine.scrub().unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.digest.as_ref() == Some(&big) && p.kind == ProblemKind::Missing));
}

#[test]
fn verify_reads_refuses_a_record_that_rotted_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(
        dir.path(),
        EngineOptions {
            verify_reads: true,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let r = repo("r");
    let d = push(&engine, &r, b"will rot");
    let ok = push(&engine, &r, b"stays fine");
    flip_payload_bit(&engine, &d);
    assert!(matches!(
        read(&engine, &r, &d),
        Err(EngineError::Corrupt(_))
    ));
    assert_eq!(read(&engine, &r, &ok).unwrap(), b"stays fine");
}

#[test]
fn concurrent_appends_from_eight_threads_share_fsyncs_and_dedup() {
    concurrent_appends_share_fsyncs_and_dedup(1);
}

/// With several lanes, a blob pushed on two lanes at once is still stored
/// once (the in-flight set is shared by all lanes).
#[test]
fn concurrent_appends_on_four_lanes_dedup_across_lanes() {
    concurrent_appends_share_fsyncs_and_dedup(4);
}

fn concurrent_appends_share_fsyncs_and_dedup(lanes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        small_blob_max: 1 << 20,
        segment_bytes_max: 2048,
        verify_reads: true,
        active_segments: lanes,
    };
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let r = repo(&format!("r{t}"));
                    push(&engine, &r, format!("unique {t}-{i}").as_bytes());
                    push(&engine, &r, format!("shared {i}").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let before = view(&engine);
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(
        engine.open_report().segment_records,
        8 * 25 + 25,
        "every blob stored exactly once"
    );
    assert!(engine.open_report().segments > 1);
    assert_eq!(view(&engine), before);
}

pub(super) fn no_grace() -> GcOptions {
    GcOptions {
        grace_period: Duration::ZERO,
        ..GcOptions::default()
    }
}

#[test]
fn gc_keeps_everything_reachable_and_frees_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        small_blob_max: 100,
        segment_bytes_max: 600,
        verify_reads: true,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let config = push(&engine, &a, b"{}");
    let layers: Vec<Digest> = (0..20)
        .map(|i| push(&engine, &a, format!("layer {i}").repeat(3).as_bytes()))
        .collect();
    let big_kept = push(&engine, &a, &[1u8; 1000]);
    let big_orphan = push(&engine, &a, &[2u8; 1000]);
    let kept: Vec<&Digest> = layers[..5].iter().chain([&big_kept]).collect();
    let tagged = engine
        .put_manifest(
            &a,
            &"kept".parse().unwrap(),
            None,
            &manifest_body(&config, &kept),
        )
        .unwrap()
        .digest;
    let untagged = engine
        .put_manifest(
            &a,
            &"gone".parse().unwrap(),
            None,
            &manifest_body(&config, &[&layers[5], &layers[6]]),
        )
        .unwrap()
        .digest;
    engine.delete_tag(&a, &"gone".parse().unwrap()).unwrap();
    engine.mount_blob(&b, &a, &layers[7]).unwrap(); // linked, never referenced
    let mut expected = view(&engine);

    let dry = engine
        .garbage_collect(&GcOptions {
            dry_run: true,
            delete_untagged: true,
            ..no_grace()
        })
        .unwrap();
    assert_eq!(view(&engine), expected, "a dry run changes nothing");
    let report = engine
        .garbage_collect(&GcOptions {
            delete_untagged: true,
            ..no_grace()
        })
        .unwrap();
    assert_eq!(dry.blobs_deleted, report.blobs_deleted);
    assert_eq!(
        report.manifests_deleted,
        vec![RepoDigest {
            repo: "a".into(),
            digest: untagged.clone()
        }]
    );
    // 15 small layers and one big one are unreferenced.
    assert_eq!(
        report.blobs_deleted.len(),
        15 + 1 + 1,
        "{:?}",
        report.blobs_deleted
    );
    assert!(report.blobs_deleted.contains(&untagged) && report.blobs_deleted.contains(&big_orphan));
    assert!(!report.segments_compacted.is_empty());
    expected.retain(|k, _| {
        kept.iter().any(|d| k.ends_with(&d.to_string()))
            || k.contains(&tagged.to_string())
            || k.contains(&config.to_string())
            || k.ends_with(":tag:kept")
    });
    assert_eq!(view(&engine), expected);
    assert!(engine.blob_len(&a, &layers[10]).is_err() && engine.blob_len(&b, &layers[7]).is_err());
    assert!(!engine.store.blob_path(&big_orphan).exists());
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(view(&engine), expected);
    // Everything left is reachable: a second collection removes no link or
    // manifest. Dead records still in the (never compacted) active segment
    // are found again by the scan and forgotten again; nothing live is.
    let again = engine
        .garbage_collect(&GcOptions {
            delete_untagged: true,
            ..no_grace()
        })
        .unwrap();
    assert!(again.links_removed.is_empty() && again.manifests_deleted.is_empty());
    assert!(again
        .blobs_deleted
        .iter()
        .all(|d| report.blobs_deleted.contains(d)));
    assert_eq!(view(&engine), expected);
}

#[test]
fn compaction_preserves_live_bytes_and_open_reads_of_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        small_blob_max: 4096,
        segment_bytes_max: 1000,
        verify_reads: true,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    let r = repo("r");
    let config = push(&engine, &r, b"{}");
    let blobs: Vec<(Digest, Vec<u8>)> = (0..60u32)
        .map(|i| {
            let bytes: Vec<u8> = (0..(i * 7 % 150 + 1)).map(|j| (i * 31 + j) as u8).collect();
            (push(&engine, &r, &bytes), bytes)
        })
        .collect();
    let live: Vec<&Digest> = blobs.iter().step_by(3).map(|(d, _)| d).collect();
    engine
        .put_manifest(
            &r,
            &"t".parse().unwrap(),
            None,
            &manifest_body(&config, &live),
        )
        .unwrap();
    let held = engine.open_blob(&r, live[0]).unwrap();
    let segs_before = segment_files(dir.path()).len();
    let report = engine
        .garbage_collect(&GcOptions {
            compact_garbage_ratio: 0.3,
            ..no_grace()
        })
        .unwrap();
    assert!(
        report.segments_compacted.len() >= 3,
        "{:?}",
        report.segments_compacted
    );
    assert!(segment_files(dir.path()).len() < segs_before);
    let mut out = vec![0u8; held.len as usize];
    held.file.read_exact_at(&mut out, held.offset).unwrap();
    assert_eq!(
        out, blobs[0].1,
        "a read handle on a compacted segment stays valid"
    );
    let check = |engine: &Engine| {
        for (i, (d, bytes)) in blobs.iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(&read(engine, &r, d).unwrap(), bytes, "blob {i}");
            } else {
                assert!(engine.blob_len(&r, d).is_err());
            }
        }
        assert!(engine.scrub().unwrap().problems.is_empty());
    };
    check(&engine);
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    check(&engine);
}

#[test]
fn the_grace_period_keeps_a_blob_whose_manifest_is_not_pushed_yet() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let config = push(&engine, &r, b"{}");
    let layer = push(&engine, &r, b"in flight");
    let report = engine.garbage_collect(&GcOptions::default()).unwrap();
    assert!(report.blobs_deleted.is_empty());
    assert_eq!(report.links_kept_in_grace.len(), 2);
    engine
        .put_manifest(
            &r,
            &"t".parse().unwrap(),
            None,
            &manifest_body(&config, &[&layer]),
        )
        .unwrap();
    // Without a grace period the same sequence loses the push, cleanly.
    let orphan = push(&engine, &r, b"orphan");
    engine.garbage_collect(&no_grace()).unwrap();
    let err = engine
        .put_manifest(
            &r,
            &"u".parse().unwrap(),
            None,
            &manifest_body(&config, &[&orphan]),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::ManifestBlobUnknown(_)));
    assert_eq!(read(&engine, &r, &layer).unwrap(), b"in flight");
}

#[test]
fn gc_during_concurrent_pushes_and_reads_keeps_every_image() {
    gc_during_concurrent_pushes_keeps_every_image(1);
}

/// The same with four lanes: compaction runs while every lane appends and
/// rolls over, and never compacts a segment a lane is appending to.
#[test]
fn gc_during_concurrent_pushes_on_four_lanes_keeps_every_image() {
    gc_during_concurrent_pushes_keeps_every_image(4);
}

fn gc_during_concurrent_pushes_keeps_every_image(lanes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        small_blob_max: 4096,
        segment_bytes_max: 2000,
        verify_reads: true,
        active_segments: lanes,
    };
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) || runs == 0 {
                let options = GcOptions {
                    delete_untagged: true,
                    compact_garbage_ratio: 0.0,
                    ..GcOptions::default()
                };
                engine.garbage_collect(&options).unwrap();
                runs += 1;
            }
            runs
        })
    };
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let r = repo(&format!("p{t}"));
                let mut images = Vec::new();
                for i in 0..30 {
                    let config = push(&engine, &r, format!("{{\"c\":{i}}}").as_bytes());
                    let layer_bytes = format!("layer {t} {i} ").repeat(i + 1).into_bytes();
                    let layer = push(&engine, &r, &layer_bytes);
                    let tag: Reference = format!("v{i}").parse().unwrap();
                    engine
                        .put_manifest(&r, &tag, None, &manifest_body(&config, &[&layer]))
                        .unwrap();
                    images.push((tag, layer, layer_bytes));
                    for (tag, layer, bytes) in &images {
                        assert_eq!(&read(&engine, &r, layer).unwrap(), bytes);
                        engine.manifest(&r, tag).unwrap();
                    }
                }
                images
            })
        })
        .collect();
    let images: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().damaged_records, 0);
    for (t, images) in images.iter().enumerate() {
        let r = repo(&format!("p{t}"));
        for (tag, layer, bytes) in images {
            assert_eq!(&read(&engine, &r, layer).unwrap(), bytes);
            engine.manifest(&r, tag).unwrap();
        }
    }
    assert!(engine.scrub().unwrap().problems.is_empty());
}

#[test]
fn index_snapshot_restarts_without_rescanning_and_falls_back_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("snap");
    let mut digests = Vec::new();
    {
        let engine = Engine::open(dir.path()).unwrap();
        for i in 0..50u32 {
            digests.push(push(&engine, &r, format!("blob {i}").as_bytes()));
        }
    } // dropped: snapshot written
    let after: Vec<Digest>;
    {
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(engine.open_report().snapshot_entries, 50);
        for d in &digests {
            assert!(engine.open_blob(&r, d).is_ok());
        }
        // Written after the snapshot: found by scanning the tail. Keep the
        // old snapshot to put back, as if the process had crashed.
        let snap = dir.path().join("segments/index.snap");
        let old = std::fs::read(&snap).unwrap();
        after = (0..5u32)
            .map(|i| push(&engine, &r, format!("later {i}").as_bytes()))
            .collect();
        drop(engine);
        std::fs::write(&snap, old).unwrap();
    }
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().snapshot_entries, 50);
    for d in digests.iter().chain(after.iter()) {
        assert_eq!(&Digest::sha256_of(&read(&engine, &r, d).unwrap()), d);
    }
    drop(engine);
    // A damaged snapshot is ignored: full scan, same answers.
    let snap = dir.path().join("segments/index.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().snapshot_entries, 0);
    for d in digests.iter().chain(after.iter()) {
        assert!(engine.open_blob(&r, d).is_ok());
    }
}
