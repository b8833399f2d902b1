//! The request/response exchange between the connection loop and whatever
//! answers requests: what a handler is given ([`Request`], a streaming
//! [`RequestBody`]) and what it gives back ([`Response`] with a [`Body`]).
//! Below both the connection layer (`crate::conn`) and the API layer
//! (`crate::api`), so neither imports the other: the loop serves any
//! [`Handler`].

mod body;
mod response;

use std::net::SocketAddr;

use berth_http::RequestHead;

pub use body::{BodyLimits, BodyReadError, ReadBuf, RequestBody, BODY_READ_BYTES, IDLE_READ_BYTES};
pub use response::{Body, Response, StreamingSource};

/// A request as handlers see it: the parsed head plus the decoded path.
pub struct Request<'h> {
    /// The parsed head.
    pub head: &'h RequestHead,
    /// The percent-decoded path.
    pub path: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the request arrived over TLS (the default scheme for URLs).
    pub tls: bool,
}

/// A request the connection layer answers itself, without a handler. The
/// handler still words the answer (its error format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request head could not be accepted: malformed, too large, too
    /// slow (`status` is 400, 408, 413, 414, 431 or 501).
    BadHead {
        /// The status to send.
        status: u16,
        /// What was wrong, for humans.
        message: String,
    },
    /// The path has a malformed `%`-escape (400).
    BadPath,
    /// The server cannot take the request now (503): it is out of file
    /// descriptors, or close enough to the limit to keep the rest for the
    /// store.
    Unavailable(String),
}

/// Answers requests for the connection loop. The API layer implements it;
/// tests can serve anything else.
pub trait Handler {
    /// Answers one request, reading as much of `body` as it needs. Never
    /// panics on client input; a failure is an error response.
    #[allow(async_fn_in_trait)] // served on one single-threaded event loop: no `Send` bound wanted
    async fn handle(&self, request: &Request<'_>, body: &mut RequestBody<'_>) -> Response;

    /// The response for a request the connection layer refuses itself.
    fn refusal(&self, refusal: Refusal) -> Response;
}
