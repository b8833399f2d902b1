//! Keeps the accept path working when file descriptors run out: a few
//! descriptors held in reserve (opened `/dev/null`), released one at a
//! time to accept a connection and answer it 503, and a check of how close
//! the process is to `RLIMIT_NOFILE`.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use compio::net::{TcpListener, TcpStream};

/// What one accept gave.
pub enum Accepted {
    /// A connection to serve.
    Serve(TcpStream, SocketAddr),
    /// A connection to answer 503 (with this reason) and close; take the
    /// reserve back ([`DescriptorReserve::refill`]) once it is closed.
    Refuse(TcpStream, SocketAddr, String),
    /// Accept failed (and the reserve could not help): back off.
    Failed(io::Error),
}

/// Accepts the next connection. Out of descriptors, releases one from
/// `reserve` to accept it anyway, for a 503; a connection whose descriptor
/// is too close to the limit is also given to refuse.
pub async fn accept(
    listener: &TcpListener,
    reserve: Option<&RefCell<DescriptorReserve>>,
) -> Accepted {
    match listener.accept().await {
        Ok((stream, peer)) => {
            if reserve.is_some_and(|r| r.borrow().is_near_limit(stream.as_raw_fd())) {
                let why = "the registry is close to its file descriptor limit; retry later";
                return Accepted::Refuse(stream, peer, why.to_owned());
            }
            Accepted::Serve(stream, peer)
        }
        Err(e) if DescriptorReserve::is_exhaustion(&e) => {
            let Some(reserve) = reserve.filter(|r| r.borrow_mut().release_one()) else {
                return Accepted::Failed(e);
            };
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let why = format!("the registry is out of file descriptors ({e}); retry later");
                    Accepted::Refuse(stream, peer, why)
                }
                Err(e) => {
                    reserve.borrow_mut().refill();
                    Accepted::Failed(e)
                }
            }
        }
        Err(e) => {
            if let Some(reserve) = reserve {
                reserve.borrow_mut().refill();
            }
            Accepted::Failed(e)
        }
    }
}

/// Why the reserve could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// `/dev/null` could not be opened.
    #[error("cannot open /dev/null for the descriptor reserve: {0}")]
    Open(#[source] io::Error),
}

/// Descriptors one event loop holds back for the accept path.
#[derive(Debug)]
pub struct DescriptorReserve {
    held: Vec<File>,
    want: usize,
    /// The soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
    limit: u64,
    /// Connections are refused this close to `limit`.
    margin: u64,
}

impl DescriptorReserve {
    /// Holds `want` descriptors, and refuses connections whose descriptor
    /// is within `margin` of the process's limit (at most a quarter of the
    /// limit, so a low limit still leaves room to serve).
    pub fn new(want: usize, margin: u64) -> Result<DescriptorReserve, ReserveError> {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let mut reserve = DescriptorReserve {
            held: Vec::with_capacity(want),
            want,
            limit,
            margin: margin.min(limit / 4),
        };
        while reserve.held.len() < want {
            reserve
                .held
                .push(File::open("/dev/null").map_err(ReserveError::Open)?);
        }
        Ok(reserve)
    }

    /// Whether `error` (from accept) means the process or the system is out
    /// of descriptors.
    pub fn is_exhaustion(error: &io::Error) -> bool {
        matches!(
            error.raw_os_error(),
            Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
                || code == rustix::io::Errno::NFILE.raw_os_error()
        )
    }

    /// Closes one held descriptor so an accept can succeed; false when none
    /// is held.
    pub fn release_one(&mut self) -> bool {
        self.held.pop().is_some()
    }

    /// Takes back released descriptors, as many as can be had now.
    pub fn refill(&mut self) {
        while self.held.len() < self.want {
            match File::open("/dev/null") {
                Ok(file) => self.held.push(file),
                Err(_) => return,
            }
        }
    }

    /// Descriptors held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether a connection given descriptor number `fd` is too close to
    /// the limit to be served. The kernel hands out the lowest free number,
    /// so `fd` is a lower bound of the descriptors in use.
    pub fn is_near_limit(&self, fd: i32) -> bool {
        let fd = u64::try_from(fd).unwrap_or(0);
        fd.saturating_add(self.margin) >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_and_refilling_keeps_the_count() {
        let mut reserve = DescriptorReserve::new(3, 8).unwrap();
        assert_eq!(reserve.held(), 3);
        assert!(reserve.release_one());
        assert!(reserve.release_one());
        assert_eq!(reserve.held(), 1);
        reserve.refill();
        assert_eq!(reserve.held(), 3);
    }

    #[test]
    fn descriptors_near_the_limit_are_refused() {
        let reserve = DescriptorReserve {
            held: Vec::new(),
            want: 0,
            limit: 100,
            margin: 10,
        };
        assert!(!reserve.is_near_limit(3));
        assert!(!reserve.is_near_limit(89));
        assert!(reserve.is_near_limit(90));
        assert!(reserve.is_near_limit(99));
    }

    #[test]
    fn exhaustion_is_emfile_or_enfile() {
        let emfile = io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let enfile = io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(DescriptorReserve::is_exhaustion(&emfile));
        assert!(DescriptorReserve::is_exhaustion(&enfile));
        assert!(!DescriptorReserve::is_exhaustion(&io::Error::other("x")));
    }
}
