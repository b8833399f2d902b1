//! Noticing that a file changed without a watcher: its modification time
//! and size, compared with what was seen last. Used by the reloading TLS
//! certificate and the htpasswd file.

use std::path::Path;
use std::time::SystemTime;

/// What identifies a file's current contents cheaply.
pub type FileStamp = (SystemTime, u64);

/// The file's modification time and size; `None` if it cannot be read.
pub fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
