//! Start-up in-process, without spawning the binary: a `Server` built from a
//! `Config` on a temp dir serves `GET /v2/` on its port and health on its
//! debug listener, and stops cleanly on SIGTERM. Its own test binary,
//! because the signal goes to the whole process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use berth::config::Config;
use berth::server::Server;

/// One request on a fresh connection; the whole answer, or None if nothing
/// answers.
fn exchange(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn a_built_server_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = Config::load(
        None,
        [
            ("REGISTRY_HTTP_ADDR", addr.clone()),
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0".into()),
            ("REGISTRY_RUNTIME_THREADS", "1".into()),
            ("REGISTRY_HTTP_DRAINTIMEOUT", "1s".into()),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                dir.path().join("data").display().to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .expect("a valid configuration");
    let server = Server::build(config).expect("the start succeeds");
    let debug = server.debug_addr().expect("a debug listener").to_string();
    let running = std::thread::spawn(move || server.run());

    let t0 = Instant::now();
    let base = loop {
        if let Some(answer) = exchange(&addr, "/v2/") {
            break answer;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "GET /v2/ never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(base.starts_with("HTTP/1.1 200 "), "{base}");
    assert!(
        base.contains("Docker-Distribution-API-Version: registry/2.0"),
        "{base}"
    );
    let public = exchange(&addr, "/debug/health").expect("an answer");
    assert!(public.starts_with("HTTP/1.1 404 "), "{public}");
    let health = exchange(&debug, "/debug/health").expect("the debug listener answers");
    assert!(
        health.starts_with("HTTP/1.1 200 ") && health.ends_with("{}"),
        "{health}"
    );

    // The signal watcher is installed just after the loops start.
    std::thread::sleep(Duration::from_millis(300));
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .expect("SIGTERM to this process");
    let t0 = Instant::now();
    while !running.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "run() did not return after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let result = running.join().expect("run() did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        exchange(&addr, "/v2/").is_none(),
        "the listener is closed after run() returns"
    );
    assert!(
        dir.path().join("data/segments").exists(),
        "the store was opened where the configuration says"
    );
}
