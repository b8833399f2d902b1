//! Typed errors for head parsing and body decoding, each mapped to the HTTP
//! status the server should answer with (and then close the connection).

use thiserror::Error;

/// Why a request head was rejected. After any of these the connection's byte
/// stream can no longer be trusted: answer with [`HeadError::status`] and
/// close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    /// The head is larger than `Limits::head_bytes_max` (431), detected as
    /// soon as the buffered, still incomplete head reaches the limit.
    #[error("request head too large")]
    HeadTooLarge,
    /// More header fields than `Limits::headers_max` (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// The request-target is longer than `Limits::target_bytes_max` (414).
    #[error("request-target too long")]
    TargetTooLong,
    /// Syntactically invalid head or an invalid header value (400); the
    /// message names the problem and contains no request data.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Both `Transfer-Encoding` and `Content-Length`, or several
    /// `Content-Length` values that differ (400).
    #[error("conflicting message framing headers")]
    ConflictingFraming,
    /// A `Content-Length` value that is not a plain decimal `u64` (400).
    #[error("invalid content-length")]
    InvalidContentLength,
    /// A transfer coding other than `chunked` applied before the final
    /// `chunked` (501): we do not decode e.g. `gzip`.
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
    /// An HTTP version other than 1.0 or 1.1 (505).
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
}

impl HeadError {
    /// The HTTP status code to answer this error with: 400, 414, 431, 501 or 505.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::TargetTooLong => 414,
            HeadError::Malformed(_)
            | HeadError::ConflictingFraming
            | HeadError::InvalidContentLength => 400,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
        }
    }
}

/// Why a request body could not be decoded. All map to 400; the connection
/// must be closed afterwards because the framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyError {
    /// A chunk-size line that is not `1*HEXDIG [ext] CRLF` (empty size,
    /// non-hex digit, bare CR or bare LF).
    #[error("invalid chunk size line")]
    InvalidChunkSize,
    /// A chunk size written with more than 16 hex digits.
    #[error("chunk size too large")]
    ChunkSizeTooLarge,
    /// Chunk data not followed by exactly CRLF.
    #[error("chunk data not terminated by CRLF")]
    InvalidChunkTerminator,
    /// Chunk extensions longer than the decoder's extension budget.
    #[error("chunk extensions too large")]
    ExtensionsTooLarge,
    /// The trailer section is longer than the decoder's trailer budget.
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A trailer line containing a bare CR or bare LF.
    #[error("invalid trailer section")]
    InvalidTrailers,
}

impl BodyError {
    /// The HTTP status code to answer this error with: always 400.
    pub fn status(&self) -> u16 {
        400
    }
}
