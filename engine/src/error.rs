//! The engine's error type. Each variant names one thing a caller can act
//! on; the HTTP layer maps them to OCI error codes.

use crate::digest::Digest;
use crate::manifest::ManifestError;

/// Everything an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The repository has never been pushed to (or everything in it was deleted).
    #[error("repository unknown")]
    NameUnknown,
    /// The blob is not linked into the repository.
    #[error("blob unknown to repository: {0}")]
    BlobUnknown(Digest),
    /// No manifest with this tag or digest in the repository.
    #[error("manifest unknown")]
    ManifestUnknown,
    /// No upload session with this id in the repository.
    #[error("upload session unknown")]
    UploadUnknown,
    /// Another request is writing to the upload session right now.
    #[error("another request is writing to this upload session")]
    UploadBusy,
    /// Starting an upload session would pass a cap on open sessions
    /// (`UploadLimits`): nothing was created.
    #[error("too many open upload sessions{}: at most {max}", if *.per_client { " for this client" } else { "" })]
    TooManyUploads {
        /// The cap that was reached.
        max: usize,
        /// Whether it is the per-client cap (else the store-wide one).
        per_client: bool,
    },
    /// A chunk did not start where the upload currently ends.
    #[error("chunk starts at {got}, upload has {expected} bytes")]
    RangeMismatch {
        /// Bytes the upload holds; the next chunk must start here.
        expected: u64,
        /// Where the rejected chunk claimed to start.
        got: u64,
    },
    /// The uploaded bytes do not hash to the digest the client named.
    #[error("content digest {actual} does not match {expected}")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The manifest body is not an acceptable manifest.
    #[error(transparent)]
    ManifestInvalid(#[from] ManifestError),
    /// The manifest references a blob or child manifest the repository lacks.
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    /// Stored data failed a consistency check (bad checksum, missing file).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// An earlier write failure left the metadata log in an unknown state;
    /// the engine refuses further writes until it is reopened.
    #[error("an earlier write failed; restart the server to recover the store")]
    PreviousIo,
    /// Another process (a running server, a GC) has the data directory open.
    #[error("the data directory {} is in use by another berth process", .0.display())]
    Locked(std::path::PathBuf),
    /// The operating system refused an I/O operation (disk full, permissions, ...).
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for engine results.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
