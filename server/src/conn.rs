//! One client connection: read request heads, hand each request with a
//! streaming body to the API, write the response, repeat while keep-alive
//! holds. All protocol parsing is in `berth_http`; this module only moves
//! bytes between the socket, the parser and the handlers.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::stream::Stream;
use berth_http::{parse_request_head, BodyDecoder, BodyFraming, Method, RequestHead, ResponseHead};
use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::api::{self, error::ApiError, response, Ctx};

/// Bytes a connection's read buffer holds between requests: room for any
/// ordinary request head, and what an idle connection keeps allocated.
const IDLE_READ_BYTES: usize = 16 * 1024;
/// Bytes a request body is read in per socket read, at most. Large bodies
/// get a buffer this big for their duration: reading a 512 MiB upload
/// 16 KiB at a time cost one io_uring round trip per 16 KiB and most of
/// the event loop's time.
const BODY_READ_BYTES: usize = 256 * 1024;
/// Bytes of a blob sent per write call.
const SEND_CHUNK_BYTES: usize = 256 * 1024;
/// Leftover request body we read and discard to keep a connection alive
/// after answering without reading it; beyond this we close instead.
const DRAIN_BYTES_MAX: u64 = 64 * 1024;
/// How long, and how many bytes, a closing connection keeps discarding a
/// request body the client is still sending (see [`linger`]).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 64 * 1024 * 1024;

static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the process as shutting down: every response from now on closes
/// its connection.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Per-connection settings: the `http.limits.*` timeouts and cap, and which
/// proxies may name the client in `X-Forwarded-For`.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    /// Peers (proxies, load balancers) whose `X-Forwarded-For` is believed
    /// for the logged client address (`http.trustedproxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// A request head must arrive completely within this time of its first
    /// byte (slowloris defence); past it the client gets 408.
    pub head_read_timeout: std::time::Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: std::time::Duration,
    /// A request body that makes no progress for this long is cut off.
    pub body_progress_timeout: std::time::Duration,
    /// Open connections per event loop; beyond it new ones are closed at once.
    pub connections_per_loop_max: usize,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            trusted_proxies: Vec::new(),
            head_read_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(120),
            body_progress_timeout: std::time::Duration::from_secs(60),
            connections_per_loop_max: 16_384,
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<std::net::IpAddr>().map_err(|_| ())?,
                Some(p.parse::<u8>().map_err(|_| ())?),
            ),
            None => (s.parse::<std::net::IpAddr>().map_err(|_| ())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(net), std::net::IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (std::net::IpAddr::V6(net), std::net::IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address for logs: the peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries to its left could be forged by the client).
pub fn client_address(peer: SocketAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> String {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer.to_string();
    }
    let Some(list) = forwarded_for else {
        return peer.to_string();
    };
    for entry in list.rsplit(',').map(str::trim) {
        match entry.parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip.to_string(),
            Err(_) => break,
        }
    }
    peer.to_string()
}

/// Requests being handled on one event loop (between a complete head and
/// the end of the response), so shutdown can wait for them.
#[derive(Clone, Default)]
pub struct BusyCount(Rc<std::cell::Cell<usize>>);

impl BusyCount {
    /// Requests in flight.
    pub fn get(&self) -> usize {
        self.0.get()
    }

    fn enter(&self) -> BusyGuard {
        self.0.set(self.0.get() + 1);
        BusyGuard(self.0.clone())
    }
}

struct BusyGuard(Rc<std::cell::Cell<usize>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Buffered bytes read from the socket and not yet consumed.
pub struct ReadBuf {
    data: Vec<u8>,
    pos: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            data: Vec::with_capacity(IDLE_READ_BYTES),
            pos: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes from `stream`, up to `want` of them when there is
    /// room for that many (at least 4 KiB of room is always made; `want` is
    /// capped at [`BODY_READ_BYTES`]); returns how many (0 = peer closed).
    async fn fill(&mut self, stream: &mut Stream, want: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        let room = want.clamp(4096, BODY_READ_BYTES);
        if self.data.capacity() - self.data.len() < room {
            // Growing by at least the current length keeps the copies of a
            // head that arrives in many small pieces linear in its size.
            self.data.reserve(room.max(self.data.len()));
        }
        let buf = std::mem::take(&mut self.data);
        // `append` reads into the spare capacity after the unread bytes
        // (`read` would overwrite the buffer from its start).
        let BufResult(result, buf) = stream.append(buf).await;
        self.data = buf;
        result
    }

    /// Gives back a large body's buffer once its request is over, keeping
    /// any bytes already read of the next request.
    fn shrink_to_idle(&mut self) {
        if self.data.capacity() > IDLE_READ_BYTES && self.unread().len() <= IDLE_READ_BYTES {
            self.data.drain(..self.pos);
            self.pos = 0;
            self.data.shrink_to(IDLE_READ_BYTES);
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// The body's framing is broken (bad chunk size, ...).
    #[error("malformed request body: {0}")]
    Framing(#[from] berth_http::BodyError),
    /// The client closed the connection mid-body.
    #[error("connection closed before the request body was complete")]
    Truncated,
    /// No body bytes arrived within the body-progress timeout.
    #[error("the request body stalled: no bytes for {0:?}")]
    Stalled(std::time::Duration),
    /// Reading the socket failed.
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
}

/// A request body, decoded as it streams in from the socket. Never holds
/// more than one read buffer of it in memory.
pub struct RequestBody<'c> {
    stream: &'c mut Stream,
    progress_timeout: std::time::Duration,
    buf: &'c mut ReadBuf,
    decoder: BodyDecoder,
    framing: BodyFraming,
    continue_pending: bool,
}

impl RequestBody<'_> {
    /// Whether the request declared no body (no framing, or Content-Length 0).
    pub fn is_declared_empty(&self) -> bool {
        matches!(self.framing, BodyFraming::None | BodyFraming::Length(0))
    }

    /// The declared Content-Length, if the body is length-framed.
    pub fn declared_len(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The next piece of the body, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<&[u8]>, BodyReadError> {
        loop {
            if self.decoder.is_done() {
                return Ok(None);
            }
            if !self.buf.unread().is_empty() {
                let input = self.buf.unread();
                let decoded = self.decoder.decode(input)?;
                // `data` is a sub-slice of `input` when non-empty; an empty
                // one may point anywhere, so only its offset is computed here.
                let start = (decoded.data.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
                let (len, consumed, done) = (decoded.data.len(), decoded.consumed, decoded.done);
                let base = self.buf.pos;
                self.buf.pos += consumed;
                if len > 0 {
                    // Reset the buffer lazily: the returned slice borrows it.
                    let range =
                        base.wrapping_add(start)..base.wrapping_add(start).wrapping_add(len);
                    return match self.buf.data.get(range) {
                        Some(out) => Ok(Some(out)),
                        None => Err(BodyReadError::Io(io::Error::other(
                            "body decoder returned a slice outside its input",
                        ))),
                    };
                }
                if done {
                    self.buf.consume(0);
                    return Ok(None);
                }
                if consumed > 0 {
                    continue;
                }
            }
            self.send_continue_if_asked().await?;
            // A length-framed body's rest, or a big read for a chunked one.
            let want = self.decoder.remaining_hint().map_or(BODY_READ_BYTES, |n| {
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(self.buf.unread().len())
            });
            let fill = self.buf.fill(self.stream, want);
            match compio::time::timeout(self.progress_timeout, fill).await {
                Err(_) => return Err(BodyReadError::Stalled(self.progress_timeout)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(BodyReadError::Truncated),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends `100 Continue` before the first body read if the client asked
    /// for it (`Expect: 100-continue`): it sends no body until then.
    async fn send_continue_if_asked(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            write_all(self.stream, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()).await?;
        }
        Ok(())
    }

    /// How many body bytes [`RequestBody::read_direct`] may take next: the
    /// rest of a length-framed body of which nothing is buffered. `None`
    /// when the next bytes must come through [`RequestBody::chunk`]
    /// (chunked framing, bytes already buffered, or the body is over).
    pub fn direct_read_limit(&self) -> Option<u64> {
        match self.decoder.remaining_hint() {
            Some(n) if n > 0 && self.buf.unread().is_empty() => Some(n),
            _ => None,
        }
    }

    /// Reads the next body bytes from the socket straight into
    /// `storage[range]`, from its start, without passing them through the
    /// connection's buffer; `range` must be no longer than
    /// [`RequestBody::direct_read_limit`]. Answers how many bytes arrived
    /// and gives `storage` back, except after a stall
    /// ([`BodyReadError::Stalled`]): the abandoned read keeps the memory.
    pub async fn read_direct(
        &mut self,
        storage: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> (Result<usize, BodyReadError>, Option<Vec<u8>>) {
        let limit = self.direct_read_limit().unwrap_or(0);
        if range.is_empty() || range.len() as u64 > limit || range.end > storage.len() {
            let e = io::Error::other("direct body read outside the body or the buffer");
            return (Err(e.into()), Some(storage));
        }
        if let Err(e) = self.send_continue_if_asked().await {
            return (Err(e.into()), Some(storage));
        }
        let start = range.start;
        let read = self.stream.read(storage.slice(range));
        let BufResult(result, slice) =
            match compio::time::timeout(self.progress_timeout, read).await {
                Ok(done) => done,
                Err(_) => return (Err(BodyReadError::Stalled(self.progress_timeout)), None),
            };
        let storage = slice.into_inner();
        let n = match result {
            Ok(0) => return (Err(BodyReadError::Truncated), Some(storage)),
            Ok(n) => n,
            Err(e) => return (Err(e.into()), Some(storage)),
        };
        // Length framing: the decoder only counts the bytes off.
        match self.decoder.decode(&storage[start..start + n]) {
            Ok(decoded) if decoded.consumed == n => (Ok(n), Some(storage)),
            Ok(_) => {
                let e = io::Error::other("body decoder refused bytes within the body's length");
                (Err(e.into()), Some(storage))
            }
            Err(e) => (Err(e.into()), Some(storage)),
        }
    }

    /// Reads and discards the rest of the body, up to `limit` bytes. Returns
    /// whether the body ended within the limit.
    async fn drain(&mut self, limit: u64) -> bool {
        if self.continue_pending {
            // The client has not sent the body yet and will not without 100.
            return false;
        }
        let mut seen = 0u64;
        loop {
            match self.chunk().await {
                Ok(None) => return true,
                Ok(Some(piece)) => {
                    seen += piece.len() as u64;
                    if seen > limit {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

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

/// Serves one connection until the client closes it, an error occurs, or
/// keep-alive ends.
pub async fn serve(
    mut stream: Stream,
    peer: SocketAddr,
    ctx: Rc<Ctx>,
    busy: BusyCount,
    limits: Rc<ConnSettings>,
) {
    if let Some(tcp) = stream.as_plain_tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let mut buf = ReadBuf::new();
    let mut sender = BlobSender::new();
    loop {
        let head = match read_head(&mut stream, &mut buf, &ctx, &limits).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadFailure::Io) => return,
            Err(HeadFailure::Bad(status, message)) => {
                let error = ApiError::new(api::error::ErrorCode::Unknown, message);
                let mut response = response::Response::error(&error);
                response.status = status;
                if write_response(&mut stream, false, response, false, &mut sender)
                    .await
                    .is_ok()
                {
                    linger(&mut stream, &mut buf).await;
                }
                crate::logging::AccessRecord {
                    client: &peer.to_string(),
                    user: None,
                    method: "-",
                    target: "-",
                    status,
                    bytes: 0,
                    duration: std::time::Duration::ZERO,
                    body_path: "",
                    error: Some(error.code.as_str()),
                }
                .emit();
                return;
            }
        };
        let started = Instant::now();
        let _busy = busy.enter();
        let Some(path) = api::query::percent_decode(head.path()) else {
            let error = ApiError::new(
                api::error::ErrorCode::Unknown,
                "request path has a malformed %-escape",
            );
            let mut response = response::Response::error(&error);
            response.status = 400;
            let _ = write_response(&mut stream, false, response, false, &mut sender).await;
            return;
        };
        let request = Request {
            head: &head,
            path,
            peer,
            tls: stream.as_plain_tcp().is_none(),
        };
        let mut body = RequestBody {
            stream: &mut stream,
            progress_timeout: limits.body_progress_timeout,
            buf: &mut buf,
            decoder: BodyDecoder::new(&head.framing),
            framing: head.framing,
            continue_pending: head.expect_continue,
        };
        let response = api::handle(&ctx, &request, &mut body).await;
        let mut keep_alive = head.keep_alive && !SHUTTING_DOWN.load(Ordering::SeqCst);
        let mut body_left_unread = false;
        if !body.is_done() && !body.drain(DRAIN_BYTES_MAX).await {
            keep_alive = false;
            body_left_unread = true;
        }
        let status = response.status;
        let error = response.error;
        let sent = response.body.len();
        let user_name = response.user.clone();
        let user = user_name.as_deref();
        let is_head = head.method == Method::Head;
        sender.last_path = "";
        let written = write_response(&mut stream, is_head, response, keep_alive, &mut sender).await;
        let client = client_address(
            peer,
            head.headers.get("x-forwarded-for"),
            &limits.trusted_proxies,
        );
        crate::logging::AccessRecord {
            client: &client,
            user,
            method: head.method.as_str(),
            target: &head.target,
            status,
            bytes: if is_head || written.is_err() { 0 } else { sent },
            duration: started.elapsed(),
            body_path: sender.last_path,
            error,
        }
        .emit();
        if written.is_err() {
            return;
        }
        buf.shrink_to_idle();
        if !keep_alive {
            if body_left_unread {
                linger(&mut stream, &mut buf).await;
            }
            return;
        }
    }
}

/// Half-closes the connection and discards what the client is still
/// sending, for at most [`LINGER`] and [`LINGER_BYTES_MAX`]. Closing a socket
/// with unread input makes the kernel send RST, which can destroy the
/// response before the client reads it (e.g. a 413 for an oversized body).
async fn linger(stream: &mut Stream, buf: &mut ReadBuf) {
    use compio::io::AsyncWrite;
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0usize;
    while discarded < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        buf.consume(buf.unread().len());
        match compio::time::timeout(left, buf.fill(stream, BODY_READ_BYTES)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

enum HeadFailure {
    Io,
    Bad(u16, String),
}

/// Reads the next request head. `Ok(None)`: the client closed (or idled out)
/// cleanly between requests.
async fn read_head(
    stream: &mut Stream,
    buf: &mut ReadBuf,
    ctx: &Ctx,
    limits: &ConnSettings,
) -> Result<Option<RequestHead>, HeadFailure> {
    // Set when the head's first byte is seen; the whole head must follow in time.
    let mut head_deadline =
        (!buf.unread().is_empty()).then(|| Instant::now() + limits.head_read_timeout);
    loop {
        if !buf.unread().is_empty() {
            match parse_request_head(buf.unread(), &ctx.http_limits) {
                Ok(Some((head, consumed))) => {
                    buf.consume(consumed);
                    return Ok(Some(head));
                }
                Ok(None) => {}
                Err(e) => return Err(HeadFailure::Bad(e.status(), e.to_string())),
            }
        }
        let wait = match head_deadline {
            None => limits.idle_timeout,
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        };
        match compio::time::timeout(wait, buf.fill(stream, 0)).await {
            Err(_) if head_deadline.is_none() => return Ok(None),
            Err(_) => {
                return Err(HeadFailure::Bad(
                    408,
                    "the request head did not arrive in time".into(),
                ))
            }
            Ok(Ok(0)) if buf.unread().is_empty() => return Ok(None),
            Ok(Ok(0)) => return Err(HeadFailure::Io),
            Ok(Ok(_)) => {
                head_deadline.get_or_insert_with(|| Instant::now() + limits.head_read_timeout);
            }
            Ok(Err(_)) => return Err(HeadFailure::Io),
        }
    }
}

async fn write_response(
    stream: &mut Stream,
    is_head: bool,
    response: response::Response,
    keep_alive: bool,
    sender: &mut BlobSender,
) -> io::Result<()> {
    let mut head = ResponseHead::new(response.status);
    for (name, value) in response.headers {
        head = head.header(name, value);
    }
    // RFC 9110 §8.6: no Content-Length on 1xx, 204 or 304.
    if !matches!(response.status, 100..=199 | 204 | 304) {
        head = head.header("Content-Length", response.body.len().to_string());
    }
    head = head.header("Docker-Distribution-API-Version", "registry/2.0");
    if !keep_alive {
        head = head.header("Connection", "close");
    }
    let mut out = Vec::with_capacity(512);
    head.encode(&mut out);
    if let (false, Some(bytes)) = (is_head, response.body.in_memory()) {
        out.extend_from_slice(bytes);
        return write_all(stream, out).await;
    }
    match response.body {
        response::Body::Blob(blob) if !is_head => {
            write_all(stream, out).await?;
            sender.send(stream, blob.file, blob.offset, blob.len).await
        }
        response::Body::Growing(growing) if !is_head => {
            write_all(stream, out).await?;
            let mut sent = 0u64;
            while sent < growing.len {
                // An upstream failure ends the body early: the client sees
                // a truncated response and the connection closes.
                let sendable = growing.sendable_after(sent).await?;
                let file = growing.file.try_clone()?;
                sender
                    .send(stream, file, growing.start + sent, sendable - sent)
                    .await?;
                sent = sendable;
            }
            Ok(())
        }
        _ => write_all(stream, out).await,
    }
}

/// Writes all of `bytes` and flushes (TLS buffers records until flushed).
async fn write_all(stream: &mut Stream, bytes: Vec<u8>) -> io::Result<()> {
    let BufResult(result, _) = stream.write_all(bytes).await;
    result?;
    stream.flush().await
}

/// Bytes of blob bodies sent by splice (never copied through the process)
/// and by read + write, since start. Evidence for the zero-copy path.
pub static BLOB_BYTES_SPLICED: AtomicU64 = AtomicU64::new(0);
/// See [`BLOB_BYTES_SPLICED`].
pub static BLOB_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// Size requested for a connection's splice pipe.
const PIPE_BYTES: usize = 1 << 20;

/// Sends blob bodies for one connection. Under io_uring, bytes go from the
/// page cache to the socket through a pipe with splice (file → pipe at an
/// offset, pipe → socket); the process never touches them. Under the poll
/// driver (where splicing from a regular file fails) or if no pipe can be
/// made, it falls back to pread + write with one bounded buffer.
pub struct BlobSender {
    zero_copy: bool,
    /// How the last blob body went out: "splice", "copy", or "" for none.
    last_path: &'static str,
    pipe: Option<(compio::fs::pipe::Receiver, compio::fs::pipe::Sender, usize)>,
}

impl BlobSender {
    fn new() -> BlobSender {
        let zero_copy =
            compio::runtime::Runtime::try_with_current(|r| r.driver_type().is_iouring())
                .unwrap_or(false);
        BlobSender {
            zero_copy,
            last_path: "",
            pipe: None,
        }
    }

    async fn send(
        &mut self,
        stream: &mut Stream,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let Some(tcp) = stream.as_plain_tcp().filter(|_| self.zero_copy) else {
            self.last_path = "copy";
            return send_by_copy(stream, &file, offset, len).await;
        };
        if self.pipe.is_none() {
            match compio::fs::pipe::anonymous() {
                Ok((rx, tx)) => {
                    let capacity =
                        rustix::pipe::fcntl_setpipe_size(&tx, PIPE_BYTES).unwrap_or(64 * 1024);
                    self.pipe = Some((rx, tx, capacity));
                }
                Err(e) => {
                    log::warn!("cannot create a splice pipe ({e}); sending blobs by copy");
                    self.zero_copy = false;
                }
            }
        }
        let Some((rx, tx, capacity)) = self.pipe.as_ref() else {
            self.last_path = "copy";
            return send_by_copy(stream, &file, offset, len).await;
        };
        let stream = tcp;
        self.last_path = "splice";
        let (capacity, file) = (*capacity, compio::driver::SharedFd::new(file));
        let mut sent = 0u64;
        while sent < len {
            let want = (len - sent).min(capacity as u64) as usize;
            let into_pipe = compio::fs::pipe::splice(&file, tx, want)
                .offset_in((offset + sent) as i64)
                .await;
            let n = match into_pipe {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its record",
                    ))
                }
                Ok(n) => n,
                Err(e) => {
                    self.pipe = None;
                    return Err(e);
                }
            };
            let mut drained = 0;
            while drained < n {
                match compio::fs::pipe::splice(rx, stream, n - drained).await {
                    Ok(0) => {
                        self.pipe = None;
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "client stopped reading",
                        ));
                    }
                    Ok(k) => drained += k,
                    Err(e) => {
                        // The pipe may still hold bytes: never reuse it.
                        self.pipe = None;
                        return Err(e);
                    }
                }
            }
            sent += n as u64;
        }
        BLOB_BYTES_SPLICED.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

/// Sends `len` bytes of `file` from `offset`, one bounded buffer at a time.
async fn send_by_copy(
    stream: &mut Stream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    let mut sent = 0u64;
    let mut buf = vec![0u8; SEND_CHUNK_BYTES.min(len.max(1) as usize)];
    while sent < len {
        let want = buf.len().min((len - sent) as usize);
        buf.resize(want, 0);
        let n = file.read_at(&mut buf[..want], offset + sent)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file shorter than its record",
            ));
        }
        buf.truncate(n);
        let BufResult(result, returned) = stream.write_all(buf).await;
        result?;
        buf = returned;
        sent += n as u64;
    }
    stream.flush().await?;
    BLOB_BYTES_COPIED.fetch_add(len, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A plain connection whose peer has already sent `sent` bytes (loopback
    /// delivers them into the socket before `write_all` returns).
    async fn stream_holding(sent: usize) -> (Stream, std::net::TcpStream) {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&vec![7u8; sent]).unwrap();
        (Stream::Plain(server), client)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(f)
    }

    #[test]
    fn a_body_read_takes_what_the_socket_holds_not_one_idle_buffer() {
        block_on(async {
            let sent = 48 * 1024;
            let (mut stream, _client) = stream_holding(sent).await;
            let mut buf = ReadBuf::new();
            assert_eq!(buf.fill(&mut stream, 1 << 20).await.unwrap(), sent);
            assert_eq!(buf.unread().len(), sent);
            // The request is over: the big buffer goes back.
            buf.consume(sent);
            buf.shrink_to_idle();
            assert!(buf.data.capacity() <= IDLE_READ_BYTES);
        });
    }

    #[test]
    fn a_head_read_keeps_the_idle_buffer_and_shrinking_keeps_unread_bytes() {
        block_on(async {
            let (mut stream, _client) = stream_holding(48 * 1024).await;
            let mut buf = ReadBuf::new();
            let n = buf.fill(&mut stream, 0).await.unwrap();
            assert!(n > 0 && n <= IDLE_READ_BYTES, "{n}");
            let n2 = buf.fill(&mut stream, 40 * 1024).await.unwrap();
            assert!(buf.data.capacity() > IDLE_READ_BYTES);
            // Bytes of a pipelined next request survive the shrink.
            buf.consume(n + n2 - 100);
            buf.shrink_to_idle();
            assert_eq!(buf.unread(), &[7u8; 100][..]);
            assert!(buf.data.capacity() <= IDLE_READ_BYTES);
        });
    }

    fn length_body<'c>(stream: &'c mut Stream, buf: &'c mut ReadBuf, len: u64) -> RequestBody<'c> {
        let framing = BodyFraming::Length(len);
        RequestBody {
            stream,
            progress_timeout: std::time::Duration::from_millis(200),
            buf,
            decoder: BodyDecoder::new(&framing),
            framing,
            continue_pending: false,
        }
    }

    #[test]
    fn a_length_body_is_read_straight_into_caller_memory_and_no_further() {
        block_on(async {
            let (mut stream, mut client) = stream_holding(6000).await;
            let mut buf = ReadBuf::new();
            let mut body = length_body(&mut stream, &mut buf, 10_000);
            assert_eq!(body.direct_read_limit(), Some(10_000));
            let (n, storage) = body.read_direct(vec![0u8; 20_000], 100..10_100).await;
            assert_eq!(n.unwrap(), 6000);
            let storage = storage.expect("memory back");
            assert!(storage[100..6100].iter().all(|&b| b == 7));
            assert_eq!(storage[6100], 0);
            assert_eq!(body.direct_read_limit(), Some(4000));
            // Past the body's end: refused, memory back, nothing read.
            let (refused, storage) = body.read_direct(storage, 0..4001).await;
            assert!(refused.is_err());
            client.write_all(&[9u8; 4000]).unwrap();
            let (n, storage) = body.read_direct(storage.unwrap(), 0..4000).await;
            assert_eq!(n.unwrap(), 4000);
            assert!(storage.unwrap()[..4000].iter().all(|&b| b == 9));
            assert!(body.is_done());
            assert_eq!(body.direct_read_limit(), None);
        });
    }

    #[test]
    fn buffered_body_bytes_go_through_chunk_and_a_stalled_read_keeps_the_memory() {
        block_on(async {
            let (mut stream, _client) = stream_holding(100).await;
            let mut buf = ReadBuf::new();
            buf.fill(&mut stream, 0).await.unwrap();
            let mut body = length_body(&mut stream, &mut buf, 1000);
            assert_eq!(body.direct_read_limit(), None, "100 bytes are buffered");
            assert_eq!(body.chunk().await.unwrap().map(<[u8]>::len), Some(100));
            assert_eq!(body.direct_read_limit(), Some(900));
            let (stalled, storage) = body.read_direct(vec![0u8; 900], 0..900).await;
            assert!(matches!(stalled, Err(BodyReadError::Stalled(_))));
            assert!(storage.is_none());
        });
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let proxy: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        assert_eq!(
            client_address(proxy, Some("198.51.100.7"), &proxies),
            "198.51.100.7"
        );
        assert_eq!(
            client_address(proxy, Some("1.1.1.1, 198.51.100.7, 10.0.0.5"), &proxies),
            "198.51.100.7"
        );
        assert_eq!(
            client_address(stranger, Some("198.51.100.7"), &proxies),
            "203.0.113.9:4000"
        );
        assert_eq!(
            client_address(proxy, Some("garbage"), &proxies),
            "10.1.2.3:4000"
        );
        assert_eq!(client_address(proxy, None, &proxies), "10.1.2.3:4000");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("::ffff:10.9.9.9"
            .parse::<std::net::IpAddr>()
            .map(|ip| proxies[0].contains(ip))
            .unwrap());
    }
}
