//! Uploads: blobs being received into sessions. This layer knows nothing of
//! the engine above it: the `Engine` methods that start, feed, finish,
//! cancel and purge uploads (`engine/uploads.rs`) call into it.
//!
//! - `id`: session ids;
//! - `session`: the sessions, their journal, limits and per-client counts;
//! - `files`: a bounded cache of open session data files (an idle session
//!   holds no descriptor);
//! - `block`: aligned blocks and the direct-I/O block writer;
//! - `pipeline`: the hashing and writing threads for large bodies, their
//!   global limit and the byte counters;
//! - `writer`: [`BodyWriter`], the interface the API layer fills blocks
//!   through.

pub(crate) mod block;
mod files;
mod id;
mod lease;
mod pipeline;
pub(crate) mod session;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

pub use block::Block;
pub use session::{UploadId, UploadIdError, UploadLimits};
pub use writer::{BodyWriter, Handed};

pub(crate) use session::Upload;

pub(crate) use lease::lock_idle;
#[cfg(test)]
pub(crate) use lease::UploadLease;
pub(crate) use session::Sessions;

/// Upload byte counters since the process started (metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadCounters {
    /// Body bytes received, hashed and written in parallel (large bodies).
    pub bytes_piped: u64,
    /// Of those, bytes written with direct I/O (no page-cache copy).
    pub bytes_direct: u64,
}

/// The upload byte counters (process-wide).
pub fn upload_counters() -> UploadCounters {
    use std::sync::atomic::Ordering;
    UploadCounters {
        bytes_piped: pipeline::UPLOAD_BYTES_PIPED.load(Ordering::Relaxed),
        bytes_direct: pipeline::UPLOAD_BYTES_DIRECT.load(Ordering::Relaxed),
    }
}
