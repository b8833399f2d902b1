//! The shared commit round: a link (or manifest) is written to the metadata
//! log before the segment bytes it names are fdatasynced, and opening after
//! a crash drops such a record when those bytes did not survive.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::blob_store::{manifest_body, no_grace, push, read, repo, seg_number, segment_files};
use crate::metalog::{decode_log, encode_record, Op, Written};
use crate::*;

fn opts() -> EngineOptions {
    EngineOptions {
        small_blob_max: 64,
        active_segments: 1,
        ..EngineOptions::default()
    }
}

fn log_batches(root: &Path) -> Vec<Vec<Op>> {
    decode_log(&std::fs::read(root.join("meta/log")).unwrap()).batches
}

/// Writes records right after the log's last one (into its padding), as
/// the engine would.
fn append_records(root: &Path, batches: &[Vec<Op>]) {
    let mut records = Vec::new();
    for ops in batches {
        encode_record(ops, &mut records);
    }
    let path = root.join("meta/log");
    let end = decode_log(&std::fs::read(&path).unwrap()).valid_bytes;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&records, end)
        .unwrap();
}

fn lost_link(r: &str, digest: &Digest, at: Written) -> Vec<Op> {
    vec![Op::LinkBlob {
        repo: r.into(),
        digest: digest.clone(),
        len: 3,
        at: Some(1),
        written: Some(at),
    }]
}

fn only_segment(root: &Path) -> (u32, u64) {
    let segs = segment_files(root);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let seg = seg_number(&segs[0]);
    (seg, std::fs::metadata(&segs[0]).unwrap().len())
}

#[test]
fn links_and_manifests_stored_in_segments_name_where_their_bytes_went() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let opts = EngineOptions {
        small_blob_max: 1024,
        ..opts()
    };
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    let small = push(&engine, &r, b"config");
    let large = push(&engine, &r, &[7u8; 2000]);
    let body = manifest_body(&small, &[&large]);
    let m = engine
        .put_manifest(&r, &Reference::Tag("v1".parse().unwrap()), None, &body)
        .unwrap()
        .digest;
    drop(engine);
    let (seg, len) = only_segment(dir.path());
    let written: Vec<(Digest, Option<Written>)> = log_batches(dir.path())
        .iter()
        .flatten()
        .filter_map(|op| match op {
            Op::LinkBlob {
                digest, written, ..
            }
            | Op::PutManifest {
                digest, written, ..
            } => Some((digest.clone(), *written)),
            _ => None,
        })
        .collect();
    let config_end = segment::record_len(&small, 6);
    assert_eq!(
        written,
        vec![
            (
                small,
                Some(Written {
                    seg,
                    end: config_end
                })
            ),
            // A file of its own, durable before its link was written.
            (large, None),
            (m, Some(Written { seg, end: len })),
        ]
    );
}

#[test]
fn a_link_whose_bytes_a_crash_lost_is_dropped_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let kept = {
        let engine = Engine::open_with(dir.path(), opts()).unwrap();
        push(&engine, &r, b"kept")
    };
    let (seg, len) = only_segment(dir.path());
    let lost = Digest::sha256_of(b"lost");
    append_records(
        dir.path(),
        &[
            lost_link("r", &lost, Written { seg, end: len + 1 }),
            // Written later in the same round, with nothing lost: kept.
            vec![Op::LinkBlob {
                repo: "other".into(),
                digest: kept.clone(),
                len: 4,
                at: Some(1),
                written: None,
            }],
        ],
    );
    let engine = Engine::open_with(dir.path(), opts()).unwrap();
    assert_eq!(engine.open_report().unacknowledged_records_dropped, 1);
    assert!(matches!(
        engine.blob_len(&r, &lost),
        Err(EngineError::BlobUnknown(_))
    ));
    assert_eq!(read(&engine, &repo("other"), &kept).unwrap(), b"kept");
    // The segment grows past the lost record's end: the record must not
    // come back at the next open.
    for i in 0..4u8 {
        push(&engine, &r, &[i; 40]);
    }
    drop(engine);
    assert!(only_segment(dir.path()).1 > len + 1);
    let engine = Engine::open_with(dir.path(), opts()).unwrap();
    assert_eq!(engine.open_report().unacknowledged_records_dropped, 0);
    assert!(engine.blob_len(&r, &lost).is_err());
    assert!(!log_batches(dir.path())
        .iter()
        .flatten()
        .any(|op| op.written().is_some_and(|(d, _)| *d == lost)));
}

#[test]
fn a_missing_segment_counts_as_lost_only_when_listed_or_above_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    // One record per segment; the first one's blob is collected and its
    // segment compacted away.
    let opts = EngineOptions {
        segment_bytes_max: 100,
        ..opts()
    };
    let (gone, compacted_seg) = {
        let engine = Engine::open_with(dir.path(), opts).unwrap();
        let gone = push(&engine, &r, &[1; 30]);
        let (first, _) = only_segment(dir.path());
        push(&engine, &r, &[2; 30]);
        push(&engine, &r, &[3; 30]);
        engine.delete_blob(&r, &gone).unwrap();
        let report = engine
            .garbage_collect(&GcOptions {
                compact_garbage_ratio: 0.0,
                ..no_grace()
            })
            .unwrap();
        assert!(report.segments_compacted.iter().any(|c| c.segment == first));
        (gone, first)
    };
    let segs = segment_files(dir.path());
    let seg = seg_number(segs.last().unwrap());
    assert!(compacted_seg < seg);
    assert!(!segs
        .iter()
        .any(|p| p.ends_with(format!("{compacted_seg:08}.seg"))));
    // Two lanes registered segments seg+1 and seg+5; the crash lost the
    // creation of the first, the second was created (empty).
    let list = dir.path().join("segments").join(active_list::FILE_NAME);
    std::fs::write(&list, active_list::encode(&[seg, seg + 1, seg + 5])).unwrap();
    std::fs::File::create(
        dir.path()
            .join("segments")
            .join(format!("{:08}.seg", seg + 5)),
    )
    .unwrap();
    let (created_lost, above_highest) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
    append_records(
        dir.path(),
        &[
            lost_link(
                "r",
                &created_lost,
                Written {
                    seg: seg + 1,
                    end: 10,
                },
            ),
            lost_link(
                "r",
                &above_highest,
                Written {
                    seg: seg + 9,
                    end: 10,
                },
            ),
            // Below the highest and not listed: compacted since, so it was
            // durable once (its blob collected later); the record stays.
            lost_link(
                "r",
                &gone,
                Written {
                    seg: compacted_seg,
                    end: 10,
                },
            ),
        ],
    );
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().unacknowledged_records_dropped, 2);
    let state = engine.meta.read();
    let links = &state.repos["r"].blobs;
    assert!(!links.contains_key(&created_lost));
    assert!(!links.contains_key(&above_highest));
    assert!(links.contains_key(&gone));
}

/// Copies the data directory while the engine is open: what a crash (or a
/// power cut after every write reached the disk) would leave.
fn crash_copy(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_file(to.join("lock"));
}

#[test]
fn active_segments_are_padded_and_sealing_or_shutdown_cuts_the_padding() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let r = repo("r");
    let opts = EngineOptions {
        segment_bytes_max: 4096,
        ..opts()
    };
    let engine = Engine::open_with(&root, opts).unwrap();
    let first = push(&engine, &r, &[1; 40]);
    let (seg, size) = only_segment(&root);
    let end = segment::record_len(&first, 40);
    // Padded up to the size limit (1 MiB ahead otherwise).
    assert_eq!(size, 4096, "segment {seg}");
    // Filling it seals it: the next segment is padded, the sealed one is
    // exactly as long as its records.
    let mut pushed = vec![first];
    for i in 2..80u8 {
        pushed.push(push(&engine, &r, &[i; 40]));
    }
    let segs = segment_files(&root);
    assert!(segs.len() >= 2, "{segs:?}");
    for sealed in &segs[..segs.len() - 1] {
        let bytes = std::fs::read(sealed).unwrap();
        assert!(bytes.len() < 4096 && bytes.len() as u64 >= end);
        assert_ne!(bytes.last(), Some(&0), "{sealed:?} keeps padding");
    }
    let active = segs.last().unwrap().clone();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), 4096);
    // A crash now leaves the padding: opening cuts it, reports no torn
    // write, and serves everything.
    let copy = dir.path().join("crashed");
    crash_copy(&root, &copy);
    {
        let crashed = Engine::open_with(&copy, opts).unwrap();
        assert_eq!(crashed.open_report().segment_torn_tail_bytes, 0);
        for (i, d) in pushed.iter().enumerate() {
            assert_eq!(read(&crashed, &r, d).unwrap(), vec![i as u8 + 1; 40]);
        }
    }
    // A clean shutdown cuts it.
    drop(engine);
    let len = std::fs::metadata(&active).unwrap().len();
    assert!(len < 4096);
    assert_ne!(std::fs::read(&active).unwrap().last(), Some(&0));
    let engine = Engine::open_with(&root, opts).unwrap();
    assert_eq!(engine.open_report().segment_torn_tail_bytes, 0);
    assert_eq!(engine.open_report().torn_tail_bytes, 0);
    assert_eq!(read(&engine, &r, &pushed[79 - 1]).unwrap(), vec![79; 40]);
}

#[test]
fn a_crash_inside_the_padding_cuts_the_torn_record_and_the_padding() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let r = repo("r");
    let engine = Engine::open_with(&root, opts()).unwrap();
    let kept = push(&engine, &r, b"kept");
    let copy = dir.path().join("crashed");
    crash_copy(&root, &copy);
    drop(engine);
    let (seg, size) = only_segment(&copy);
    let end = segment::record_len(&kept, 4);
    assert_eq!(size, end + 1024 * 1024);
    // A record torn inside the padding.
    let torn = b"never acknowledged";
    let mut record = Vec::new();
    segment::encode_record(&Digest::sha256_of(torn), 0, torn, &mut record);
    let path = copy.join("segments").join(format!("{seg:08}.seg"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&record[..record.len() - 3], end)
        .unwrap();
    let engine = Engine::open_with(&copy, opts()).unwrap();
    assert!(engine.open_report().segment_torn_tail_bytes > 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    assert_eq!(read(&engine, &r, &kept).unwrap(), b"kept");
    assert!(!engine.blob_stored(&Digest::sha256_of(torn)));
}

#[test]
fn concurrent_linked_pushes_and_manifests_leave_the_state_the_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        active_segments: 4,
        segment_bytes_max: 16 * 1024,
        ..EngineOptions::default()
    };
    let engine = std::sync::Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let engine = engine.clone();
            s.spawn(move || {
                let r = repo(&format!("r{}", t % 3));
                for i in 0..30u8 {
                    // Shared by threads two apart: deduplicated across lanes.
                    let config = push(&engine, &r, &[t % 2, i, 1]);
                    let layer = push(&engine, &r, &[t, i, 2]);
                    if i % 3 == 0 {
                        let body = manifest_body(&config, &[&layer]);
                        let tag = format!("t{t}-{}", i % 4).parse().unwrap();
                        engine
                            .put_manifest(&r, &Reference::Tag(tag), None, &body)
                            .unwrap();
                    }
                }
            });
        }
    });
    let before = super::blob_store::view(&engine);
    assert!(before.len() > 8 * 30);
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().unacknowledged_records_dropped, 0);
    assert_eq!(super::blob_store::view(&engine), before);
}

#[test]
fn a_session_whose_bytes_a_cut_short_finish_moved_away_ends_instead_of_coming_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let data = vec![9u8; 1000];
    let digest = Digest::sha256_of(&data);
    let id = {
        let engine = Engine::open_with(dir.path(), opts()).unwrap();
        let id = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, id, 0, &data).unwrap();
        // The metadata log fails (as a crash would stop it) after the
        // session's file was moved into the store as the blob's file.
        drop(engine.meta.write(vec![vec![Op::DeleteTag {
            repo: "r".into(),
            tag: "none".into(),
        }]]));
        assert!(engine.finish_upload(&r, id, &digest).is_err());
        id
    };
    let engine = Engine::open_with(dir.path(), opts()).unwrap();
    // Not resumed as an empty session: the client starts again.
    assert!(matches!(
        engine.upload_len(&r, id),
        Err(EngineError::UploadUnknown)
    ));
    assert_eq!(engine.open_report().uploads_resumed, 0);
    // The blob is stored but not linked; pushing it again links it.
    assert!(engine.blob_len(&r, &digest).is_err());
    assert_eq!(push(&engine, &r, &data), digest);
    assert_eq!(read(&engine, &r, &digest).unwrap(), data);
}
