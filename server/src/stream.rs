//! The byte stream a connection runs over: plain TCP or TLS on TCP. One
//! concrete type keeps the connection and API code free of generics; plain
//! TCP additionally exposes its socket so blob bodies can be spliced.

use std::io;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite};
use compio::net::TcpStream;
use compio::tls::TlsStream;

/// A client connection's stream.
pub enum Stream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS (boxed: the TLS session is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket when bytes may be spliced straight into it (plain
    /// TCP); `None` under TLS, where they must pass through the session.
    pub fn as_plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }
}

impl AsyncWrite for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(s) => s.write(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}
