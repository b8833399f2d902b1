//! Request head parsing: request line, header block, and the semantics the
//! server needs from them (framing, persistence, `Expect`).

use crate::error::HeadError;
use crate::framing::{self, BodyFraming};
use crate::headers::Headers;
use crate::limits::Limits;
use crate::list;
use crate::method::{Method, Version};

/// A parsed request head; owns its data (headers copied out of the buffer).
///
/// A value of this type has passed every check of [`parse_request_head`]:
/// its framing is unambiguous and its target is within the configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The raw request-target as sent, e.g.
    /// `/v2/foo/blobs/uploads/?digest=sha256:...` (not percent-decoded).
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// All header fields in wire order.
    pub headers: Headers,
    /// How the body is delimited, derived per RFC 9112 §6.3.
    pub framing: BodyFraming,
    /// Whether the connection may be reused after this request: for HTTP/1.1
    /// unless `Connection: close`; for HTTP/1.0 only with
    /// `Connection: keep-alive` and without `close`.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue` on an HTTP/1.1 request
    /// (RFC 9110 §10.1.1 requires ignoring it on HTTP/1.0).
    pub expect_continue: bool,
}

impl RequestHead {
    /// The path component of the target, without query or fragment and not
    /// percent-decoded. For an absolute-form target (`http://h/p?q`) this is
    /// the path after the authority (`/` if empty); for the asterisk-form it
    /// is `*`; for an authority-form target (CONNECT) it is empty.
    pub fn path(&self) -> &str {
        let (path, _) = self.split_target();
        path
    }

    /// The query component of the target (after the first `?`, before any
    /// `#`), if there is a `?`. Not percent-decoded.
    pub fn query(&self) -> Option<&str> {
        let (_, query) = self.split_target();
        query
    }

    fn split_target(&self) -> (&str, Option<&str>) {
        let t = self.target.split('#').next().unwrap_or("");
        let (rest, absolute) = if t.starts_with('/') || t == "*" {
            (t, false)
        } else if let Some(i) = t.find("://") {
            let after = t.get(i + 3..).unwrap_or("");
            match after.find(['/', '?']) {
                Some(j) => (after.get(j..).unwrap_or(""), true),
                None => ("", true),
            }
        } else {
            return ("", None);
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if absolute && path.is_empty() {
            ("/", query)
        } else {
            (path, query)
        }
    }
}

/// Parses one request head from the start of `buf`.
///
/// * `Ok(None)`: the head is incomplete; read more bytes and call again with
///   the whole buffer. Guarantees `buf.len() < limits.head_bytes_max` and
///   that the request-target seen so far is within `target_bytes_max`.
/// * `Ok(Some((head, consumed)))`: `buf[..consumed]` is exactly one complete
///   head (leading empty lines included, the final CRLF CRLF included);
///   the body or the next pipelined request starts at `buf[consumed]`.
///   `consumed <= limits.head_bytes_max`.
/// * `Err(e)`: the request must be answered with `e.status()` and the
///   connection closed.
///
/// Never panics, whatever `buf` holds.
pub fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.headers_max];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(buf).map_err(map_httparse_error)? {
        httparse::Status::Partial => {
            let target_len = match req.path {
                Some(p) => p.len(),
                None => partial_target_len(buf),
            };
            if target_len > limits.target_bytes_max {
                return Err(HeadError::TargetTooLong);
            }
            if buf.len() >= limits.head_bytes_max {
                return Err(HeadError::HeadTooLarge);
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if consumed > limits.head_bytes_max {
        return Err(HeadError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if target.len() > limits.target_bytes_max {
        return Err(HeadError::TargetTooLong);
    }
    if has_bare_lf(buf.get(..consumed).unwrap_or(&[])) {
        return Err(HeadError::Malformed("bare LF in request head"));
    }
    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    let mut headers = Headers::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        headers.push(h.name, h.value);
    }
    check_host(&headers, version)?;
    let framing = framing::derive(&headers, version)?;
    let close = list::has_token(headers.get_all("connection"), "close");
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => !close && list::has_token(headers.get_all("connection"), "keep-alive"),
    };
    let expect_continue =
        version == Version::Http11 && list::has_token(headers.get_all("expect"), "100-continue");
    let head = RequestHead {
        method: Method::from_token(method),
        target: target.to_owned(),
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, consumed)))
}

fn map_httparse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::Token => HeadError::Malformed("invalid request line"),
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => HeadError::UnsupportedVersion,
    }
}

/// Length of the request-target seen so far in an incomplete request line
/// (0 if the method is not finished yet). Mirrors httparse's skipping of
/// leading empty lines.
fn partial_target_len(buf: &[u8]) -> usize {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf.get(start..).unwrap_or(&[]);
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let after = line.get(sp + 1..).unwrap_or(&[]);
    after
        .iter()
        .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(after.len())
}

/// Whether some LF in `head` is not preceded by CR.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head.get(i - 1) != Some(&b'\r')))
}

/// RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0.
fn check_host(headers: &Headers, version: Version) -> Result<(), HeadError> {
    match (headers.get_all("host").count(), version) {
        (0, Version::Http11) => Err(HeadError::Malformed("missing Host header")),
        (0 | 1, _) => Ok(()),
        _ => Err(HeadError::Malformed("multiple Host headers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str) -> RequestHead {
        RequestHead {
            method: Method::Get,
            target: target.to_owned(),
            version: Version::Http11,
            headers: Headers::new(),
            framing: BodyFraming::None,
            keep_alive: true,
            expect_continue: false,
        }
    }

    #[test]
    fn path_and_query() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("/v2/", "/v2/", None),
            (
                "/v2/foo/blobs/uploads/?digest=sha256:ab",
                "/v2/foo/blobs/uploads/",
                Some("digest=sha256:ab"),
            ),
            ("/a?", "/a", Some("")),
            ("/a?b?c", "/a", Some("b?c")),
            ("/a#frag", "/a", None),
            ("/a?q#frag", "/a", Some("q")),
            ("*", "*", None),
            ("http://h", "/", None),
            ("http://h?x", "/", Some("x")),
            ("http://h:80/p/q?x=1", "/p/q", Some("x=1")),
            ("example.com:443", "", None),
        ];
        for (t, p, q) in cases {
            let h = head(t);
            assert_eq!(h.path(), *p, "{t}");
            assert_eq!(h.query(), *q, "{t}");
        }
    }

    #[test]
    fn bare_lf_detection() {
        assert!(!has_bare_lf(b"a\r\nb\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"a\r\nb\n"));
        assert!(has_bare_lf(b"a\r\n\n"));
    }

    #[test]
    fn partial_target() {
        assert_eq!(partial_target_len(b"GE"), 0);
        assert_eq!(partial_target_len(b"GET /abc"), 4);
        assert_eq!(partial_target_len(b"\r\n\r\nGET /abc HTTP"), 4);
    }
}
