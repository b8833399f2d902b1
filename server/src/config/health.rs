//! The `health` section: what the background storage probe behind
//! `/debug/health` checks, and how often.

use std::time::Duration;

use super::error::ConfigError;
use super::source::Source;

/// `health.storagedriver.*` (registry:2's keys, plus berth's `freebytesmin`):
/// the probe writes and syncs a record every `interval`; health is bad
/// after `threshold` failures in a row, or while the data directory's file
/// system has less than `free_bytes_min` free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// `health.storagedriver.enabled` (default true).
    pub enabled: bool,
    /// `health.storagedriver.interval` (default 10s), more than zero.
    pub interval: Duration,
    /// `health.storagedriver.threshold` (default 3), at least 1.
    pub threshold: u32,
    /// `health.storagedriver.freebytesmin` (berth, default 512 MiB).
    pub free_bytes_min: u64,
}

pub(super) fn parse(src: &Source) -> Result<HealthConfig, ConfigError> {
    let threshold = "health.storagedriver.threshold";
    Ok(HealthConfig {
        enabled: src.flag("health.storagedriver.enabled")?,
        interval: src.positive_duration("health.storagedriver.interval")?,
        threshold: u32::try_from(src.int(threshold)?)
            .map_err(|_| ConfigError::invalid(threshold, "a smaller number", ""))?,
        free_bytes_min: src.int("health.storagedriver.freebytesmin")?,
    })
}
