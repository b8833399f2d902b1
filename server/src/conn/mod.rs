//! One client connection: read request heads, hand each request with a
//! streaming body to a [`Handler`], write the response, repeat while
//! keep-alive holds. All protocol parsing is in `berth_http`; this module
//! only moves bytes between the socket, the parser and the handler.
//! `send` writes responses, `client_addr` resolves the client's address,
//! `access_log` records each exchange, `descriptors` keeps the accept path
//! working when file descriptors run out.

mod access_log;
mod client_addr;
mod descriptors;
mod send;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_http::{parse_request_head, Limits, Method, RequestHead};

use crate::exchange::{
    BodyLimits, Handler, ReadBuf, Refusal, Request, RequestBody, BODY_READ_BYTES,
};
use crate::stream::Stream;
use send::{write_response, BlobSender};

pub use client_addr::{client_address, IpNet};
pub use descriptors::{accept, Accepted, DescriptorReserve, ReserveError};
pub use send::{BLOB_BYTES_COPIED, BLOB_BYTES_SPLICED};

/// How long a closing connection keeps discarding a request body the
/// client is still sending (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// How much of an unread body a closing connection discards at most, so a
/// client that sends its whole body before reading (most do) still reads
/// the answer: the largest manifest, refused with 413, fits. A client
/// refused with 401 or 403 gets only
/// [`ConnSettings::discard_body_bytes_max`].
const LINGER_BYTES_MAX: u64 = 4 << 20;
/// How long a connection refused for want of descriptors lingers: it holds
/// a reserved descriptor meanwhile.
const REFUSED_LINGER: Duration = Duration::from_millis(200);

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

/// Marks the process as shutting down: every response from now on closes
/// its connection.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// Per-connection settings: the `http.limits.*` timeouts, cap and body
/// limits, and which proxies may name the client in `X-Forwarded-For`.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    /// Peers (proxies, load balancers) whose `X-Forwarded-For` is believed
    /// for the logged client address (`http.trustedproxies`).
    pub trusted_proxies: Vec<IpNet>,
    /// A request head must arrive completely within this time of its first
    /// byte (slowloris defence); past it the client gets 408.
    pub head_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long is cut off.
    pub body_progress_timeout: Duration,
    /// Open connections per event loop; beyond it new ones are closed at once.
    pub connections_per_loop_max: usize,
    /// Request body left unread by a handler (an early answer: 401, 404,
    /// any error) that is read and discarded to keep the connection; past
    /// it the answer carries `Connection: close` and the connection closes
    /// (`http.limits.discardbodybytesmax`). Also bounds the lingering close
    /// after a 401 or 403 (others linger for at most 4 MiB).
    pub discard_body_bytes_max: u64,
    /// A body arriving slower than this (bytes per second, averaged over
    /// `body_rate_window` of waiting) is cut; 0 = no minimum
    /// (`http.limits.bodybytespersecondmin`).
    pub body_bytes_per_second_min: u64,
    /// The window of `body_bytes_per_second_min`
    /// (`http.limits.bodyratewindowms`).
    pub body_rate_window: Duration,
    /// File descriptors kept back from connections: each event loop holds
    /// a few to answer 503 when accept finds none left, and a connection
    /// accepted within this many of `RLIMIT_NOFILE` gets 503, so the store
    /// keeps descriptors for its own files.
    pub descriptors_reserved: u64,
}

impl Default for ConnSettings {
    fn default() -> Self {
        let body = BodyLimits::default();
        ConnSettings {
            trusted_proxies: Vec::new(),
            head_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_progress_timeout: body.progress_timeout,
            connections_per_loop_max: 16_384,
            discard_body_bytes_max: 64 * 1024,
            body_bytes_per_second_min: body.bytes_per_second_min,
            body_rate_window: body.rate_window,
            descriptors_reserved: 32,
        }
    }
}

impl ConnSettings {
    /// The limits every request body is read under.
    pub fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            progress_timeout: self.body_progress_timeout,
            bytes_per_second_min: self.body_bytes_per_second_min,
            rate_window: self.body_rate_window,
        }
    }
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

/// Serves one connection until the client closes it, an error occurs, or
/// keep-alive ends.
pub async fn serve<H: Handler>(
    mut stream: Stream,
    peer: SocketAddr,
    handler: Rc<H>,
    busy: BusyCount,
    settings: Rc<ConnSettings>,
    http_limits: Limits,
) {
    if let Some(tcp) = stream.as_plain_tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let mut buf = ReadBuf::new();
    let mut sender = BlobSender::new();
    loop {
        let head = match read_head(&mut stream, &mut buf, &http_limits, &settings).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(HeadFailure::Io) => return,
            Err(HeadFailure::Bad(status, message)) => {
                let response = handler.refusal(Refusal::BadHead { status, message });
                let (status, error) = (response.status, response.error);
                if write_response(&mut stream, false, response, false, &mut sender)
                    .await
                    .is_ok()
                {
                    linger(
                        &mut stream,
                        &mut buf,
                        LINGER,
                        settings.discard_body_bytes_max,
                    )
                    .await;
                }
                access_log::refused(peer, status, error);
                return;
            }
        };
        let started = Instant::now();
        let _busy = busy.enter();
        let Some(path) = berth_http::percent_decode(head.path()) else {
            let response = handler.refusal(Refusal::BadPath);
            let _ = write_response(&mut stream, false, response, false, &mut sender).await;
            return;
        };
        let request = Request {
            head: &head,
            path,
            peer,
            tls: stream.as_plain_tcp().is_none(),
        };
        let mut body = RequestBody::new(
            &mut stream,
            &mut buf,
            head.framing,
            head.expect_continue,
            settings.body_limits(),
        );
        let response = handler.handle(&request, &mut body).await;
        let mut keep_alive = head.keep_alive && !SHUTTING_DOWN.load(Ordering::SeqCst);
        let mut body_left_unread = false;
        if !body.is_done() && !body.drain(settings.discard_body_bytes_max).await {
            keep_alive = false;
            body_left_unread = true;
        }
        let (status, error, sent) = (response.status, response.error, response.body.len());
        // Who may not send a body gets no more of it read than the discard.
        let linger_bytes = if matches!(status, 401 | 403) {
            settings.discard_body_bytes_max
        } else {
            LINGER_BYTES_MAX.max(settings.discard_body_bytes_max)
        };
        let user = response.user.clone();
        let is_head = head.method == Method::Head;
        sender.last_path = "";
        let written = write_response(&mut stream, is_head, response, keep_alive, &mut sender).await;
        let answered = access_log::Answered {
            status,
            user: user.as_deref(),
            bytes: if is_head || written.is_err() { 0 } else { sent },
            duration: started.elapsed(),
            body_path: sender.last_path,
            error,
        };
        access_log::request(peer, &head, &settings.trusted_proxies, answered);
        if written.is_err() {
            return;
        }
        buf.shrink_to_idle();
        if !keep_alive {
            if body_left_unread {
                linger(&mut stream, &mut buf, LINGER, linger_bytes).await;
            }
            return;
        }
    }
}

/// Answers a connection the server cannot serve now (no descriptors to
/// spare) with the handler's 503 and `Connection: close`, without reading
/// a request, and closes it after a short linger.
pub async fn refuse_unavailable<H: Handler>(
    mut stream: Stream,
    peer: SocketAddr,
    handler: &H,
    why: String,
    settings: &ConnSettings,
) {
    let response = handler.refusal(Refusal::Unavailable(why));
    let (status, error) = (response.status, response.error);
    let mut sender = BlobSender::new();
    if write_response(&mut stream, false, response, false, &mut sender)
        .await
        .is_ok()
    {
        let mut buf = ReadBuf::new();
        linger(
            &mut stream,
            &mut buf,
            REFUSED_LINGER,
            settings.discard_body_bytes_max,
        )
        .await;
    }
    access_log::refused(peer, status, error);
}

/// Half-closes the connection and discards what the client is still
/// sending, for at most `time` and about `bytes_max` bytes (plus one read
/// buffer). Closing a socket with unread input makes the kernel send RST,
/// which can destroy the response before the client reads it (e.g. a 413
/// for an oversized body); past the bounds the connection closes anyway.
async fn linger(stream: &mut Stream, buf: &mut ReadBuf, time: Duration, bytes_max: u64) {
    use compio::io::AsyncWrite;
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + time;
    let mut discarded = 0u64;
    while discarded < bytes_max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        buf.consume(buf.unread().len());
        match compio::time::timeout(left, buf.fill(stream, BODY_READ_BYTES)).await {
            Ok(Ok(n)) if n > 0 => discarded += n as u64,
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
    http_limits: &Limits,
    settings: &ConnSettings,
) -> Result<Option<RequestHead>, HeadFailure> {
    // Set when the head's first byte is seen; the whole head must follow in time.
    let mut head_deadline =
        (!buf.unread().is_empty()).then(|| Instant::now() + settings.head_read_timeout);
    loop {
        if !buf.unread().is_empty() {
            match parse_request_head(buf.unread(), http_limits) {
                Ok(Some((head, consumed))) => {
                    buf.consume(consumed);
                    return Ok(Some(head));
                }
                Ok(None) => {}
                Err(e) => return Err(HeadFailure::Bad(e.status(), e.to_string())),
            }
        }
        let wait = match head_deadline {
            None => settings.idle_timeout,
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
                head_deadline.get_or_insert_with(|| Instant::now() + settings.head_read_timeout);
            }
            Ok(Err(_)) => return Err(HeadFailure::Io),
        }
    }
}

/// Answers every request with what the test gives it; for tests of the loop.
#[cfg(test)]
mod tests;
