//! Thread-per-core serving: one compio event loop per core, each with its
//! own SO_REUSEPORT listener on the same address, so the kernel spreads
//! connections across cores and a connection never leaves its core.
//! io_uring is used where the kernel allows it; otherwise (e.g. under
//! Docker's default seccomp profile) the loop falls back to epoll/poll.
//! Out of file descriptors, a loop still accepts: it answers 503 from a
//! reserved descriptor instead of leaving connections to time out.

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
use crate::conn::{Accepted, DescriptorReserve};
use crate::stream::Stream;

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
    /// After SIGTERM/SIGINT, how long in-flight requests may take to finish
    /// (`http.draintimeout`).
    pub drain_timeout: Duration,
    /// Timeouts and the connection cap (`http.limits.*`).
    pub conn_settings: crate::conn::ConnSettings,
    /// Request-head parsing limits.
    pub http_limits: berth_http::Limits,
    /// Serve HTTPS with this configuration (`http.tls.*`); `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Who may use the API.
    pub auth: crate::auth::Auth,
    /// The pull-through cache, when configured.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
}

/// Fails with `AddrInUse` if another socket holds `addr`, including
/// another process's SO_REUSEPORT listeners (which a SO_REUSEPORT bind
/// would silently join, splitting the connections between two registries).
/// Probes with a plain bind; port 0 is always free.
pub fn ensure_port_free(addr: SocketAddr) -> Result<(), ServeError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let listen = |source| ServeError::Listen { addr, source };
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(listen)?;
    probe.set_reuse_address(true).map_err(listen)?;
    probe.bind(&addr.into()).map_err(listen)?;
    Ok(())
}

/// Binds one SO_REUSEPORT listener for `addr`.
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listen = |source| ServeError::Listen { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(listen)?;
    socket.set_reuse_address(true).map_err(listen)?;
    socket.set_reuse_port(true).map_err(listen)?;
    socket.bind(&addr.into()).map_err(listen)?;
    socket.listen(1024).map_err(listen)?;
    Ok(socket.into())
}

/// Starts `options.threads` event loops on `addr` and blocks until they end.
/// Listeners are all bound before any loop starts, so a busy port fails the
/// start cleanly, also when another berth holds it with SO_REUSEPORT. SIGTERM or SIGINT starts a graceful shutdown: every loop
/// stops accepting, in-flight requests finish (for at most
/// `drain_timeout`), idle connections are closed, and `serve` returns. A
/// second signal exits at once.
pub fn serve(addr: SocketAddr, options: ServeOptions) -> Result<(), ServeError> {
    ensure_port_free(addr)?;
    let listeners = (0..options.threads)
        .map(|_| bind_reuseport(addr))
        .collect::<Result<Vec<_>, _>>()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for (core, listener) in listeners.into_iter().enumerate() {
        let options = options.clone();
        let ready = ready_tx.clone();
        let (stop_tx, stop_rx) = flume::bounded(1);
        stops.push(stop_tx);
        let handle = std::thread::Builder::new()
            .name(format!("berth-core-{core}"))
            .spawn(move || run_loop(core, listener, options, ready, stop_rx))
            .map_err(|source| ServeError::Runtime { core, source })?;
        handles.push(handle);
    }
    watch_signals(stops, options.drain_timeout)?;
    drop(ready_tx);
    let mut drivers = Vec::new();
    for started in ready_rx {
        drivers.push(started?);
    }
    let driver = if drivers.iter().all(|d| *d == DriverType::IoUring) {
        "io_uring"
    } else {
        "poll (epoll)"
    };
    log::info!(
        "berth listening on {addr} ({}) with {} event loops, driver {driver}, data in {}",
        if options.tls.is_some() {
            "https"
        } else {
            "http"
        },
        drivers.len(),
        options.engine.root().display()
    );
    for handle in handles {
        let _ = handle.join();
    }
    log::info!("berth stopped");
    Ok(())
}

/// Turns the first SIGTERM/SIGINT into a stop message for every loop; a
/// second one exits immediately.
fn watch_signals(stops: Vec<flume::Sender<()>>, drain_timeout: Duration) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|source| ServeError::Runtime { core: 0, source })?;
    std::thread::Builder::new()
        .name("berth-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    log::info!("SIGHUP: the TLS certificate and key are re-read at the next handshake");
                    crate::tls::request_reload();
                    continue;
                }
                seen += 1;
                if seen > 1 {
                    log::warn!("signal {signal} again: exiting without draining");
                    std::process::exit(1);
                }
                log::info!("signal {signal}: stopping; draining in-flight requests for up to {drain_timeout:?}");
                crate::conn::begin_shutdown();
                for stop in &stops {
                    let _ = stop.try_send(());
                }
            }
        })
        .map_err(|source| ServeError::Runtime { core: 0, source })?;
    Ok(())
}

/// Descriptors each event loop holds back to answer 503 when accept finds
/// none left.
const RESERVED_PER_LOOP: usize = 2;

fn run_loop(
    core: usize,
    listener: std::net::TcpListener,
    options: ServeOptions,
    ready: std::sync::mpsc::Sender<Result<DriverType, ServeError>>,
    stop: flume::Receiver<()>,
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
        let http_limits = options.http_limits;
        let ctx = Rc::new(Ctx { engine: options.engine, settings: options.settings, http_limits: options.http_limits, auth: options.auth.clone(), proxy: options.proxy.clone() });
        let busy = crate::conn::BusyCount::default();
        let listener = Rc::new(listener);
        let (accept_busy, accept_listener) = (busy.clone(), listener.clone());
        let limits = Rc::new(options.conn_settings.clone());
        let acceptor = options.tls.clone().map(compio::tls::TlsAcceptor::from);
        let open = Rc::new(std::cell::Cell::new(0usize));
        let reserve = match DescriptorReserve::new(RESERVED_PER_LOOP, limits.descriptors_reserved) {
            Ok(reserve) => Some(Rc::new(std::cell::RefCell::new(reserve))),
            Err(e) => {
                log::warn!("event loop {core}: {e}; accept backs off when descriptors run out");
                None
            }
        };
        let accept_loop = Box::pin(async move {
            let (busy, listener) = (accept_busy, accept_listener);
            loop {
                match crate::conn::accept(&listener, reserve.as_deref()).await {
                    Accepted::Refuse(stream, peer, why) => {
                        log::warn!("event loop {core}: answering {peer} 503: {why}");
                        let (ctx, limits, reserve) = (ctx.clone(), limits.clone(), reserve.clone());
                        compio::runtime::spawn(async move {
                            crate::conn::refuse_unavailable(Stream::Plain(stream), peer, &*ctx, why, &limits).await;
                            if let Some(reserve) = reserve {
                                reserve.borrow_mut().refill();
                            }
                        })
                        .detach();
                    }
                    Accepted::Serve(stream, peer) => {
                        if open.get() >= limits.connections_per_loop_max {
                            log::warn!("event loop {core}: {} connections open; refusing {peer}", open.get());
                            drop(stream);
                            continue;
                        }
                        open.set(open.get() + 1);
                        let (ctx, busy, limits, open) = (ctx.clone(), busy.clone(), limits.clone(), open.clone());
                        let acceptor = acceptor.clone();
                        compio::runtime::spawn(async move {
                            let stream = match acceptor {
                                None => Some(Stream::Plain(stream)),
                                Some(acceptor) => {
                                    let _ = stream.set_nodelay(true);
                                    match compio::time::timeout(limits.head_read_timeout, acceptor.accept(stream)).await {
                                        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
                                        Ok(Err(e)) => {
                                            log::info!("{peer} TLS handshake failed: {e}");
                                            None
                                        }
                                        Err(_) => {
                                            log::info!("{peer} TLS handshake timed out");
                                            None
                                        }
                                    }
                                }
                            };
                            if let Some(stream) = stream {
                                crate::conn::serve(stream, peer, ctx, busy, limits, http_limits).await;
                            }
                            open.set(open.get().saturating_sub(1));
                        })
                        .detach();
                    }
                    Accepted::Failed(e) => {
                        // Out of descriptors with no reserve left, or
                        // another failure: back off instead of spinning.
                        log::warn!("event loop {core}: accept failed: {e}");
                        compio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let stopped = Box::pin(stop.recv_async());
        drop(futures_util::future::select(accept_loop, stopped).await);
        // Close the listener now (not when the loop ends) so new connections
        // are refused while in-flight requests drain.
        match Rc::try_unwrap(listener) {
            Ok(listener) => {
                if let Err(e) = listener.close().await {
                    log::warn!("event loop {core}: closing the listener failed: {e}");
                }
            }
            Err(_) => log::warn!("event loop {core}: listener still shared; it closes after the drain"),
        }
        let deadline = std::time::Instant::now() + options.drain_timeout;
        while busy.get() > 0 {
            if std::time::Instant::now() >= deadline {
                log::warn!("event loop {core}: {} requests still running after the drain timeout; closing them", busy.get());
                break;
            }
            compio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn a_port_held_by_reuseport_listeners_is_not_joined() {
        let first = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("addr");
        assert!(
            bind_reuseport(addr).is_ok(),
            "the kernel lets a second SO_REUSEPORT listener join: the probe is needed"
        );
        let error = ensure_port_free(addr).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("in use")),
            "{error:?}"
        );
        drop(first);
    }
}
