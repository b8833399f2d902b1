//! HTTP for checks that no client makes: a small request helper (ureq, no
//! redirects followed, non-2xx answers are returned, not errors) and a raw
//! TCP exchange to send arbitrary bytes (malformed requests) and read what
//! comes back.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// `Accept` value naming every manifest media type a registry may hold.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json,\
application/vnd.oci.image.manifest.v1+json,\
application/vnd.docker.distribution.manifest.list.v2+json,\
application/vnd.docker.distribution.manifest.v2+json";

/// A response: status, headers in order (names as sent), body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

fn default_agent() -> ureq::Agent {
    agent(Duration::from_secs(120))
}

/// A transport failure: no complete response. `status` is set when the
/// response head arrived but its body could not be read.
#[derive(Clone, Debug)]
pub struct TransportError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "status {s}, then: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// An agent that follows no redirects and gives up after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(timeout)
        .redirects(0)
        .build()
}

/// Sends a request; any HTTP status is `Ok`, a failed connection, reset,
/// timeout or unreadable body is `Err` (never a panic).
pub fn try_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, TransportError> {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            return Err(TransportError {
                status: None,
                message: format!("{method} {url}: {e}"),
            })
        }
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .flat_map(|name| {
            resp.all(&name)
                .into_iter()
                .map(move |v| (name.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut body = Vec::new();
    if method != "HEAD" {
        if let Err(e) = resp.into_reader().read_to_end(&mut body) {
            return Err(TransportError {
                status: Some(status),
                message: format!("{method} {url}: reading the body failed: {e}"),
            });
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Sends a request and returns whatever the server answers (any status);
/// panics with the error if no answer arrives.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_request(&default_agent(), method, url, headers, body)
        .unwrap_or_else(|e| panic!("HTTP {method} {url} failed: {e}"))
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request("GET", url, headers, None)
}

/// `HEAD url` with headers.
pub fn head(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request("HEAD", url, headers, None)
}

/// What came back over a raw connection.
#[derive(Clone, Debug)]
pub struct RawExchange {
    /// Every byte read until EOF, reset or the read timeout.
    pub bytes: Vec<u8>,
    /// True if reading stopped because the server closed the connection
    /// (EOF or reset), false if the timeout hit first.
    pub closed: bool,
    /// An error while writing the request (the server may close early).
    pub write_error: Option<String>,
}

impl RawExchange {
    /// The first response in [`Self::bytes`], if one parses.
    pub fn response(&self) -> Option<RawResponse> {
        parse_response(&self.bytes)
    }

    /// The bytes as lossy UTF-8, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Connects to `addr` (`host:port`), writes `request` as is, optionally
/// half-closes the write side, and reads until the server closes or
/// `read_timeout` passes without the connection closing.
pub fn raw_exchange(
    addr: &str,
    request: &[u8],
    half_close: bool,
    read_timeout: Duration,
) -> RawExchange {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let write_error = s.write_all(request).err().map(|e| e.to_string());
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + read_timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).expect("non-zero timeout");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    RawExchange {
        bytes,
        closed,
        write_error,
    }
}

/// One parsed HTTP/1.x response.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The body as framed by Content-Length (or everything after the head
    /// when there is none).
    pub body: Vec<u8>,
    /// Bytes after this response (a pipelined next response).
    pub rest: Vec<u8>,
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first HTTP/1.x response in `bytes` (no chunked decoding: a
/// chunked body is returned raw up to the end of the buffer).
pub fn parse_response(bytes: &[u8]) -> Option<RawResponse> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?.to_string();
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let after = &bytes[end + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let (body, rest) = match len {
        Some(n) if n <= after.len() => (after[..n].to_vec(), after[n..].to_vec()),
        _ => (after.to_vec(), Vec::new()),
    };
    Some(RawResponse {
        version,
        status,
        reason,
        headers,
        body,
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_and_keeps_the_rest() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}HTTP/1.1 200 OK\r\n\r\n")
            .expect("parses");
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body, b"{}");
        assert!(r.rest.starts_with(b"HTTP/1.1 200"));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n").is_none(),
            "incomplete head"
        );
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none(), "not HTTP");
    }
}
