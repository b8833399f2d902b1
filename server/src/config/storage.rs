//! The `storage` section: the data directory, deletes, upload purging and
//! berth's online garbage collection.

use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::source::{required, Source};

/// `storage.maintenance.uploadpurging` (registry:2 defaults: enabled, 168h, 24h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    /// Sessions idle longer than this are removed.
    pub age: Duration,
    /// How often to look.
    pub interval: Duration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

/// `storage.*` as read.
pub(super) struct StorageSection {
    pub root_directory: PathBuf,
    pub delete_enabled: bool,
    pub gc_interval: Option<Duration>,
    pub gc_grace_period: Duration,
    pub gc_delete_untagged: bool,
    pub upload_purging: Option<UploadPurging>,
}

pub(super) fn parse(src: &Source) -> Result<StorageSection, ConfigError> {
    let purging = "storage.maintenance.uploadpurging.interval";
    let upload_purging = if src.flag("storage.maintenance.uploadpurging.enabled")? {
        let interval = required(purging, src.duration(purging)?)?;
        Some(UploadPurging {
            age: required(
                "storage.maintenance.uploadpurging.age",
                src.duration("storage.maintenance.uploadpurging.age")?,
            )?,
            // registry:2 treats a zero interval as its default.
            interval: if interval.is_zero() {
                Duration::from_secs(24 * 3600)
            } else {
                interval
            },
            dry_run: src.flag("storage.maintenance.uploadpurging.dryrun")?,
        })
    } else {
        None
    };
    Ok(StorageSection {
        root_directory: PathBuf::from(required(
            "storage.filesystem.rootdirectory",
            src.text("storage.filesystem.rootdirectory")?,
        )?),
        delete_enabled: src.flag("storage.delete.enabled")?,
        gc_interval: src
            .duration("storage.gc.interval")?
            .filter(|d| !d.is_zero()),
        gc_grace_period: required(
            "storage.gc.graceperiod",
            src.duration("storage.gc.graceperiod")?,
        )?,
        gc_delete_untagged: src.flag("storage.gc.deleteuntagged")?,
        upload_purging,
    })
}
