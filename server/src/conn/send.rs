//! Writing responses: the head, then the body from memory, from a file by
//! splice (io_uring, plain TCP: the process never touches the bytes) or by
//! pread + write with one bounded buffer, or from a streaming source as its
//! bytes land.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_http::ResponseHead;
use compio::buf::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};

use crate::exchange::{Body, Response};
use crate::stream::Stream;

/// Bytes of a blob sent per write call.
const SEND_CHUNK_BYTES: usize = 256 * 1024;

/// Writes `response` (its head only for a HEAD request); `keep_alive`
/// false adds `Connection: close`. What the response holds alive is
/// dropped once it has been sent.
pub async fn write_response(
    stream: &mut Stream,
    is_head: bool,
    response: Response,
    keep_alive: bool,
    sender: &mut BlobSender,
) -> io::Result<()> {
    let Response {
        status,
        headers,
        body,
        held,
        ..
    } = response;
    let mut head = ResponseHead::new(status);
    for (name, value) in headers {
        head = head.header(name, value);
    }
    // RFC 9110 §8.6: no Content-Length on 1xx, 204 or 304.
    if !matches!(status, 100..=199 | 204 | 304) {
        head = head.header("Content-Length", body.len().to_string());
    }
    head = head.header("Docker-Distribution-API-Version", "registry/2.0");
    if !keep_alive {
        head = head.header("Connection", "close");
    }
    let mut out = Vec::with_capacity(512);
    head.encode(&mut out);
    let result = write_body(stream, is_head, out, body, sender).await;
    drop(held);
    result
}

async fn write_body(
    stream: &mut Stream,
    is_head: bool,
    mut out: Vec<u8>,
    body: Body,
    sender: &mut BlobSender,
) -> io::Result<()> {
    if let (false, Some(bytes)) = (is_head, body.in_memory()) {
        out.extend_from_slice(bytes);
        return write_all(stream, out).await;
    }
    match body {
        Body::Blob(blob) if !is_head => {
            write_all(stream, out).await?;
            sender.send(stream, blob.file, blob.offset, blob.len).await
        }
        Body::Streaming(source) if !is_head => {
            write_all(stream, out).await?;
            let len = source.len();
            let mut sent = 0u64;
            while sent < len {
                // A failed source ends the body early: the client sees a
                // truncated response and the connection closes.
                let sendable = source.sendable_after(sent).await?.min(len);
                if sendable <= sent {
                    return Err(io::Error::other("a streaming body made no progress"));
                }
                let (file, start) = source.file()?;
                sender
                    .send(stream, file, start + sent, sendable - sent)
                    .await?;
                sent = sendable;
            }
            Ok(())
        }
        _ => write_all(stream, out).await,
    }
}

/// Writes all of `bytes` and flushes (TLS buffers records until flushed).
pub async fn write_all(stream: &mut Stream, bytes: Vec<u8>) -> io::Result<()> {
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
    pub last_path: &'static str,
    pipe: Option<(compio::fs::pipe::Receiver, compio::fs::pipe::Sender, usize)>,
}

impl BlobSender {
    /// A sender for one connection (splice when the loop runs io_uring).
    pub fn new() -> BlobSender {
        let zero_copy =
            compio::runtime::Runtime::try_with_current(|r| r.driver_type().is_iouring())
                .unwrap_or(false);
        BlobSender {
            zero_copy,
            last_path: "",
            pipe: None,
        }
    }

    /// Sends `len` bytes of `file` from `offset`.
    pub async fn send(
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
