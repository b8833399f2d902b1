//! Response head encoding.

use std::fmt::Write as _;

/// The standard reason phrase for `status` (RFC 9110 §15, plus 429/431 from
/// RFC 6585), or `""` for codes without one (an empty reason phrase is valid
/// HTTP/1.1).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response status line plus header fields, ready to encode.
///
/// Encoding never emits a byte that could end a line early: header values
/// with CR, LF or other control characters (HTAB excepted) have those bytes
/// replaced by a space, so untrusted data in a value cannot split the
/// response. No header is added implicitly: the caller writes
/// `Content-Length` (or whatever framing it uses) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code; values outside `100..=999` are encoded as 500.
    pub status: u16,
    /// Header fields in the order they will be written. Names must be valid
    /// field-name tokens (they are program constants).
    pub headers: Vec<(&'static str, String)>,
}

impl ResponseHead {
    /// A response head with `status` and no headers.
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            headers: Vec::new(),
        }
    }

    /// Appends a header field (duplicates allowed) and returns `self`.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends `"HTTP/1.1 {status} {reason}\r\n"`, each header as
    /// `"{name}: {value}\r\n"`, then `"\r\n"` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        let mut line = String::with_capacity(48);
        // Writing to a String cannot fail.
        let _ = write!(line, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        out.extend_from_slice(line.as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend(value.bytes().map(|b| {
                if (b < 0x20 && b != b'\t') || b == 0x7f {
                    b' '
                } else {
                    b
                }
            }));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_and_blank_line() {
        let mut out = Vec::new();
        ResponseHead::new(202)
            .header("Location", "/v2/foo/blobs/uploads/abc")
            .header("Content-Length", "0")
            .encode(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 202 Accepted\r\nLocation: /v2/foo/blobs/uploads/abc\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn continue_and_unknown_status() {
        let mut out = Vec::new();
        ResponseHead::new(100).encode(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        out.clear();
        ResponseHead::new(599).encode(&mut out);
        assert_eq!(out, b"HTTP/1.1 599 \r\n\r\n");
        out.clear();
        ResponseHead::new(42).encode(&mut out);
        assert_eq!(out, b"HTTP/1.1 500 Internal Server Error\r\n\r\n");
    }

    #[test]
    fn header_injection_neutralised() {
        let mut out = Vec::new();
        ResponseHead::new(200)
            .header("X-A", "a\r\nSet-Cookie: evil\0")
            .encode(&mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nX-A: a  Set-Cookie: evil \r\n\r\n");
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(416), "Range Not Satisfiable");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(299), "");
    }
}
