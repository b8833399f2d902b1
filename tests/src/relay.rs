//! A fault-injecting TCP relay between a pull-through cache and its
//! upstream: forwards bytes both ways, and on command throttles the
//! upstream-to-client direction, cuts every connection after a byte budget
//! (an upstream dying mid-transfer), or flips one byte (an upstream serving
//! wrong bytes). It knows nothing of HTTP.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Faults {
    /// Upstream-to-client bytes per second; 0 = unthrottled.
    rate: AtomicU64,
    /// Bytes still forwarded before every connection is cut; negative = no cut.
    cut_budget: AtomicI64,
    /// Downstream bytes until the one that is flipped; negative = none.
    corrupt_in: AtomicI64,
    /// Refuse (close) every new connection.
    refuse: AtomicBool,
}

/// A running relay on a loopback port. Threads end with the process.
pub struct Relay {
    port: u16,
    faults: Arc<Faults>,
    /// When the last upstream-to-client byte was forwarded.
    last_forward: Arc<Mutex<Option<Instant>>>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    forwarded: Arc<AtomicU64>,
}

impl Relay {
    /// Relays a new loopback port to `target` (`host:port`).
    pub fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let port = listener.local_addr().expect("relay addr").port();
        let faults = Arc::new(Faults::default());
        faults.cut_budget.store(-1, Ordering::SeqCst);
        faults.corrupt_in.store(-1, Ordering::SeqCst);
        let relay = Relay {
            port,
            faults,
            last_forward: Arc::new(Mutex::new(None)),
            connections: Arc::new(Mutex::new(Vec::new())),
            forwarded: Arc::new(AtomicU64::new(0)),
        };
        let (faults, last, conns, forwarded) = (
            relay.faults.clone(),
            relay.last_forward.clone(),
            relay.connections.clone(),
            relay.forwarded.clone(),
        );
        let target = target.to_owned();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if faults.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut c = conns.lock().expect("relay lock");
                    c.extend(client.try_clone().ok());
                    c.extend(server.try_clone().ok());
                }
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                thread::spawn(move || pump_plain(c2, s2));
                let (faults, last, conns, forwarded) = (
                    faults.clone(),
                    last.clone(),
                    conns.clone(),
                    forwarded.clone(),
                );
                thread::spawn(move || {
                    pump_faulty(server, client, &faults, &last, &conns, &forwarded)
                });
            }
        });
        relay
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Limits upstream-to-client bytes per second (0: unlimited).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.faults.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Cuts every connection once `bytes` more upstream bytes are forwarded.
    pub fn cut_after(&self, bytes: i64) {
        self.faults.cut_budget.store(bytes, Ordering::SeqCst);
    }

    /// Flips the upstream byte `bytes` from now.
    pub fn corrupt_after(&self, bytes: i64) {
        self.faults.corrupt_in.store(bytes, Ordering::SeqCst);
    }

    /// Refuses new connections and closes the open ones (upstream down).
    pub fn go_down(&self) {
        self.faults.refuse.store(true, Ordering::SeqCst);
        self.close_all();
    }

    /// Back to forwarding faithfully.
    pub fn heal(&self) {
        self.faults.refuse.store(false, Ordering::SeqCst);
        self.faults.rate.store(0, Ordering::SeqCst);
        self.faults.cut_budget.store(-1, Ordering::SeqCst);
        self.faults.corrupt_in.store(-1, Ordering::SeqCst);
    }

    /// Closes every relayed connection.
    pub fn close_all(&self) {
        close_all(&self.connections);
    }

    /// When the last upstream byte was forwarded.
    pub fn last_forward(&self) -> Option<Instant> {
        *self.last_forward.lock().expect("relay lock")
    }

    /// Upstream-to-client bytes forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
}

fn close_all(conns: &Mutex<Vec<TcpStream>>) {
    for c in conns.lock().expect("relay lock").drain(..) {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn pump_plain(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_faulty(
    mut from: TcpStream,
    mut to: TcpStream,
    faults: &Faults,
    last: &Mutex<Option<Instant>>,
    conns: &Mutex<Vec<TcpStream>>,
    forwarded: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let budget = faults.cut_budget.load(Ordering::SeqCst);
        let mut cut = false;
        let mut send = n;
        if budget >= 0 {
            send = send.min(budget as usize);
            faults.cut_budget.fetch_sub(send as i64, Ordering::SeqCst);
            cut = send < n || budget as usize == send;
        }
        let corrupt = faults.corrupt_in.load(Ordering::SeqCst);
        if corrupt >= 0 {
            if (corrupt as usize) < send {
                chunk[corrupt as usize] ^= 0x55;
                faults.corrupt_in.store(-1, Ordering::SeqCst);
            } else {
                faults.corrupt_in.fetch_sub(send as i64, Ordering::SeqCst);
            }
        }
        let rate = faults.rate.load(Ordering::SeqCst);
        if rate > 0 {
            thread::sleep(Duration::from_secs_f64(send as f64 / rate as f64));
        }
        if to.write_all(&chunk[..send]).is_err() {
            break;
        }
        forwarded.fetch_add(send as u64, Ordering::SeqCst);
        *last.lock().expect("relay lock") = Some(Instant::now());
        if cut {
            close_all(conns);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
