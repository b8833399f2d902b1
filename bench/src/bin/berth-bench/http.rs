//! A minimal blocking HTTP/1.1 keep-alive client: one TCP connection, one
//! request at a time, just enough of the protocol to drive a registry
//! (Content-Length and chunked bodies, `Connection: close`, HEAD).
//! Response bodies are streamed to a sink so a 512 MiB GET needs no memory.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where requests go: `http://host:port` plus an optional Basic credential.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header.
    pub host: String,
    /// Precomputed `Authorization` header value.
    pub auth: Option<String>,
}

impl Target {
    pub fn parse(url: &str, user: Option<&str>, password: Option<&str>) -> Result<Target, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("--url must start with http:// (got {url:?}); TLS is not supported")
        })?;
        let host = rest.trim_end_matches('/').to_string();
        if host.contains('/') {
            return Err(format!("--url must be just http://host:port (got {url:?})"));
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            && !host.ends_with(']')
        {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{with_port} resolves to nothing"))?;
        let auth = user.map(|u| {
            format!(
                "Basic {}",
                base64(format!("{u}:{}", password.unwrap_or("")).as_bytes())
            )
        });
        Ok(Target { addr, host, auth })
    }
}

/// Standard base64 with padding (only for the Basic credential).
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A request body: nothing, one buffer, or several pieces sent in order
/// (a shared random payload plus a unique tail, without copying).
pub enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    Parts(&'a [&'a [u8]]),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::None => 0,
            Body::Bytes(b) => b.len(),
            Body::Parts(p) => p.iter().map(|b| b.len()).sum(),
        }
    }
}

/// What to do with a response body.
pub enum Sink<'a> {
    /// Keep it (up to a limit; the rest is counted and dropped).
    Keep,
    /// Pass each piece to a closure (hashing, counting).
    Stream(&'a mut dyn FnMut(&[u8])),
}

/// Bodies kept in memory are cut here; longer ones are read and dropped.
const KEEP_LIMIT: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body when the sink was `Keep` (cut at 1 MiB).
    pub body: Vec<u8>,
    /// Body bytes received, whatever the sink.
    pub body_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A short description for error reports: status, headers and the start of the body.
    pub fn describe(&self) -> String {
        let mut s = format!("HTTP {}\n", self.status);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        if !self.body.is_empty() {
            let end = self.body.len().min(600);
            s.push('\n');
            s.push_str(&String::from_utf8_lossy(&self.body[..end]));
        }
        s
    }
}

/// One keep-alive connection; it reconnects by itself after the server
/// closes it.
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed / filled.
    start: usize,
    end: usize,
    /// Times a new TCP connection was made (1 for a pure keep-alive run).
    pub connects: u64,
    head: Vec<u8>,
}

impl Conn {
    pub fn new(target: &Target) -> Conn {
        Conn {
            target: target.clone(),
            stream: None,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            connects: 0,
            head: Vec::with_capacity(1024),
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_write_timeout(Some(Duration::from_secs(120)))?;
        self.stream = Some(s);
        self.start = 0;
        self.end = 0;
        self.connects += 1;
        Ok(())
    }

    /// Sends one request and reads its response. `extra` headers are
    /// `(name, value)`; Host, Content-Length and Authorization are added
    /// here. A request on a reused connection that fails before any
    /// response byte arrives is retried once on a fresh connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
        sink: Sink<'_>,
    ) -> io::Result<Response> {
        let mut sink = sink;
        let reused = self.stream.is_some();
        match self.try_request(method, path, extra, &body, &mut sink) {
            Err((e, false)) if reused => {
                let _ = e;
                self.stream = None;
                self.try_request(method, path, extra, &body, &mut sink)
                    .map_err(|(e, _)| e)
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    /// Err's bool: whether any response byte had been received.
    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &Body<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Response, (io::Error, bool)> {
        if self.stream.is_none() {
            self.connect().map_err(|e| (e, false))?;
        }
        self.head.clear();
        let h = &mut self.head;
        h.extend_from_slice(method.as_bytes());
        h.push(b' ');
        h.extend_from_slice(path.as_bytes());
        h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        h.extend_from_slice(self.target.host.as_bytes());
        h.extend_from_slice(b"\r\nUser-Agent: berth-bench/0.1\r\n");
        if let Some(a) = &self.target.auth {
            h.extend_from_slice(b"Authorization: ");
            h.extend_from_slice(a.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        for (n, v) in extra {
            h.extend_from_slice(n.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(v.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        let body_len = body.len();
        if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
            h.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        // Small bodies go in the same write as the head.
        let inline = body_len <= 64 * 1024;
        if inline {
            match body {
                Body::Bytes(b) => h.extend_from_slice(b),
                Body::Parts(parts) => parts.iter().for_each(|p| h.extend_from_slice(p)),
                Body::None => {}
            }
        }
        let stream = self.stream.as_mut().expect("connected");
        let sent = (|| -> io::Result<()> {
            stream.write_all(&self.head)?;
            match body {
                _ if inline => {}
                Body::Bytes(b) => stream.write_all(b)?,
                Body::Parts(parts) => {
                    for p in parts.iter() {
                        stream.write_all(p)?;
                    }
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = sent {
            // The server may have answered early (e.g. 401/413) and closed:
            // read that answer if there is one.
            return match self.read_response(method, sink) {
                Ok(r) => Ok(r),
                Err(_) => {
                    self.stream = None;
                    Err((e, false))
                }
            };
        }
        self.read_response(method, sink)
    }

    /// Fills more bytes into `buf` (compacting first). Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        let n = stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    fn read_response(
        &mut self,
        method: &str,
        sink: &mut Sink<'_>,
    ) -> Result<Response, (io::Error, bool)> {
        let result = self.read_response_inner(method, sink);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn read_response_inner(
        &mut self,
        method: &str,
        sink: &mut Sink<'_>,
    ) -> Result<Response, (io::Error, bool)> {
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break self.start + i + 4;
            }
            let got_any = self.end > self.start;
            match self.fill() {
                Ok(0) => {
                    return Err((
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before a response",
                        ),
                        got_any,
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err((e, got_any)),
            }
        };
        let bad = |m: &str| {
            (
                io::Error::new(io::ErrorKind::InvalidData, m.to_string()),
                true,
            )
        };
        let text = std::str::from_utf8(&self.buf[self.start..head_end - 4])
            .map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut response = Response {
            status,
            ..Default::default()
        };
        for line in lines {
            if let Some((n, v)) = line.split_once(':') {
                response
                    .headers
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        self.start = head_end;
        let close = match response.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => true,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => false,
            _ => version == "HTTP/1.0",
        };
        let no_body =
            method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length: Option<u64> = response
            .header("content-length")
            .and_then(|v| v.parse().ok());
        if no_body {
        } else if chunked {
            self.read_chunked(&mut response, sink)?;
        } else if let Some(len) = length {
            self.read_exact_body(len, &mut response, sink)?;
        } else {
            self.read_exact_body(u64::MAX, &mut response, sink)?;
            self.stream = None;
        }
        if close {
            self.stream = None;
        }
        Ok(response)
    }

    fn deliver(response: &mut Response, sink: &mut Sink<'_>, data: &[u8]) {
        response.body_len += data.len() as u64;
        match sink {
            Sink::Keep => {
                let room = KEEP_LIMIT.saturating_sub(response.body.len());
                response
                    .body
                    .extend_from_slice(&data[..data.len().min(room)]);
            }
            Sink::Stream(f) => f(data),
        }
    }

    /// Reads `len` body bytes (or until EOF when `len` is u64::MAX).
    fn read_exact_body(
        &mut self,
        len: u64,
        response: &mut Response,
        sink: &mut Sink<'_>,
    ) -> Result<(), (io::Error, bool)> {
        let mut left = len;
        while left > 0 {
            if self.start == self.end {
                match self.fill() {
                    Ok(0) if len == u64::MAX => return Ok(()),
                    Ok(0) => {
                        return Err((
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("body cut short: {left} of {len} bytes missing"),
                            ),
                            true,
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err((e, true)),
                }
            }
            let n = ((self.end - self.start) as u64).min(left) as usize;
            let (s, e) = (self.start, self.start + n);
            Self::deliver(response, sink, &self.buf[s..e]);
            self.start = e;
            left -= n as u64;
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<String, (io::Error, bool)> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            match self.fill() {
                Ok(0) => {
                    return Err((
                        io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"),
                        true,
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err((e, true)),
            }
        }
    }

    fn read_chunked(
        &mut self,
        response: &mut Response,
        sink: &mut Sink<'_>,
    ) -> Result<(), (io::Error, bool)> {
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| {
                (
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    ),
                    true,
                )
            })?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, response, sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err((
                    io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"),
                    true,
                ));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The path (and query) of a Location header, which may be absolute.
pub fn location_path(location: &str) -> String {
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        }
    } else {
        location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn location_path_strips_scheme_and_authority() {
        assert_eq!(
            location_path("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"),
            "/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(
            location_path("/v2/a/blobs/uploads/x"),
            "/v2/a/blobs/uploads/x"
        );
    }

    #[test]
    fn reads_length_chunked_head_and_close_responses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let replies: [&[u8]; 4] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
            ];
            for reply in replies {
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply).unwrap();
            }
        });
        let target = Target::parse(&format!("http://{addr}"), Some("u"), Some("p")).unwrap();
        let mut c = Conn::new(&target);
        let r = c.request("GET", "/a", &[], Body::None, Sink::Keep).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        let r = c.request("GET", "/b", &[], Body::None, Sink::Keep).unwrap();
        assert_eq!(&r.body[..], b"abcde");
        let r = c
            .request("HEAD", "/c", &[], Body::None, Sink::Keep)
            .unwrap();
        assert_eq!(
            (r.status, r.body_len, r.header("content-length")),
            (200, 0, Some("99"))
        );
        let r = c.request("GET", "/d", &[], Body::None, Sink::Keep).unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"no"[..]));
        assert_eq!(c.connects, 1);
        server.join().unwrap();
    }
}
