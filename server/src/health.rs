//! Storage health: a probe run in the background (by `schedulers`) and the
//! last verdict that `/debug/health` reports. Answering health never touches
//! the disk, so anonymous callers cannot make berth do I/O.
//!
//! One probe checks that the data directory's file system can write and
//! sync a non-empty record (a 4 KiB file in the store's `tmp/`, fdatasynced
//! and removed), that it has at least `health.storagedriver.freebytesmin`
//! free, and that the process has descriptors to spare. Health turns
//! unhealthy after `health.storagedriver.threshold` consecutive failed
//! probes and healthy again after one clean probe.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use crate::config::HealthConfig;

/// Bytes the probe writes and syncs (one page: a full disk refuses it).
pub const PROBE_RECORD_BYTES: usize = 4096;

/// Descriptors that must stay free below `RLIMIT_NOFILE` for the process to
/// count as healthy (accepting a connection and opening a store file).
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// Check name of the write-and-sync probe (registry:2's key).
pub const CHECK_FILESYSTEM: &str = "storagedriver_filesystem";
/// Check name of the free-space threshold.
pub const CHECK_FREE_SPACE: &str = "storagedriver_freespace";
/// Check name of the descriptor reserve.
pub const CHECK_DESCRIPTORS: &str = "file_descriptors";

/// One failed check of a probe: its name and a short reason (no paths, no
/// internal error text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check's name, e.g. [`CHECK_FILESYSTEM`].
    pub check: &'static str,
    /// Why, in a few words.
    pub reason: String,
}

/// What the probe found last and how many probes in a row failed.
#[derive(Debug, Default)]
struct Verdict {
    consecutive_failures: u32,
    last_failures: Vec<Failure>,
}

/// The health state shared by the probe's thread and the debug listener.
#[derive(Debug)]
pub struct Health {
    settings: HealthConfig,
    tmp_dir: PathBuf,
    verdict: Mutex<Verdict>,
    probes: AtomicU64,
    probe_writes: AtomicU64,
    probe_failures: AtomicU64,
}

impl Health {
    /// Health for a store whose data directory is `root` (the probe writes
    /// into `root/tmp`, which the engine empties at start).
    pub fn new(settings: HealthConfig, root: &Path) -> Health {
        // The configuration refuses both (a zero threshold would report
        // unhealthy before any probe ran; a zero interval would spin).
        assert!(
            settings.threshold >= 1,
            "health threshold must be at least 1"
        );
        assert!(
            !settings.interval.is_zero(),
            "health interval must not be zero"
        );
        Health {
            settings,
            tmp_dir: root.join("tmp"),
            verdict: Mutex::new(Verdict::default()),
            probes: AtomicU64::new(0),
            probe_writes: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &HealthConfig {
        &self.settings
    }

    /// Runs one probe and records its result. Blocking (writes and syncs).
    pub fn probe_once(&self) {
        let failures = probe(
            &self.tmp_dir,
            self.settings.free_bytes_min,
            &self.probe_writes,
        );
        self.probes.fetch_add(1, Ordering::Relaxed);
        if !failures.is_empty() {
            self.probe_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.record(failures);
    }

    /// Records one probe's failures (empty: the probe passed).
    pub fn record(&self, failures: Vec<Failure>) {
        let mut verdict = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if failures.is_empty() {
            if verdict.consecutive_failures >= self.settings.threshold {
                log::info!("health: storage healthy again");
            }
            verdict.consecutive_failures = 0;
        } else {
            verdict.consecutive_failures = verdict.consecutive_failures.saturating_add(1);
            if verdict.consecutive_failures == self.settings.threshold {
                let reasons: Vec<String> = failures
                    .iter()
                    .map(|f| format!("{}: {}", f.check, f.reason))
                    .collect();
                log::error!(
                    "health: unhealthy after {} failed probes: {}",
                    verdict.consecutive_failures,
                    reasons.join("; ")
                );
            }
        }
        verdict.last_failures = failures;
    }

    /// The failing checks when unhealthy (threshold reached), else empty.
    pub fn failing(&self) -> Vec<Failure> {
        let verdict = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
        if self.settings.enabled && verdict.consecutive_failures >= self.settings.threshold {
            verdict.last_failures.clone()
        } else {
            Vec::new()
        }
    }

    /// The answer of `/debug/health`: 200 `{}`, or 503 with each failing
    /// check named, registry:2's shape (`{"storagedriver_filesystem":"..."}`).
    pub fn report(&self) -> (u16, serde_json::Value) {
        let failing = self.failing();
        if failing.is_empty() {
            return (200, serde_json::json!({}));
        }
        let body: serde_json::Map<String, serde_json::Value> = failing
            .into_iter()
            .map(|f| (f.check.to_owned(), serde_json::Value::String(f.reason)))
            .collect();
        (503, serde_json::Value::Object(body))
    }

    /// The probe's counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut text = String::new();
        for (name, help, value) in [
            (
                "berth_health_probes_total",
                "storage health probes run",
                &self.probes,
            ),
            (
                "berth_health_probe_writes_total",
                "records the storage health probe wrote and synced",
                &self.probe_writes,
            ),
            (
                "berth_health_probe_failures_total",
                "storage health probes with a failed check",
                &self.probe_failures,
            ),
        ] {
            crate::proxy::write_counter(&mut text, name, help, value.load(Ordering::Relaxed));
        }
        let healthy = u64::from(self.failing().is_empty());
        text.push_str(&format!(
            "# HELP berth_health_healthy 1 when /debug/health answers 200\n\
             # TYPE berth_health_healthy gauge\nberth_health_healthy {healthy}\n"
        ));
        text
    }
}

/// Runs every check once: write and sync a record in `tmp_dir`, free space
/// of its file system against `free_bytes_min`, descriptors left. Counts
/// each attempted write in `writes`.
pub fn probe(tmp_dir: &Path, free_bytes_min: u64, writes: &AtomicU64) -> Vec<Failure> {
    let mut failures = Vec::new();
    writes.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = write_record(tmp_dir) {
        failures.push(Failure {
            check: CHECK_FILESYSTEM,
            reason: format!(
                "cannot write and sync a {PROBE_RECORD_BYTES}-byte record: {}",
                e.kind()
            ),
        });
    }
    match rustix::fs::statvfs(tmp_dir) {
        Ok(stat) => {
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if free < free_bytes_min {
                failures.push(Failure {
                    check: CHECK_FREE_SPACE,
                    reason: format!("{free} bytes free, below the minimum of {free_bytes_min}"),
                });
            }
        }
        Err(e) => failures.push(Failure {
            check: CHECK_FREE_SPACE,
            reason: format!(
                "cannot read the free space: {}",
                std::io::Error::from(e).kind()
            ),
        }),
    }
    if let Some((open, limit)) = descriptors() {
        if limit.saturating_sub(open) < DESCRIPTOR_RESERVE {
            failures.push(Failure {
                check: CHECK_DESCRIPTORS,
                reason: format!("{open} of {limit} descriptors open"),
            });
        }
    }
    failures
}

/// Writes [`PROBE_RECORD_BYTES`] non-zero bytes to a fresh file in
/// `tmp_dir`, fdatasyncs it and removes it (also when the write fails).
fn write_record(tmp_dir: &Path) -> std::io::Result<()> {
    let path = tmp_dir.join(format!("health-probe-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&[0xA5; PROBE_RECORD_BYTES])?;
        file.sync_data()
    })();
    let removed = match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    written.and(removed)
}

/// (open descriptors, the soft `RLIMIT_NOFILE`), when both are known.
fn descriptors() -> Option<(u64, u64)> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((open, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threshold: u32) -> HealthConfig {
        HealthConfig {
            enabled: true,
            interval: std::time::Duration::from_secs(10),
            threshold,
            free_bytes_min: 0,
        }
    }

    #[test]
    fn a_probe_writes_syncs_and_removes_a_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp");
        let health = Health::new(settings(1), dir.path());
        health.probe_once();
        assert_eq!(health.report().0, 200, "{:?}", health.report());
        assert_eq!(health.probe_writes.load(Ordering::Relaxed), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
            .expect("read tmp")
            .collect();
        assert!(left.is_empty(), "the probe left {left:?}");
    }

    #[test]
    fn a_write_that_fails_names_the_filesystem_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        // No tmp/ directory: the write fails.
        let health = Health::new(settings(1), dir.path());
        health.probe_once();
        let (status, body) = health.report();
        assert_eq!(status, 503);
        assert!(body[CHECK_FILESYSTEM].is_string(), "{body}");
        assert!(
            !body
                .to_string()
                .contains(dir.path().to_str().unwrap_or("/")),
            "no paths in the answer: {body}"
        );
    }

    #[test]
    fn too_little_free_space_fails_the_free_space_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writes = AtomicU64::new(0);
        let failures = probe(dir.path(), u64::MAX, &writes);
        assert!(
            failures
                .iter()
                .any(|f| f.check == CHECK_FREE_SPACE && f.reason.contains("free")),
            "{failures:?}"
        );
        assert!(
            failures.iter().all(|f| f.check != CHECK_FILESYSTEM),
            "{failures:?}"
        );
    }

    #[test]
    fn unhealthy_only_after_threshold_consecutive_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let health = Health::new(settings(3), dir.path());
        let failure = || {
            vec![Failure {
                check: CHECK_FILESYSTEM,
                reason: "x".into(),
            }]
        };
        health.record(failure());
        health.record(failure());
        assert_eq!(health.report().0, 200);
        health.record(Vec::new());
        health.record(failure());
        health.record(failure());
        assert_eq!(health.report().0, 200, "the clean probe reset the count");
        health.record(failure());
        assert_eq!(
            health.report(),
            (503, serde_json::json!({CHECK_FILESYSTEM: "x"}))
        );
        health.record(Vec::new());
        assert_eq!(health.report(), (200, serde_json::json!({})));
    }

    #[test]
    fn disabled_health_is_always_healthy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = settings(1);
        s.enabled = false;
        let health = Health::new(s, dir.path());
        health.record(vec![Failure {
            check: CHECK_FILESYSTEM,
            reason: "x".into(),
        }]);
        assert_eq!(health.report().0, 200);
    }
}
