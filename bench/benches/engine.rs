//! Storage-engine benchmarks: push throughput (small blobs into segments
//! with group commit, large blobs committed by rename), index and read-handle
//! lookups, and restart time against the number of stored blobs.
//! Run: `cargo bench -p berth-bench --bench engine` (numbers in
//! target/criterion/). The data directory is under the system temp dir, so
//! fsync cost is that file system's.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_bench::random_bytes;
use berth_engine::{segment, Digest, Engine, RepositoryName};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn push(engine: &Engine, repo: &RepositoryName, data: &[u8]) -> Digest {
    let id = engine.start_upload(repo).unwrap();
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        engine
            .upload_append(repo, id, (i << 20) as u64, chunk)
            .unwrap();
    }
    let digest = Digest::sha256_of(data);
    engine.finish_upload(repo, id, &digest).unwrap();
    digest
}

/// A distinct blob of `len` bytes for iteration `i` (content-addressed
/// stores dedup repeats, which would measure nothing).
fn blob(len: usize, i: u64) -> Vec<u8> {
    let mut data = random_bytes(len, 0x5eed);
    data[..8].copy_from_slice(&i.to_le_bytes());
    data
}

fn pushes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let repo: RepositoryName = "bench/app".parse().unwrap();
    let mut group = c.benchmark_group("engine/push");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut n = 0u64;
    for len in [4 * 1024usize, 256 * 1024] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("small_1_thread", len), |b| {
            b.iter_custom(|iters| {
                let blobs: Vec<_> = (0..iters)
                    .map(|_| {
                        n += 1;
                        blob(len, n)
                    })
                    .collect();
                let start = Instant::now();
                for data in &blobs {
                    push(&engine, &repo, data);
                }
                start.elapsed()
            })
        });
    }
    // Eight pushers at once share fdatasyncs (group commit).
    let len = 4 * 1024usize;
    group.throughput(Throughput::Bytes(len as u64 * 8));
    group.bench_function(BenchmarkId::new("small_8_threads", len), |b| {
        b.iter_custom(|iters| {
            let base = n;
            n += iters * 8;
            let start = Instant::now();
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let (engine, repo) = (engine.clone(), repo.clone());
                    std::thread::spawn(move || {
                        for i in 0..iters {
                            push(&engine, &repo, &blob(len, base + t * iters + i + 1));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            start.elapsed()
        })
    });
    let len = 16 << 20;
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("large_by_rename", len), |b| {
        b.iter_custom(|iters| {
            let blobs: Vec<_> = (0..iters)
                .map(|_| {
                    n += 1;
                    blob(len, n)
                })
                .collect();
            let start = Instant::now();
            for data in &blobs {
                push(&engine, &repo, data);
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let repo: RepositoryName = "bench/app".parse().unwrap();
    write_segments(dir.path(), 100_000, 64);
    let engine = Engine::open(dir.path()).unwrap();
    // Link some of them so open_blob can find them.
    let linked: Vec<Digest> = (0..1000u64)
        .map(|i| push(&engine, &repo, &record_payload(i, 64)))
        .collect();
    let mut group = c.benchmark_group("engine/lookup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("index_hit_100k", |b| {
        b.iter(|| {
            i = (i + 1) % linked.len();
            black_box(engine.blob_stored(&linked[i]))
        })
    });
    let missing = Digest::sha256_of(b"not stored");
    group.bench_function("index_miss_100k", |b| {
        b.iter(|| black_box(engine.blob_stored(black_box(&missing))))
    });
    group.bench_function("open_blob_100k", |b| {
        b.iter(|| {
            i = (i + 1) % linked.len();
            black_box(engine.open_blob(&repo, &linked[i]).unwrap())
        })
    });
    group.finish();
}

fn record_payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0xabu8; len];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// Writes `count` records of `len`-byte payloads straight into segment
/// files (256 MiB each), as a store that pushed them would hold them.
fn write_segments(root: &Path, count: u64, len: usize) {
    std::fs::create_dir_all(root.join("segments")).unwrap();
    let mut seg = 1u32;
    let mut buf = Vec::new();
    for i in 0..count {
        let payload = record_payload(i, len);
        segment::encode_record(&Digest::sha256_of(&payload), 0, &payload, &mut buf);
        if buf.len() as u64 >= 256 << 20 {
            std::fs::write(root.join(format!("segments/{seg:08}.seg")), &buf).unwrap();
            seg += 1;
            buf.clear();
        }
    }
    std::fs::write(root.join(format!("segments/{seg:08}.seg")), &buf).unwrap();
}

fn restart(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/restart");
    group.sample_size(10);
    for count in [10_000u64, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        write_segments(dir.path(), count, 100);
        group.throughput(Throughput::Elements(count));
        let snapshot = dir.path().join("segments/index.snap");
        // Every record scanned and checked (no snapshot, e.g. after a crash
        // before the first clean shutdown).
        group.bench_with_input(BenchmarkId::new("open_by_scan", count), &count, |b, _| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_file(&snapshot);
                },
                |()| Engine::open(dir.path()).unwrap(),
                criterion::BatchSize::PerIteration,
            )
        });
        // The index snapshot written at the previous close.
        drop(Engine::open(dir.path()).unwrap());
        group.bench_with_input(
            BenchmarkId::new("open_from_snapshot", count),
            &count,
            |b, _| b.iter_with_large_drop(|| Engine::open(dir.path()).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, pushes, lookups, restart);
criterion_main!(benches);
