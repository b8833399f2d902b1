//! berth's storage engine: content-addressed blobs, repositories, tags,
//! manifests and upload sessions under one data directory. No network code:
//! the server translates HTTP into calls on [`Engine`]. The full design
//! (byte layouts, commit protocol, recovery, GC) is
//! `docs/design/segment-store.md`.
//!
//! Layout under the root directory:
//!
//! ```text
//! segments/<n>.seg                 append-only segment files of blob records (`segment`)
//! segments/active                  the write lanes' active segments (`active_list`)
//! blobs/<alg>/<hex[0..2]>/<hex>    one file per large blob (> small_blob_max), named by digest
//! meta/log                         the metadata log (`metalog`)
//! uploads/sessions, <uuid>.data    open upload sessions (journal, received bytes)
//! tmp/                             files being written, removed on open
//! ```
//!
//! Invariants:
//! - Content is self-describing: a segment record carries its digest,
//!   length and crc32c, so the digest index is rebuilt from the segments on
//!   open; a torn tail of any lane's active segment is truncated, a damaged
//!   record elsewhere is isolated and reported ([`OpenReport`]), never
//!   served.
//! - Stored bytes hash to their digest: verified before anything is written.
//!   Small blobs are appended to the active segment of the calling thread's
//!   write lane (one lane per core by default, each with its own group
//!   commit: one fdatasync for all concurrent appends on the lane); large
//!   ones are fdatasynced and renamed into `blobs/` (no second copy). A blob
//!   is stored once, across lanes too.
//! - Content is durable before the metadata record naming it; a caller is
//!   answered only after its metadata record is durable (group commit); the
//!   in-memory state never runs ahead of the log.
//! - Blobs are visible only in repositories that link them.
//! - [`Engine::garbage_collect`] deletes only what no live metadata names and
//!   keeps links younger than its grace period; [`Engine::scrub`] re-reads
//!   and verifies everything.
//!
//! Blocking: write operations fsync and block the calling thread; call them
//! from a blocking pool, never from an event loop. Reads only take a
//! read lock and open (or `dup`) files.
//!
//! Disk: every file operation goes through [`io::Io`] ([`RealIo`] unless
//! [`Engine::open_with_io`] is given another), so a simulated disk can stand
//! in for the real one; upload sessions included (their journal, data files
//! and direct writes). The pull-through cache's staging file is not routed
//! yet.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod active_list;
mod commit;
pub mod digest;
mod engine;
mod error;
mod fsutil;
pub mod gc;
mod index;
mod ingest;
pub mod io;
mod lane;
pub mod manifest;
mod manifest_cache;
pub mod metalog;
#[cfg(any(test, feature = "model-check"))]
#[doc(hidden)]
pub mod model_check;
pub mod names;
pub mod scrub;
pub mod segment;
mod snapshot;
pub mod state;
mod store;
mod upload;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use engine::{BlobRead, Engine, Manifest, OpenReport, Referrer, StoredManifest};
pub use error::{EngineError, Result};
pub use gc::{GcOptions, GcReport, RepoDigest, SegmentCompaction};
pub use ingest::{EvictReport, StagingFile};
pub use io::{Io, IoFile, OpenMode, RealIo};
pub use manifest::{ManifestError, ManifestKind, ParsedManifest};
pub use names::{NameError, Reference, ReferenceError, RepositoryName, Tag, TagError};
pub use scrub::{BlobLocation, ProblemKind, RepoReference, ScrubProblem, ScrubReport};
pub use store::{DamagedRecord, EngineOptions, ACTIVE_SEGMENTS_MAX};
pub use upload::{
    upload_counters, Block, BodyWriter, Handed, UploadCounters, UploadId, UploadIdError,
    UploadLimits,
};

/// Helpers of the facade that the maintenance modules (`gc`) share.
use engine::{lock, unix_now};

#[cfg(test)]
mod tests;
