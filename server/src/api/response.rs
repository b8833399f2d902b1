//! What a handler answers: status, headers and a body description. The
//! connection layer turns it into bytes.

use berth_engine::BlobRead;

use super::error::ApiError;

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
    /// A blob still arriving from a pull-through cache's upstream, sent as
    /// its bytes land.
    Growing(crate::proxy::fetch::GrowingBlob),
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
            Body::Growing(g) => g.len,
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
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers other than Content-Length (added from the body).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// The authenticated user, for the access log.
    pub user: Option<String>,
    /// Keeps a pull-through cache from evicting the blob while it is sent.
    pub pin: Option<crate::proxy::cache::PullPin>,
    /// The spec error code of an error response, for the access log.
    pub error: Option<&'static str>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            user: None,
            pin: None,
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

    /// A JSON body with Content-Type application/json.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(Body::Bytes(serde_json::to_vec(value).unwrap_or_default()))
    }

    /// The OCI error envelope for `error`.
    pub fn error(error: &ApiError) -> Response {
        let mut response = Response::new(error.status())
            .header("Content-Type", "application/json")
            .body(Body::Bytes(error.body()));
        response.error = Some(error.code.as_str());
        response
    }
}
