//! What a handler answers: status, headers and a body description. The
//! connection layer turns it into bytes.

use std::any::Any;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;

use berth_engine::BlobRead;

/// A body whose bytes land in a file while it is being sent (a blob a
/// pull-through cache is still fetching). The sender waits for each
/// stretch and sends it from the file.
pub trait StreamingSource: std::fmt::Debug {
    /// Bytes the body has in all (its Content-Length).
    fn len(&self) -> u64;

    /// Whether the body is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until bytes past `sent` (counted from the body's start) may be
    /// sent and answers how many in all may be now (more than `sent`), or
    /// the error that ended the body early.
    fn sendable_after(&self, sent: u64) -> Pin<Box<dyn Future<Output = io::Result<u64>> + '_>>;

    /// A reader of the file the bytes land in, and the file offset of the
    /// body's first byte.
    fn file(&self) -> io::Result<(File, u64)>;
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// No body; Content-Length 0.
    Empty,
    /// No body bytes, but Content-Length advertises this length (HEAD).
    Sized(u64),
    /// These bytes.
    Bytes(Vec<u8>),
    /// These bytes, shared with a cache (a manifest).
    Shared(std::sync::Arc<[u8]>),
    /// A range of a file (a stored blob).
    Blob(BlobRead),
    /// Bytes still arriving, sent as they land.
    Streaming(Box<dyn StreamingSource>),
}

impl Body {
    /// The Content-Length to send.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Sized(n) => *n,
            Body::Bytes(b) => b.len() as u64,
            Body::Shared(b) => b.len() as u64,
            Body::Blob(b) => b.len,
            Body::Streaming(s) => s.len(),
        }
    }

    /// The bytes of a body held in memory (`Bytes` or `Shared`).
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Body::Bytes(b) => Some(b),
            Body::Shared(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A handler's answer.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers other than Content-Length (added from the body).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// The authenticated user, for the access log.
    pub user: Option<String>,
    /// Values kept alive until the response has been sent, then dropped
    /// (e.g. a pull-through cache's pin that keeps the blob from eviction).
    pub held: Vec<Box<dyn Any>>,
    /// The spec error code of an error response, for the access log.
    pub error: Option<&'static str>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("user", &self.user)
            .field("held", &self.held.len())
            .field("error", &self.error)
            .finish()
    }
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            user: None,
            held: Vec::new(),
            error: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// Keeps `value` alive until the response has been sent.
    pub fn hold(mut self, value: impl Any) -> Response {
        self.held.push(Box::new(value));
        self
    }

    /// A JSON body with Content-Type application/json.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(Body::Bytes(serde_json::to_vec(value).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    struct Flag(Rc<Cell<bool>>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[test]
    fn a_held_value_lives_as_long_as_the_response() {
        let dropped = Rc::new(Cell::new(false));
        let response = Response::new(200).hold(Flag(dropped.clone()));
        assert!(!dropped.get());
        drop(response);
        assert!(dropped.get());
    }
}
