//! A request body as it streams in: the connection's read buffer, the
//! framing decoder, `100 Continue`, and the limits a body must keep (it
//! must make progress, and arrive no slower than a minimum rate).

use std::io;
use std::time::{Duration, Instant};

use berth_http::{BodyDecoder, BodyFraming};
use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stream::Stream;

/// Bytes a connection's read buffer holds between requests: room for any
/// ordinary request head, and what an idle connection keeps allocated.
pub const IDLE_READ_BYTES: usize = 16 * 1024;
/// Bytes a request body is read in per socket read, at most. Large bodies
/// get a buffer this big for their duration: reading a 512 MiB upload
/// 16 KiB at a time cost one io_uring round trip per 16 KiB and most of
/// the event loop's time.
pub const BODY_READ_BYTES: usize = 256 * 1024;

/// How slowly a request body may arrive before it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// A body that makes no progress for this long is cut.
    pub progress_timeout: Duration,
    /// A body arriving slower than this, on average over
    /// [`BodyLimits::rate_window`] of waiting for it, is cut; 0 = no minimum.
    pub bytes_per_second_min: u64,
    /// The time over which the rate is averaged. Only time spent waiting
    /// for the client counts (not time the server spends writing what
    /// arrived), so a slow disk never cuts a fast client.
    pub rate_window: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            progress_timeout: Duration::from_secs(60),
            bytes_per_second_min: 1024,
            rate_window: Duration::from_secs(30),
        }
    }
}

/// Measures how fast a body arrives, in windows of waiting time.
#[derive(Debug, Default)]
struct RateMeter {
    waited: Duration,
    bytes: u64,
}

impl RateMeter {
    /// Counts one socket read: `n` bytes after `waited`.
    fn record(&mut self, waited: Duration, n: usize) {
        self.waited += waited;
        self.bytes += n as u64;
    }

    /// Whether the body is too slow: a full window has been waited and
    /// fewer bytes than the minimum arrived in it. A full window that was
    /// fast enough starts a new one.
    fn too_slow(&mut self, limits: &BodyLimits) -> bool {
        if limits.bytes_per_second_min == 0 || self.waited < limits.rate_window {
            return false;
        }
        let required = limits.bytes_per_second_min as f64 * self.waited.as_secs_f64();
        if (self.bytes as f64) < required {
            return true;
        }
        *self = RateMeter::default();
        false
    }
}

/// Buffered bytes read from the socket and not yet consumed.
#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    pos: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf::new()
    }
}

impl ReadBuf {
    /// An empty buffer of the idle size.
    pub fn new() -> ReadBuf {
        ReadBuf {
            data: Vec::with_capacity(IDLE_READ_BYTES),
            pos: 0,
        }
    }

    /// The bytes read and not yet consumed.
    pub fn unread(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Marks the first `n` unread bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes from `stream`, up to `want` of them when there is
    /// room for that many (at least 4 KiB of room is always made; `want` is
    /// capped at [`BODY_READ_BYTES`]); returns how many (0 = peer closed).
    pub async fn fill(&mut self, stream: &mut Stream, want: usize) -> io::Result<usize> {
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
    pub fn shrink_to_idle(&mut self) {
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
    Stalled(Duration),
    /// The body arrived slower than the minimum rate
    /// ([`BodyLimits::bytes_per_second_min`]).
    #[error("the request body is too slow: {bytes} bytes in {waited:?}, under {min} bytes/s")]
    TooSlow {
        /// Bytes that arrived in the window.
        bytes: u64,
        /// Time spent waiting for them.
        waited: Duration,
        /// The minimum rate, in bytes per second.
        min: u64,
    },
    /// Reading the socket failed.
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
}

/// A request body, decoded as it streams in from the socket. Never holds
/// more than one read buffer of it in memory.
pub struct RequestBody<'c> {
    stream: &'c mut Stream,
    limits: BodyLimits,
    buf: &'c mut ReadBuf,
    decoder: BodyDecoder,
    framing: BodyFraming,
    continue_pending: bool,
    meter: RateMeter,
}

impl<'c> RequestBody<'c> {
    /// A body framed as `framing`, read from `stream` through `buf` (which
    /// may already hold its first bytes). `expect_continue`: the client
    /// waits for `100 Continue` before sending it.
    pub fn new(
        stream: &'c mut Stream,
        buf: &'c mut ReadBuf,
        framing: BodyFraming,
        expect_continue: bool,
        limits: BodyLimits,
    ) -> RequestBody<'c> {
        RequestBody {
            stream,
            limits,
            buf,
            decoder: BodyDecoder::new(&framing),
            framing,
            continue_pending: expect_continue,
            meter: RateMeter::default(),
        }
    }
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
            self.check_rate()?;
            // A length-framed body's rest, or a big read for a chunked one.
            let want = self.decoder.remaining_hint().map_or(BODY_READ_BYTES, |n| {
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(self.buf.unread().len())
            });
            let waiting = Instant::now();
            let fill = self.buf.fill(self.stream, want);
            match compio::time::timeout(self.limits.progress_timeout, fill).await {
                Err(_) => return Err(BodyReadError::Stalled(self.limits.progress_timeout)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(BodyReadError::Truncated),
                Ok(Ok(n)) => self.meter.record(waiting.elapsed(), n),
            }
        }
    }

    /// Fails once the body has arrived slower than the minimum rate over a
    /// whole window. Checked before each socket read, so the bytes of the
    /// read that ended the window are still delivered.
    fn check_rate(&mut self) -> Result<(), BodyReadError> {
        let (bytes, waited) = (self.meter.bytes, self.meter.waited);
        if self.meter.too_slow(&self.limits) {
            return Err(BodyReadError::TooSlow {
                bytes,
                waited,
                min: self.limits.bytes_per_second_min,
            });
        }
        Ok(())
    }

    /// Sends `100 Continue` before the first body read if the client asked
    /// for it (`Expect: 100-continue`): it sends no body until then.
    async fn send_continue_if_asked(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            let continue_line = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            let BufResult(result, _) = self.stream.write_all(continue_line).await;
            result?;
            self.stream.flush().await?;
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
        if let Err(e) = self.check_rate() {
            return (Err(e), Some(storage));
        }
        let start = range.start;
        let waiting = Instant::now();
        let read = self.stream.read(storage.slice(range));
        let timeout = self.limits.progress_timeout;
        let BufResult(result, slice) = match compio::time::timeout(timeout, read).await {
            Ok(done) => done,
            Err(_) => return (Err(BodyReadError::Stalled(timeout)), None),
        };
        let storage = slice.into_inner();
        let n = match result {
            Ok(0) => return (Err(BodyReadError::Truncated), Some(storage)),
            Ok(n) => n,
            Err(e) => return (Err(e.into()), Some(storage)),
        };
        self.meter.record(waiting.elapsed(), n);
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
    /// whether the body ended within the limit; reads at most `limit` plus
    /// one read buffer from the socket.
    pub async fn drain(&mut self, limit: u64) -> bool {
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
        let limits = BodyLimits {
            progress_timeout: Duration::from_millis(200),
            ..BodyLimits::default()
        };
        RequestBody::new(stream, buf, BodyFraming::Length(len), false, limits)
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
}
