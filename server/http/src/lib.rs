//! Sans-io HTTP/1.1 request codec for berth.
//!
//! This crate turns bytes into parsed values and back, and nothing else: it
//! never touches a socket, a file or a clock. The server owns all I/O and
//! calls in here with whatever bytes it has read so far (the same design as
//! hyper's `proto::h1` and rustls).
//!
//! * [`parse_request_head`] parses a request line and header block (via
//!   `httparse`) and derives the body framing per RFC 9112 §6.3, rejecting
//!   every ambiguous framing instead of guessing (request smuggling defence).
//! * [`BodyDecoder`] streams a `Content-Length` or `chunked` body, handing out
//!   payload as zero-copy sub-slices of the input.
//! * [`ResponseHead`] encodes a status line and header block.
//! * [`percent_decode`] and [`percent_decode_form`] decode paths and query
//!   values.
//!
//! # Decisions
//!
//! * **Bare LF** is rejected everywhere (400): in the request head
//!   ([`HeadError::Malformed`]) and in chunked framing
//!   ([`BodyError::InvalidChunkSize`], [`BodyError::InvalidChunkTerminator`],
//!   [`BodyError::InvalidTrailers`]). RFC 9112 §2.2 only *allows* a recipient
//!   to accept it; accepting it is a classic source of front-end/back-end
//!   disagreement, and every real registry client sends CRLF.
//! * **Transfer-Encoding** (requests): a final coding other than `chunked`
//!   is a 400 ([`HeadError::Malformed`]), as RFC 9112 §6.3 rule 4 requires,
//!   and so is `chunked` applied twice; `chunked` preceded by any other coding
//!   (e.g. `gzip, chunked`) is a 501 ([`HeadError::UnsupportedTransferEncoding`])
//!   because we do not decode content codings (RFC 9112 §6.1). Any
//!   Transfer-Encoding in an HTTP/1.0 request is a 400.
//! * Both `Transfer-Encoding` and `Content-Length` present is always
//!   [`HeadError::ConflictingFraming`] (400); we never pick one.
//! * An HTTP/1.1 request must carry exactly one `Host` header, and any request
//!   at most one (RFC 9112 §3.2), else 400.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod challenge;
mod content_range;
mod error;
mod framing;
mod head;
mod headers;
mod limits;
mod list;
mod method;
mod percent;
mod range;
mod response;

pub use body::{
    BodyDecoder, Decoded, CHUNK_SIZE_DIGITS_MAX, EXTENSIONS_BYTES_MAX, TRAILERS_BYTES_MAX,
};
pub use challenge::{parse_challenge, Challenge};
pub use content_range::{parse_content_range, ContentRangeError};
pub use error::{BodyError, HeadError};
pub use framing::BodyFraming;
pub use head::{parse_request_head, RequestHead};
pub use headers::Headers;
pub use limits::Limits;
pub use method::{Method, Version};
pub use percent::{percent_decode, percent_decode_form};
pub use range::{parse_range, RangeRequest};
pub use response::{reason_phrase, ResponseHead};
