//! A minimal blocking HTTP/1.1 keep-alive client: one TCP connection (plain
//! or TLS through rustls), one request at a time, just enough of the
//! protocol to drive a registry (Content-Length and chunked bodies,
//! `Connection: close`, HEAD), with Basic credentials and the Docker
//! bearer-token challenge flow (parsing in `auth.rs`). Response bodies are
//! streamed to a sink so a 512 MiB GET needs no memory.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::auth::{self, Scopes};

/// How to reach and authenticate to a registry: everything but the URL.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub user: Option<String>,
    pub password: Option<String>,
    /// A bearer token sent as is (no challenge flow).
    pub token: Option<String>,
    /// PEM file of the CA certificates to trust for https:// (default: the
    /// system bundle).
    pub cacert: Option<PathBuf>,
    /// Do not verify the server's certificate at all.
    pub insecure: bool,
}

/// Where requests go: `http(s)://host:port`, with TLS and credentials.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header.
    pub host: String,
    /// For https://: the client configuration and the name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub auth: Arc<AuthState>,
}

/// Splits `scheme://authority/path` into (https?, authority, path).
pub fn split_url(url: &str) -> Result<(bool, &str, &str), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!(
            "a URL must start with http:// or https:// (got {url:?})"
        ));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    Ok((https, authority, path))
}

impl Target {
    /// A registry at `url` (`http(s)://host[:port]`, nothing after it).
    pub fn parse(url: &str, options: &Options) -> Result<Target, String> {
        let (https, authority, path) = split_url(url)?;
        if !path.trim_end_matches('/').is_empty() {
            return Err(format!(
                "--url must be just http(s)://host:port (got {url:?})"
            ));
        }
        let auth = Arc::new(AuthState::new(options));
        Target::connect_to(https, authority, options, auth)
    }

    fn connect_to(
        https: bool,
        authority: &str,
        options: &Options,
        auth: Arc<AuthState>,
    ) -> Result<Target, String> {
        let host = authority.to_string();
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && !host.ends_with(']');
        let with_port = if has_port {
            host.clone()
        } else {
            format!("{host}:{}", if https { 443 } else { 80 })
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{with_port} resolves to nothing"))?;
        let tls = if https {
            let name = with_port
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(&with_port);
            let server_name = ServerName::try_from(name.to_string())
                .map_err(|e| format!("bad TLS server name {name:?}: {e}"))?;
            Some((tls_config(options)?, server_name))
        } else {
            None
        };
        Ok(Target {
            addr,
            host,
            tls,
            auth,
        })
    }
}

/// The rustls client configuration (ring provider, TLS 1.2 and 1.3).
fn tls_config(options: &Options) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let path = options
            .cacert
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "no usable CA certificate in {} (use --cacert FILE or --insecure)",
                path.display()
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate is accepted; handshake signatures are
/// still checked (so the cost measured is that of a real handshake).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Credentials and the bearer-token cache, shared by every connection.
#[derive(Debug)]
pub struct AuthState {
    options: Options,
    /// `Basic ...`, precomputed.
    basic: Option<String>,
    /// `Bearer ...` from --token: sent as is, no challenge flow.
    fixed: Option<String>,
    cache: Mutex<TokenCache>,
    /// Tokens fetched from a realm over the run.
    pub fetches: AtomicU64,
}

#[derive(Debug, Default)]
struct TokenCache {
    /// Bumped on every new token; connections keep a copy and its number.
    generation: u64,
    header: Option<String>,
    scopes: Scopes,
}

impl AuthState {
    pub fn new(options: &Options) -> AuthState {
        let basic = options.user.as_ref().map(|u| {
            format!(
                "Basic {}",
                auth::base64(
                    format!("{u}:{}", options.password.as_deref().unwrap_or("")).as_bytes()
                )
            )
        });
        AuthState {
            options: options.clone(),
            basic,
            fixed: options.token.as_ref().map(|t| format!("Bearer {t}")),
            cache: Mutex::new(TokenCache::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// A token covering the challenge's scopes (and every scope asked for
    /// before): the cached one if another connection already fetched it
    /// since `seen` (the generation this connection holds), else a new one
    /// from the realm. Fetches are serialised, so N connections hitting the
    /// same 401 at once cost one fetch.
    fn bearer_for(
        &self,
        seen: u64,
        challenge: &berth_http::Challenge,
    ) -> Result<(u64, String), String> {
        let berth_http::Challenge::Bearer {
            realm,
            service,
            scope,
        } = challenge
        else {
            return Err("not a Bearer challenge".into());
        };
        let wanted = Scopes::parse(scope.as_deref().unwrap_or(""));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.generation > seen && cache.scopes.covers(&wanted) {
            if let Some(h) = &cache.header {
                return Ok((cache.generation, h.clone()));
            }
        }
        let mut scopes = cache.scopes.clone();
        scopes.merge(&wanted);
        let token = self.fetch(realm, service.as_deref(), &scopes)?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        cache.generation += 1;
        cache.header = Some(format!("Bearer {token}"));
        cache.scopes = scopes;
        Ok((cache.generation, cache.header.clone().expect("set")))
    }

    /// GET realm?service=..&scope=.. (with the Basic credential if any).
    fn fetch(&self, realm: &str, service: Option<&str>, scopes: &Scopes) -> Result<String, String> {
        let (https, authority, path) = split_url(realm)?;
        let realm_auth = Arc::new(AuthState::new(&Options {
            token: None,
            ..self.options.clone()
        }));
        let target = Target::connect_to(https, authority, &self.options, realm_auth)?;
        let query = auth::token_query(service, scopes);
        let path = if path.is_empty() { "/" } else { path };
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!("{path}{sep}{query}");
        let mut conn = Conn::new(&target);
        conn.challenge_flow = false;
        let r = conn
            .request("GET", &full, &[], Body::None, Sink::Keep)
            .map_err(|e| format!("token request GET {realm}{sep}{query}: {e}"))?;
        if r.status != 200 {
            return Err(format!(
                "token request GET {realm}{sep}{query} answered {}",
                r.describe()
            ));
        }
        auth::parse_token_response(&r.body)
    }
}

/// A TCP connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A peer closing without close_notify is an EOF like any other
            // here: bodies are length-checked by the caller.
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
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
    stream: Option<Stream>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed / filled.
    start: usize,
    end: usize,
    /// Times a new TCP connection was made (1 for a pure keep-alive run).
    pub connects: u64,
    head: Vec<u8>,
    /// This connection's copy of the shared bearer token, and its generation.
    bearer: Option<(u64, String)>,
    /// Answer a 401 Bearer challenge by fetching a token and retrying
    /// (off for the token request itself).
    challenge_flow: bool,
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
            bearer: None,
            challenge_flow: true,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let s = TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_write_timeout(Some(Duration::from_secs(120)))?;
        self.stream = Some(match &self.target.tls {
            None => Stream::Plain(s),
            Some((config, name)) => {
                let c = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(c, s)))
            }
        });
        self.start = 0;
        self.end = 0;
        self.connects += 1;
        Ok(())
    }

    /// Sends one request and reads its response. `extra` headers are
    /// `(name, value)`; Host, Content-Length and Authorization are added
    /// here. A request on a reused connection that fails before any
    /// response byte arrives is retried once on a fresh connection. A 401
    /// with a Bearer challenge is answered once: a token is fetched from
    /// the realm (or taken from the shared cache) and the request resent.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
        sink: Sink<'_>,
    ) -> io::Result<Response> {
        let mut sink = sink;
        let r = self.request_once(method, path, extra, &body, &mut sink)?;
        if r.status != 401 || !self.answers_challenges() {
            return Ok(r);
        }
        let Some(challenge) = r
            .header("www-authenticate")
            .and_then(berth_http::parse_challenge)
            .filter(|c| matches!(c, berth_http::Challenge::Bearer { .. }))
        else {
            return Ok(r);
        };
        let seen = self.bearer.as_ref().map_or(0, |(g, _)| *g);
        let (generation, header) = self
            .target
            .auth
            .bearer_for(seen, &challenge)
            .map_err(|e| io::Error::other(format!("getting a bearer token: {e}")))?;
        self.bearer = Some((generation, header));
        self.request_once(method, path, extra, &body, &mut sink)
    }

    fn answers_challenges(&self) -> bool {
        self.challenge_flow && self.target.auth.fixed.is_none()
    }

    fn request_once(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &Body<'_>,
        sink: &mut Sink<'_>,
    ) -> io::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, extra, body, sink) {
            Err((e, false)) if reused => {
                let _ = e;
                self.stream = None;
                self.try_request(method, path, extra, body, sink)
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
        let auth = self.bearer.as_ref().map(|(_, h)| h).or(self
            .target
            .auth
            .fixed
            .as_ref()
            .or(self.target.auth.basic.as_ref()));
        if let Some(a) = auth {
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
            stream.flush()
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
        // A 401 that will be answered with a token and resent must not feed
        // the caller's sink (a hash over the body, say).
        let mut keep = Sink::Keep;
        let sink = if status == 401 && self.answers_challenges() {
            &mut keep
        } else {
            sink
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
        let target = Target::parse(
            &format!("http://{addr}"),
            &Options {
                user: Some("u".into()),
                password: Some("p".into()),
                ..Options::default()
            },
        )
        .unwrap();
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

    /// Reads one request head from `s`; returns it as text.
    fn read_head(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while find(&got, b"\r\n\r\n").is_none() {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn bearer_challenge_fetches_a_token_once_and_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut registry, _) = listener.accept().unwrap();
            // 1: no token yet -> challenge (the body must not reach the sink).
            let head = read_head(&mut registry);
            assert!(head.contains("Authorization: Basic "), "{head}");
            let challenge = format!(
                "Bearer realm=\"http://{addr}/token\",service=\"svc\",scope=\"repository:a/b:pull\""
            );
            registry
                .write_all(format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 4\r\n\r\nnope").as_bytes())
                .unwrap();
            // 2: the token request, on its own connection, with Basic.
            let (mut token, _) = listener.accept().unwrap();
            let head = read_head(&mut token);
            assert!(
                head.starts_with("GET /token?service=svc&scope=repository%3Aa%2Fb%3Apull HTTP/1.1"),
                "{head}"
            );
            assert!(head.contains("Authorization: Basic dTpw"), "{head}");
            token
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"token\":\"t1\"}\n")
                .unwrap();
            // 3: the retry carries the token; 4: so does the next request.
            for _ in 0..2 {
                let head = read_head(&mut registry);
                assert!(head.contains("Authorization: Bearer t1\r\n"), "{head}");
                registry
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let target = Target::parse(
            &format!("http://{addr}"),
            &Options {
                user: Some("u".into()),
                password: Some("p".into()),
                ..Options::default()
            },
        )
        .unwrap();
        let mut c = Conn::new(&target);
        let mut seen = Vec::new();
        let mut sink = |d: &[u8]| seen.extend_from_slice(d);
        let r = c
            .request(
                "GET",
                "/v2/a/b/manifests/x",
                &[],
                Body::None,
                Sink::Stream(&mut sink),
            )
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(seen, b"ok");
        let r = c
            .request("GET", "/v2/a/b/manifests/x", &[], Body::None, Sink::Keep)
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        assert_eq!(target.auth.fetches.load(Ordering::Relaxed), 1);
        server.join().unwrap();
    }

    #[test]
    fn urls_split() {
        assert_eq!(split_url("https://h:5000"), Ok((true, "h:5000", "")));
        assert_eq!(
            split_url("http://h/token?x=1"),
            Ok((false, "h", "/token?x=1"))
        );
        assert!(split_url("ftp://h").is_err());
        assert!(split_url("http:///x").is_err());
        assert!(Target::parse("https://127.0.0.1:1/v2", &Options::default()).is_err());
    }
}
