//! The background work of a running server, each on its own thread: the
//! online GC, upload purging, index snapshots, pull-through cache eviction
//! and the storage health probe. Each loop sleeps its interval, runs, and
//! logs what it did; a failed round is logged and the next one runs.

use std::sync::Arc;
use std::time::Duration;

use berth_engine::Engine;

use crate::config::UploadPurging;
use crate::health::Health;
use crate::proxy::Proxy;

/// How often the index snapshot is written, so a restart after a crash
/// scans at most this much of the segments' writes.
pub const INDEX_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(600);

/// `storage.gc.*`: the online GC's schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSchedule {
    /// How often it runs.
    pub interval: Duration,
    /// Unreferenced blobs younger than this are kept.
    pub grace_period: Duration,
    /// Also delete manifests no tag names.
    pub delete_untagged: bool,
}

/// Starts a named thread running `body` forever; logs when it cannot start.
fn spawn_loop(name: &str, what: &str, body: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(body) {
        log::error!("cannot start the {what} thread: {e}");
    }
}

/// Writes the index snapshot every [`INDEX_SNAPSHOT_INTERVAL`].
pub fn index_snapshots(engine: Arc<Engine>) {
    spawn_loop("berth-snapshot", "index snapshot", move || loop {
        std::thread::sleep(INDEX_SNAPSHOT_INTERVAL);
        if let Err(e) = engine.write_index_snapshot() {
            log::warn!("index snapshot failed: {e}");
        }
    });
}

/// Removes upload sessions idle longer than `purging.age` every
/// `purging.interval`.
pub fn upload_purging(engine: Arc<Engine>, purging: UploadPurging) {
    spawn_loop("berth-upload-purge", "upload purging", move || loop {
        std::thread::sleep(purging.interval);
        match engine.purge_uploads(purging.age, purging.dry_run) {
            Ok(purged) if purged.is_empty() => {}
            Ok(purged) => log::info!(
                "upload purging: {} {} sessions idle longer than {:?}",
                if purging.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                purged.len(),
                purging.age
            ),
            Err(e) => log::error!("upload purging failed: {e}"),
        }
    });
}

/// Evicts cached content past the proxy's limits every
/// `proxy.evictioninterval`.
pub fn proxy_eviction(engine: Arc<Engine>, proxy: Arc<Proxy>) {
    let interval = proxy.settings().eviction_interval;
    spawn_loop("berth-proxy-evict", "proxy eviction", move || loop {
        std::thread::sleep(interval);
        if let Err(e) = proxy.evict(&engine) {
            log::error!("proxy: eviction failed: {e}");
        }
    });
}

/// Runs the online GC on `schedule`.
pub fn gc(engine: Arc<Engine>, schedule: GcSchedule) {
    log::info!(
        "online GC every {:?} (grace period {:?})",
        schedule.interval,
        schedule.grace_period
    );
    spawn_loop("berth-gc", "online GC", move || loop {
        std::thread::sleep(schedule.interval);
        let options = berth_engine::GcOptions {
            delete_untagged: schedule.delete_untagged,
            grace_period: schedule.grace_period,
            ..Default::default()
        };
        match engine.garbage_collect(&options) {
            Ok(r) => log::info!(
                "online GC: {} blobs ({} bytes) deleted, {} segments compacted, {} bytes reclaimed",
                r.blobs_deleted.len(),
                r.bytes_deleted,
                r.segments_compacted.len(),
                r.bytes_reclaimed
            ),
            Err(e) => log::error!("online GC failed: {e}"),
        }
    });
}

/// Probes storage health at once and then every
/// `health.storagedriver.interval` (nothing when health checks are disabled).
pub fn health_probe(health: Arc<Health>) {
    if !health.settings().enabled {
        return;
    }
    let interval = health.settings().interval;
    spawn_loop("berth-health", "storage health probe", move || loop {
        health.probe_once();
        std::thread::sleep(interval);
    });
}
