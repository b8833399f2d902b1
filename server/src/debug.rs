//! The debug listener (`http.debug.addr`, as registry:2): `GET
//! /debug/health`, `GET /debug/metrics` and, with
//! `http.debug.prometheus.enabled`, the metrics again at
//! `http.debug.prometheus.path`. Never on the public port.
//!
//! A small blocking server on its own threads, apart from the event loops,
//! so it keeps answering when they are busy or stuck. Debug traffic is tiny:
//! one request per connection (`Connection: close`), at most
//! [`CONNECTIONS_MAX`] at once (more are closed at once), and a client that
//! has not sent its request head within [`CLIENT_TIMEOUT`] is cut.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::Engine;
use berth_http::{Method, ResponseHead};

use crate::health::Health;
use crate::proxy::Proxy;

pub use crate::config::DebugConfig;

/// Connections served at once; more are closed without an answer.
pub const CONNECTIONS_MAX: usize = 8;
/// How long a client has to send its request head and read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const HEAD_BYTES_MAX: usize = 8 * 1024;

/// What the debug endpoints report on.
pub struct DebugService {
    /// The store (for its gauges).
    pub engine: Arc<Engine>,
    /// The pull-through cache, when configured (its counters).
    pub proxy: Option<Arc<Proxy>>,
    /// The storage health verdict.
    pub health: Arc<Health>,
    /// `http.debug.prometheus.path` when `http.debug.prometheus.enabled`.
    pub prometheus_path: Option<String>,
}

/// One answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (sent for GET, not for HEAD).
    pub body: Vec<u8>,
}

impl DebugService {
    /// The answer to `method` on `target` (a raw request-target). Reads
    /// memory only: health is the background probe's last verdict.
    pub fn answer(&self, method: &Method, target: &str) -> Answer {
        let path = target.split(['?', '#']).next().unwrap_or("");
        let text = |status, body: &str| Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        };
        let is_metrics = path == "/debug/metrics" || self.prometheus_path.as_deref() == Some(path);
        if path != "/debug/health" && !is_metrics {
            return text(404, "404 page not found\n");
        }
        if !matches!(method, Method::Get | Method::Head) {
            return text(405, "method not allowed\n");
        }
        if is_metrics {
            return Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                body: crate::metrics::render(
                    &self.engine,
                    self.proxy.as_deref(),
                    Some(&self.health),
                )
                .into_bytes(),
            };
        }
        let (status, body) = self.health.report();
        Answer {
            status,
            content_type: "application/json; charset=utf-8",
            body: body.to_string().into_bytes(),
        }
    }
}

/// Binds the debug listener's socket (at start, so a busy port stops it).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves `listener` on its own threads for the rest of the process.
pub fn spawn(listener: TcpListener, service: Arc<DebugService>) -> std::io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("berth-debug".into())
        .spawn(move || accept_loop(listener, service, active))?;
    Ok(())
}

fn accept_loop(listener: TcpListener, service: Arc<DebugService>, active: Arc<AtomicUsize>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("debug listener: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let (service, done) = (service.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("berth-debug-conn".into())
            .spawn(move || {
                if let Err(e) = serve_one(stream, &service) {
                    log::debug!("debug listener: {e}");
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            log::warn!("debug listener: cannot start a connection thread: {e}");
        }
    }
}

/// Reads one request head (within [`CLIENT_TIMEOUT`]), answers, closes.
fn serve_one(mut stream: TcpStream, service: &DebugService) -> std::io::Result<()> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let limits = berth_http::Limits {
        head_bytes_max: HEAD_BYTES_MAX,
        ..berth_http::Limits::default()
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (answer, head_only) = loop {
        match berth_http::parse_request_head(&buf, &limits) {
            Ok(Some((head, _))) => {
                break (
                    service.answer(&head.method, &head.target),
                    head.method == Method::Head,
                )
            }
            Ok(None) if buf.len() < HEAD_BYTES_MAX => {}
            Ok(None) | Err(_) => {
                let bad = Answer {
                    status: 400,
                    content_type: "text/plain; charset=utf-8",
                    body: b"bad request\n".to_vec(),
                };
                break (bad, false);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client too slow to send its request",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut out = Vec::with_capacity(256 + answer.body.len());
    ResponseHead::new(answer.status)
        .header("Content-Type", answer.content_type)
        .header("Content-Length", answer.body.len().to_string())
        .header("Connection", "close")
        .encode(&mut out);
    if !head_only {
        out.extend_from_slice(&answer.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthConfig;

    fn service(prometheus_path: Option<&str>) -> (DebugService, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Engine::open(dir.path()).expect("open the store"));
        let health = Arc::new(Health::new(
            HealthConfig {
                enabled: true,
                interval: Duration::from_secs(3600),
                threshold: 1,
                free_bytes_min: 0,
            },
            dir.path(),
        ));
        let service = DebugService {
            engine,
            proxy: None,
            health,
            prometheus_path: prometheus_path.map(str::to_owned),
        };
        (service, dir)
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("send");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn routes_health_metrics_and_the_prometheus_path() {
        let (service, _dir) = service(Some("/metrics"));
        let get = Method::Get;
        assert_eq!(service.answer(&get, "/debug/health").status, 200);
        assert_eq!(service.answer(&get, "/debug/health").body, b"{}");
        let metrics = service.answer(&get, "/debug/metrics?x=1");
        assert_eq!(metrics.status, 200);
        let text = String::from_utf8(metrics.body).expect("utf-8");
        assert!(text.contains("berth_manifest_cache_bytes "), "{text}");
        assert!(text.contains("berth_health_probe_writes_total "), "{text}");
        assert_eq!(service.answer(&get, "/metrics").status, 200);
        assert_eq!(service.answer(&get, "/v2/").status, 404);
        assert_eq!(service.answer(&Method::Post, "/debug/health").status, 405);
        let (without, _dir) = self::service(None);
        assert_eq!(without.answer(&get, "/metrics").status, 404);
    }

    #[test]
    fn health_answers_the_probes_verdict_without_probing() {
        let (service, dir) = service(None);
        // No probe has run: healthy, and nothing was written.
        let before = std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count();
        for _ in 0..20 {
            assert_eq!(service.answer(&Method::Get, "/debug/health").status, 200);
        }
        assert!(service
            .health
            .render_metrics()
            .contains("berth_health_probe_writes_total 0"));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            before
        );
        service.health.record(vec![crate::health::Failure {
            check: crate::health::CHECK_FREE_SPACE,
            reason: "0 bytes free".into(),
        }]);
        let answer = service.answer(&Method::Get, "/debug/health");
        assert_eq!(answer.status, 503);
        assert_eq!(
            answer.body,
            br#"{"storagedriver_freespace":"0 bytes free"}"#
        );
    }

    #[test]
    fn serves_over_tcp_and_cuts_slow_clients() {
        let (service, _dir) = service(None);
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        spawn(listener, Arc::new(service)).expect("spawn");
        let answer = get(addr, b"GET /debug/health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("\r\n\r\n{}"), "{answer}");
        let head = get(addr, b"HEAD /debug/metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404 "));
        // A client that never finishes its head is closed after the timeout,
        // and the listener still answers meanwhile.
        let mut slow = TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /debug/hea").expect("send");
        let t0 = Instant::now();
        let answer = get(addr, b"GET /debug/health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        slow.set_read_timeout(Some(CLIENT_TIMEOUT * 3))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        let waited = t0.elapsed();
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            waited >= CLIENT_TIMEOUT / 2 && waited < CLIENT_TIMEOUT * 2,
            "cut after {waited:?}"
        );
    }

    #[test]
    fn connections_beyond_the_cap_are_closed() {
        let (service, _dir) = service(None);
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        spawn(listener, Arc::new(service)).expect("spawn");
        let held: Vec<TcpStream> = (0..CONNECTIONS_MAX)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"G").expect("send");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(addr).expect("connect");
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = extra.write_all(b"GET /debug/health HTTP/1.1\r\n\r\n");
        let mut out = Vec::new();
        let _ = extra.read_to_end(&mut out);
        assert!(
            out.is_empty(),
            "answered past the cap: {}",
            String::from_utf8_lossy(&out)
        );
        drop(held);
    }
}
