//! Thread-per-core serving: one compio event loop per core, each with its
//! own SO_REUSEPORT listener on the same address, so the kernel spreads
//! connections across cores and a connection never leaves its core.
//! io_uring is used where the kernel allows it; otherwise (e.g. under
//! Docker's default seccomp profile) the loop falls back to epoll/poll.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::Engine;
use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::RuntimeBuilder;
use socket2::{Domain, Protocol, Socket, Type};

use crate::api::{ApiSettings, Ctx};
use crate::config::DriverChoice;

/// Why serving could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An event loop could not be created.
    #[error("cannot start event loop {core}: {source}")]
    Runtime {
        /// Which loop.
        core: usize,
        /// Why.
        source: std::io::Error,
    },
}

/// What each event loop needs.
#[derive(Clone)]
pub struct ServeOptions {
    /// The shared engine.
    pub engine: Arc<Engine>,
    /// API settings.
    pub settings: ApiSettings,
    /// Driver preference.
    pub driver: DriverChoice,
    /// Number of event loops (>= 1).
    pub threads: usize,
}

/// Binds one SO_REUSEPORT listener for `addr`.
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listen = |source| ServeError::Listen { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(listen)?;
    socket.set_reuse_address(true).map_err(listen)?;
    socket.set_reuse_port(true).map_err(listen)?;
    socket.bind(&addr.into()).map_err(listen)?;
    socket.listen(1024).map_err(listen)?;
    Ok(socket.into())
}

/// Starts `options.threads` event loops on `addr` and blocks until they end
/// (they run until the process is stopped). Listeners are all bound before
/// any loop starts, so a busy port fails the start cleanly.
pub fn serve(addr: SocketAddr, options: ServeOptions) -> Result<(), ServeError> {
    let listeners = (0..options.threads).map(|_| bind_reuseport(addr)).collect::<Result<Vec<_>, _>>()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for (core, listener) in listeners.into_iter().enumerate() {
        let options = options.clone();
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("berth-core-{core}"))
            .spawn(move || run_loop(core, listener, options, ready))
            .map_err(|source| ServeError::Runtime { core, source })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut drivers = Vec::new();
    for started in ready_rx {
        drivers.push(started?);
    }
    let driver = if drivers.iter().all(|d| *d == DriverType::IoUring) { "io_uring" } else { "poll (epoll)" };
    log::info!(
        "berth listening on {addr} with {} event loops, driver {driver}, data in {}",
        drivers.len(),
        options.engine.root().display()
    );
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn run_loop(
    core: usize,
    listener: std::net::TcpListener,
    options: ServeOptions,
    ready: std::sync::mpsc::Sender<Result<DriverType, ServeError>>,
) {
    let mut proactor = ProactorBuilder::new();
    match options.driver {
        DriverChoice::Auto => {}
        DriverChoice::IoUring => {
            proactor.driver_type(DriverType::IoUring);
        }
        DriverChoice::Poll => {
            proactor.driver_type(DriverType::Poll);
        }
    }
    let runtime = match RuntimeBuilder::new().with_proactor(proactor).build() {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(ServeError::Runtime { core, source }));
            return;
        }
    };
    let driver = runtime.driver_type();
    log::debug!("event loop {core}: driver {driver:?}");
    // The poll driver needs a non-blocking socket; io_uring wants a blocking one.
    if let Err(source) = listener.set_nonblocking(driver.is_polling()) {
        let _ = ready.send(Err(ServeError::Runtime { core, source }));
        return;
    }
    runtime.block_on(async move {
        let listener = match compio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = ready.send(Err(ServeError::Runtime { core, source }));
                return;
            }
        };
        let _ = ready.send(Ok(driver));
        drop(ready);
        let ctx = Rc::new(Ctx { engine: options.engine, settings: options.settings, http_limits: Default::default() });
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    compio::runtime::spawn(crate::conn::serve(stream, peer, ctx.clone())).detach();
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("event loop {core}: accept failed: {e}");
                    compio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}
