//! One access-log record per answered request (or refused request head),
//! with the client address resolved through trusted proxies.

use std::net::SocketAddr;
use std::time::Duration;

use berth_http::RequestHead;

use super::client_addr::{client_address, IpNet};
use crate::logging::AccessRecord;

/// What the connection loop knows about a response once it was written.
pub struct Answered<'a> {
    /// The status sent.
    pub status: u16,
    /// The authenticated user.
    pub user: Option<&'a str>,
    /// Body bytes sent (0 for HEAD or a failed write).
    pub bytes: u64,
    /// From the complete head to the end of the response.
    pub duration: Duration,
    /// How a blob body went out ("splice", "copy", or "").
    pub body_path: &'static str,
    /// The spec error code of an error response.
    pub error: Option<&'static str>,
}

/// Logs a request that was answered.
pub fn request(peer: SocketAddr, head: &RequestHead, trusted: &[IpNet], answered: Answered<'_>) {
    let client = client_address(peer, head.headers.get("x-forwarded-for"), trusted);
    AccessRecord {
        client: &client,
        user: answered.user,
        method: head.method.as_str(),
        target: &head.target,
        status: answered.status,
        bytes: answered.bytes,
        duration: answered.duration,
        body_path: answered.body_path,
        error: answered.error,
    }
    .emit();
}

/// Logs a connection refused before a request head was read (a malformed
/// or slow head, or no descriptors to serve it).
pub fn refused(peer: SocketAddr, status: u16, error: Option<&'static str>) {
    AccessRecord {
        client: &peer.to_string(),
        user: None,
        method: "-",
        target: "-",
        status,
        bytes: 0,
        duration: Duration::ZERO,
        body_path: "",
        error,
    }
    .emit();
}
