//! Micro-benchmarks of the per-request hot paths: request-head parsing,
//! chunked decoding, digest hashing and manifest validation.
//! Run: `cargo bench -p berth-bench` (numbers in target/criterion/).

use berth_bench::{chunked, image_manifest, random_bytes, PATCH_HEAD};
use berth_engine::{Algorithm, Digest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn head_parse(c: &mut Criterion) {
    let limits = berth_http::Limits::default();
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_request_head/docker_patch", |b| {
        b.iter(|| berth_http::parse_request_head(black_box(PATCH_HEAD), &limits))
    });
    group.finish();
}

fn chunked_decode(c: &mut Criterion) {
    let payload = random_bytes(1 << 20, 7);
    let body = chunked(&payload, 32 * 1024);
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("chunked_decode/1MiB_32KiB_chunks", |b| {
        b.iter(|| {
            let mut decoder = berth_http::BodyDecoder::new(&berth_http::BodyFraming::Chunked);
            let mut rest = black_box(&body[..]);
            let mut total = 0usize;
            while !decoder.is_done() {
                let Ok(d) = decoder.decode(rest) else { break };
                total += d.data.len();
                rest = &rest[d.consumed..];
            }
            total
        })
    });
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let data = random_bytes(1 << 20, 3);
    let mut group = c.benchmark_group("digest");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
        group.bench_function(format!("{}/1MiB", algorithm.name()), |b| {
            b.iter(|| Digest::of(algorithm, black_box(&data)))
        });
    }
    group.finish();
}

fn manifest_validation(c: &mut Criterion) {
    let body = image_manifest(10);
    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_manifest/oci_10_layers", |b| {
        b.iter(|| {
            berth_engine::manifest::parse_manifest(
                Some("application/vnd.oci.image.manifest.v1+json"),
                black_box(&body),
            )
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    head_parse,
    chunked_decode,
    hashing,
    manifest_validation
);
criterion_main!(benches);
