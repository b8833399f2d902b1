//! The `health` section: what `/debug/health` checks about the store.

use std::time::Duration;

use super::source::Source;
use super::ConfigError;

/// `health.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// `health.storagedriver.*`; `None` when `.enabled` is false.
    pub storage_driver: Option<StorageProbe>,
}

/// The background storage probe: it writes and syncs a record every
/// `interval`; health is bad after `threshold` failures in a row, or while
/// the data directory's file system has less than `free_bytes_min` free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageProbe {
    /// `health.storagedriver.interval`, more than zero.
    pub interval: Duration,
    /// `health.storagedriver.threshold`, at least 1.
    pub threshold: u32,
    /// `health.storagedriver.freebytesmin` (berth).
    pub free_bytes_min: u64,
}

pub(super) fn parse(src: &Source) -> Result<HealthSettings, ConfigError> {
    let probe = StorageProbe {
        interval: src.positive_duration("health.storagedriver.interval")?,
        threshold: u32::try_from(src.int("health.storagedriver.threshold")?).map_err(|_| {
            ConfigError::invalid("health.storagedriver.threshold", "a smaller number", "")
        })?,
        free_bytes_min: src.int("health.storagedriver.freebytesmin")?,
    };
    Ok(HealthSettings {
        storage_driver: src.flag("health.storagedriver.enabled")?.then_some(probe),
    })
}
