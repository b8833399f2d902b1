//! Upload session ids: random UUIDs whose canonical text is their only
//! name (safe as a path component).

use std::fmt;
use std::str::FromStr;

/// An upload session id (a random UUID). Its text form is safe as a path
/// component.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text is not an upload id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upload id must be a UUID")]
pub struct UploadIdError;

impl FromStr for UploadId {
    type Err = UploadIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form, so one session has one name.
        if s.len() != 36 {
            return Err(UploadIdError);
        }
        uuid::Uuid::parse_str(s)
            .map(UploadId)
            .map_err(|_| UploadIdError)
    }
}
