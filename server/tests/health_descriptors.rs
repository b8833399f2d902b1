//! The storage health probe counts descriptors: with `RLIMIT_NOFILE` lowered
//! to just above what the process has open, the probe fails its descriptor
//! check. Its own test binary, because the limit is process-wide.

use std::sync::atomic::{AtomicU64, Ordering};

use berth::health::{probe, CHECK_DESCRIPTORS, DESCRIPTOR_RESERVE};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

#[test]
fn too_few_spare_descriptors_fail_the_probe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let writes = AtomicU64::new(0);
    let healthy = probe(dir.path(), 0, &writes);
    assert!(healthy.is_empty(), "{healthy:?}");

    let open = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64;
    let before = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open + DESCRIPTOR_RESERVE / 2),
            maximum: before.maximum,
        },
    )
    .expect("lower the soft limit");
    let failures = probe(dir.path(), 0, &writes);
    setrlimit(Resource::Nofile, before).expect("restore the limit");

    assert!(
        failures
            .iter()
            .any(|f| f.check == CHECK_DESCRIPTORS && f.reason.contains("descriptors open")),
        "{failures:?}"
    );
    assert_eq!(
        failures.len(),
        1,
        "only the descriptor check fails: {failures:?}"
    );
    assert_eq!(writes.load(Ordering::Relaxed), 2);
}
