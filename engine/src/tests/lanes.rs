//! Write lanes (per-core active segments): placement, roll-over, recovery of
//! torn tails in several active segments, the index snapshot, and
//! compaction next to active segments. Against a real temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Barrier};

use super::blob_store::{append_raw, no_grace, push, read, repo, seg_number, segment_files, view};
use crate::*;

fn lane_opts(lanes: usize, segment_bytes_max: u64) -> EngineOptions {
    EngineOptions {
        small_blob_max: 4096,
        segment_bytes_max,
        verify_reads: true,
        active_segments: lanes,
    }
}

fn seg_file(root: &Path, seg: u32) -> std::path::PathBuf {
    root.join("segments").join(format!("{seg:08}.seg"))
}

/// One thread's lane and its pushes in order: (digest, bytes).
type ThreadPushes = (usize, Vec<(Digest, Vec<u8>)>);

/// Each of `threads` threads (started together) pushes `per_thread` blobs
/// to its own repository. Returns, per thread, its lane and its pushes in
/// order: (digest, bytes).
fn push_from_threads(
    engine: &Arc<Engine>,
    threads: usize,
    per_thread: usize,
    tag: &str,
) -> Vec<ThreadPushes> {
    let lanes = engine.options().active_segments;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (engine, start, tag) = (engine.clone(), start.clone(), tag.to_string());
            std::thread::spawn(move || {
                let lane = lane::current(lanes);
                start.wait();
                let r = repo(&format!("t{t}"));
                let pushed: Vec<(Digest, Vec<u8>)> = (0..per_thread)
                    .map(|i| {
                        let bytes = format!("{tag} thread {t} blob {i} ")
                            .repeat(i % 4 + 1)
                            .into_bytes();
                        (push(&engine, &r, &bytes), bytes)
                    })
                    .collect();
                (lane, pushed)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every pushed blob is served byte-exact.
fn assert_all_served(engine: &Engine, pushed: &[ThreadPushes]) {
    for (t, (_, blobs)) in pushed.iter().enumerate() {
        let r = repo(&format!("t{t}"));
        for (d, bytes) in blobs {
            assert_eq!(&read(engine, &r, d).unwrap(), bytes, "thread {t} {d}");
        }
    }
}

#[test]
fn appends_from_several_threads_land_in_distinct_active_segments() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open_with(dir.path(), lane_opts(4, 1 << 20)).unwrap());
    let pushed = push_from_threads(&engine, 8, 10, "place");
    let mut segs_of_lane: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for (lane, blobs) in &pushed {
        for (d, _) in blobs {
            let seg = engine.store.locate(d).unwrap().seg;
            segs_of_lane.entry(*lane).or_default().insert(seg);
        }
    }
    // No roll-over at 1 MiB: each lane wrote exactly one segment, and no two
    // lanes share one.
    let all: Vec<u32> = segs_of_lane.values().flatten().copied().collect();
    let distinct: BTreeSet<u32> = all.iter().copied().collect();
    assert!(
        segs_of_lane.values().all(|s| s.len() == 1),
        "{segs_of_lane:?}"
    );
    assert_eq!(
        all.len(),
        distinct.len(),
        "lanes share a segment: {segs_of_lane:?}"
    );
    assert!(distinct.len() >= 2, "{segs_of_lane:?}");
    assert_eq!(
        engine.store.active_segments(),
        distinct.iter().copied().collect::<Vec<_>>()
    );
    let before = view(&engine);
    drop(engine);
    let engine = Engine::open_with(dir.path(), lane_opts(4, 1 << 20)).unwrap();
    assert_eq!(engine.open_report().segment_records, 80);
    assert_eq!(view(&engine), before);
}

#[test]
fn each_lane_rolls_over_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 400);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let pushed = push_from_threads(&engine, 4, 30, "roll");
    let mut lane_of_seg: BTreeMap<u32, usize> = BTreeMap::new();
    for (lane, blobs) in &pushed {
        let mut last = 0;
        for (d, _) in blobs {
            let seg = engine.store.locate(d).unwrap().seg;
            // A lane's appends go to ever later segments of its own.
            assert!(seg >= last, "lane {lane} went back from {last} to {seg}");
            last = seg;
            let owner = *lane_of_seg.entry(seg).or_insert(*lane);
            assert_eq!(owner, *lane, "segment {seg} written by two lanes");
        }
    }
    let lanes_used: BTreeSet<usize> = pushed.iter().map(|(l, _)| *l).collect();
    assert!(lanes_used.len() >= 2, "{lanes_used:?}");
    for lane in &lanes_used {
        let segs = lane_of_seg.values().filter(|l| *l == lane).count();
        assert!(
            segs > 2,
            "lane {lane} rolled over only into {segs} segments"
        );
    }
    let active: BTreeSet<u32> = engine.store.active_segments().into_iter().collect();
    assert_eq!(active.len(), lanes_used.len());
    for path in segment_files(dir.path()) {
        let seg: u32 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        if !active.contains(&seg) {
            assert!(std::fs::metadata(&path).unwrap().len() <= 400, "{seg}");
        }
    }
    let before = view(&engine);
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().segment_records, 120);
    assert_eq!(view(&engine), before);
}

/// A record cut short at `cut` bytes, as a crash mid-append leaves it.
fn torn_record(payload: &[u8], cut: usize) -> Vec<u8> {
    let mut record = Vec::new();
    segment::encode_record(&Digest::sha256_of(payload), 0, payload, &mut record);
    record.truncate(cut);
    record
}

#[test]
fn torn_tails_in_two_active_segments_are_both_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 1 << 20);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let pushed = push_from_threads(&engine, 8, 6, "torn");
    let active = engine.store.active_segments();
    assert!(active.len() >= 2, "{active:?}");
    drop(engine); // writes the index snapshot: the torn bytes lie past it
    let (a, b) = (active[0], active[active.len() - 1]);
    let lens: Vec<u64> = [a, b]
        .iter()
        .map(|&s| std::fs::metadata(seg_file(dir.path(), s)).unwrap().len())
        .collect();
    let torn_a = b"an append to lane a that the crash cut";
    let torn_b = b"an append to lane b that the crash cut";
    append_raw(&seg_file(dir.path(), a), &torn_record(torn_a, 30));
    append_raw(&seg_file(dir.path(), b), &torn_record(torn_b, 41));
    for with_snapshot in [true, false] {
        if !with_snapshot {
            std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
            append_raw(&seg_file(dir.path(), a), &torn_record(torn_a, 30));
            append_raw(&seg_file(dir.path(), b), &torn_record(torn_b, 41));
        }
        let engine = Engine::open_with(dir.path(), opts).unwrap();
        let report = engine.open_report();
        assert_eq!(report.segment_torn_tail_bytes, 30 + 41, "{report:?}");
        assert_eq!(report.damaged_records, 0);
        for (&s, &len) in [a, b].iter().zip(&lens) {
            assert_eq!(
                std::fs::metadata(seg_file(dir.path(), s)).unwrap().len(),
                len
            );
        }
        assert_all_served(&engine, &pushed);
        for torn in [&torn_a[..], &torn_b[..]] {
            assert!(!engine.store.contains(&Digest::sha256_of(torn)));
        }
        // The cut segments are the lanes' active ones again.
        let reopened = engine.store.active_segments();
        assert!(
            reopened.contains(&a) && reopened.contains(&b),
            "{reopened:?}"
        );
    }
    // Appends go on at record boundaries in every lane.
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let later = push_from_threads(&engine, 8, 3, "after the crash");
    drop(engine);
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    let report = engine.open_report();
    assert_eq!(
        (report.segment_torn_tail_bytes, report.damaged_records),
        (0, 0)
    );
    assert_all_served(&engine, &pushed);
    assert_all_served(&engine, &later);
}

#[test]
fn a_failing_tail_of_a_sealed_segment_is_isolated_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 300);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let pushed = push_from_threads(&engine, 4, 20, "sealed");
    let active = engine.store.active_segments();
    drop(engine);
    let sealed = segment_files(dir.path())
        .into_iter()
        .find(|p| {
            let seg: u32 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            !active.contains(&seg)
        })
        .unwrap();
    let len = std::fs::metadata(&sealed).unwrap().len();
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    append_raw(&sealed, &torn_record(b"media damage, not a torn write", 25));
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    let report = engine.open_report();
    assert_eq!(
        (report.segment_torn_tail_bytes, report.damaged_records),
        (0, 1)
    );
    assert_eq!(std::fs::metadata(&sealed).unwrap().len(), len + 25);
    assert_all_served(&engine, &pushed);
}

/// A store written before lanes has no `segments/active`: its one active
/// segment is the highest-numbered, and only that one's tail is cut.
#[test]
fn a_store_without_the_active_list_cuts_only_the_highest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(1, 300);
    let r = repo("old");
    let blobs: Vec<(Digest, Vec<u8>)> = {
        let engine = Engine::open_with(dir.path(), opts).unwrap();
        (0..30)
            .map(|i| {
                let bytes = format!("old layout blob {i} ").repeat(3).into_bytes();
                (push(&engine, &r, &bytes), bytes)
            })
            .collect()
    };
    std::fs::remove_file(dir.path().join("segments/active")).unwrap();
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3);
    append_raw(&segs[0], &torn_record(b"damage in a sealed one", 21));
    append_raw(
        segs.last().unwrap(),
        &torn_record(b"torn in the active one", 33),
    );
    let engine = Engine::open_with(dir.path(), lane_opts(4, 300)).unwrap();
    let report = engine.open_report();
    assert_eq!(
        (report.segment_torn_tail_bytes, report.damaged_records),
        (33, 1)
    );
    for (d, bytes) in &blobs {
        assert_eq!(&read(&engine, &r, d).unwrap(), bytes);
    }
    let highest = seg_number(segs.last().unwrap());
    assert_eq!(engine.store.active_segments(), vec![highest]);
    // The list exists from now on.
    assert!(dir.path().join("segments/active").exists());
}

#[test]
fn the_index_snapshot_covers_every_active_segment_and_restart_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 1 << 20);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let pushed = push_from_threads(&engine, 8, 10, "snap");
    let active = engine.store.active_segments();
    assert!(active.len() >= 2, "{active:?}");
    drop(engine); // snapshot written
    let files_before = segment_files(dir.path());
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    assert_eq!(engine.open_report().snapshot_entries, 80);
    assert_eq!(engine.open_report().segment_records, 80);
    assert_all_served(&engine, &pushed);
    // Reopening reuses the active segments instead of starting new ones.
    assert_eq!(engine.store.active_segments(), active);
    assert_eq!(segment_files(dir.path()), files_before);
    // Appends after the snapshot, to several reused active segments, are
    // found by scanning past what the snapshot covers (the old snapshot is
    // put back, as after a crash).
    let snap = dir.path().join("segments/index.snap");
    let old = std::fs::read(&snap).unwrap();
    let later = push_from_threads(&engine, 8, 5, "after the snapshot");
    let grown: Vec<u32> = active
        .iter()
        .copied()
        .filter(|&s| {
            later
                .iter()
                .flat_map(|(_, b)| b)
                .any(|(d, _)| engine.store.locate(d).unwrap().seg == s)
        })
        .collect();
    assert!(grown.len() >= 2, "{grown:?}");
    drop(engine);
    std::fs::write(&snap, old).unwrap();
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().snapshot_entries, 80);
    assert_eq!(engine.open_report().segment_records, 120);
    assert_all_served(&engine, &pushed);
    assert_all_served(&engine, &later);
    // A snapshot written now covers each active segment's durable length.
    engine.write_index_snapshot().unwrap();
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().snapshot_entries, 120);
}

#[test]
fn compaction_never_touches_a_lane_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 400);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    // Nothing is referenced: every record is garbage, every segment a
    // candidate by ratio.
    let pushed = push_from_threads(&engine, 4, 25, "garbage");
    let active = engine.store.active_segments();
    assert!(active.len() >= 2, "{active:?}");
    let highest = *segment_files(dir.path())
        .iter()
        .map(|p| {
            p.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .collect::<Vec<_>>()
        .last()
        .unwrap();
    let report = engine
        .garbage_collect(&GcOptions {
            compact_garbage_ratio: 0.0,
            ..no_grace()
        })
        .unwrap();
    assert_eq!(report.blobs_deleted.len(), 100);
    let compacted: BTreeSet<u32> = report
        .segments_compacted
        .iter()
        .map(|c| c.segment)
        .collect();
    assert!(!compacted.is_empty());
    for seg in &active {
        assert!(!compacted.contains(seg), "active segment {seg} compacted");
        assert!(seg_file(dir.path(), *seg).exists());
    }
    assert!(!compacted.contains(&highest));
    // Before deleting a segment compaction unlists it: a listed segment
    // found missing at open counts as lost in a crash.
    let listed = active_list::decode(
        &std::fs::read(dir.path().join("segments").join(active_list::FILE_NAME)).unwrap(),
    )
    .unwrap();
    assert!(
        listed.iter().all(|seg| !compacted.contains(seg)),
        "{listed:?} {compacted:?}"
    );
    let left: BTreeSet<u32> = segment_files(dir.path())
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    let mut expected: BTreeSet<u32> = active.iter().copied().collect();
    expected.insert(highest);
    assert_eq!(
        left, expected,
        "only the active and the highest segments stay"
    );
    // The lanes go on appending to their segments; nothing was lost.
    let later = push_from_threads(&engine, 4, 5, "after gc");
    assert_all_served(&engine, &later);
    for (_, blobs) in &pushed {
        for (d, _) in blobs {
            assert!(!engine.store.contains(d));
        }
    }
    drop(engine);
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_all_served(&engine, &later);
    assert!(engine.scrub().unwrap().problems.is_empty());
}

/// Threads on different lanes storing the same blob at the same instant
/// write it once: the later ones wait for the first lane's commit.
#[test]
fn the_same_blob_stored_on_several_lanes_at_once_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = lane_opts(4, 1 << 20);
    let engine = Arc::new(Engine::open_with(dir.path(), opts).unwrap());
    let rounds = 20;
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (engine, start) = (engine.clone(), start.clone());
            std::thread::spawn(move || {
                let lane = lane::current(4);
                for i in 0..rounds {
                    let bytes = format!("stored by everyone in round {i}").into_bytes();
                    let d = Digest::sha256_of(&bytes);
                    start.wait();
                    engine.store.put_small(&d, &bytes).unwrap();
                    // Durable and indexed on return, whoever wrote it.
                    assert_eq!(engine.store.read(&d).unwrap().unwrap(), bytes);
                }
                lane
            })
        })
        .collect();
    let lanes: BTreeSet<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(lanes.len() >= 2, "{lanes:?}");
    drop(engine);
    std::fs::remove_file(dir.path().join("segments/index.snap")).unwrap();
    let engine = Engine::open_with(dir.path(), opts).unwrap();
    assert_eq!(engine.open_report().segment_records, rounds);
}

/// A measurement, not a check (run by hand, `--ignored --nocapture`): eight
/// threads push 4 KiB blobs for `BERTH_LANES_BENCH_SECS` (default 3)
/// seconds, per lane count, and it prints pushes per second: `push` the way
/// a `PUT` carrying the whole blob does (`finish_upload_with`: segment group
/// commit, then metadata group commit), `segment` the segment commit alone
/// (`put_small`). The data directory is under `BERTH_LANES_BENCH_DIR`
/// (default: the system temp dir).
#[test]
#[ignore]
fn lane_count_throughput() {
    let secs: u64 = std::env::var("BERTH_LANES_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let base = std::env::var_os("BERTH_LANES_BENCH_DIR").map(std::path::PathBuf::from);
    for (round, segment_only) in [(0, false), (0, true), (1, false), (1, true)] {
        for lanes in [1usize, 2, 4, 8] {
            let dir = match &base {
                Some(b) => tempfile::tempdir_in(b).unwrap(),
                None => tempfile::tempdir().unwrap(),
            };
            let engine =
                Arc::new(Engine::open_with(dir.path(), lane_opts(lanes, 256 << 20)).unwrap());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let engine = engine.clone();
                    std::thread::spawn(move || {
                        let r = repo("bench/app");
                        let mut n = 0u64;
                        while std::time::Instant::now() < deadline {
                            let mut data = vec![0x5a; 4096];
                            data[..8].copy_from_slice(&n.to_le_bytes());
                            data[8..16].copy_from_slice(&t.to_le_bytes());
                            let digest = Digest::sha256_of(&data);
                            if segment_only {
                                engine.store.put_small(&digest, &data).unwrap();
                            } else {
                                let id = engine.start_upload(&r).unwrap();
                                engine.finish_upload_with(&r, id, &data, &digest).unwrap();
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let mode = if segment_only { "segment" } else { "push" };
            println!(
                "round {round} {mode:7} lanes {lanes}: {:.0} per second",
                total as f64 / secs as f64
            );
        }
    }
}
