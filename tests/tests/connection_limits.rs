//! Timeouts and the connection cap (`http.limits.*`): a slow head gets 408,
//! an idle keep-alive connection is closed, a stalled upload is cut without
//! harming anyone else, and connections past the cap are refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use berth_tests::http::request;
use berth_tests::registry::{Registry, RegistryCommand};

fn start(extra: &[(&str, &str)]) -> Option<(Registry, tempfile::TempDir)> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None; // berth's own limit keys
    }
    for (k, v) in extra {
        command.env.push((k.to_string(), v.to_string()));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::start_with(command, &dir.path().join("data"));
    Some((registry, dir))
}

/// Reads until EOF or `within`; returns the bytes and whether EOF came.
fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        if Instant::now() > deadline {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&out).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[test]
fn a_slow_head_gets_408_and_an_idle_connection_is_closed() {
    let Some((r, _dir)) = start(&[
        ("REGISTRY_HTTP_LIMITS_HEADREADTIMEOUTMS", "500"),
        ("REGISTRY_HTTP_LIMITS_IDLETIMEOUTMS", "800"),
    ]) else {
        return;
    };
    let mut slow = TcpStream::connect(r.addr()).expect("connect");
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHo")
        .expect("partial head");
    let (text, closed) = read_until_close(&mut slow, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed);

    let mut idle = TcpStream::connect(r.addr()).expect("connect");
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let started = Instant::now();
    let (text, closed) = read_until_close(&mut idle, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200") && closed, "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_stalled_upload_is_cut_and_others_are_served() {
    let Some((r, _dir)) = start(&[("REGISTRY_HTTP_LIMITS_BODYPROGRESSTIMEOUTMS", "600")]) else {
        return;
    };
    let mut stalled = TcpStream::connect(r.addr()).expect("connect");
    let digest = format!("sha256:{}", "0".repeat(64));
    let head = format!("POST /v2/stall/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    stalled.write_all(head.as_bytes()).expect("head");
    stalled.write_all(&[7u8; 100]).expect("some body");
    // Meanwhile another client is served normally.
    assert_eq!(request("GET", &r.url("/v2/"), &[], None).status, 200);
    let (text, closed) = read_until_close(&mut stalled, Duration::from_secs(5));
    assert!(closed, "stalled upload was not cut: {text}");
    assert!(!text.contains("201"), "{text}");
    let catalog = request("GET", &r.url("/v2/_catalog"), &[], None).json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([]),
        "a cut upload must store nothing"
    );
}

#[test]
fn connections_past_the_cap_are_refused() {
    let Some((r, _dir)) = start(&[
        ("REGISTRY_RUNTIME_THREADS", "1"),
        ("REGISTRY_HTTP_LIMITS_CONNECTIONSPERLOOPMAX", "2"),
    ]) else {
        return;
    };
    // The harness's readiness probe has closed by now; give the loop a moment to count it out.
    std::thread::sleep(Duration::from_millis(200));
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(r.addr()).expect("connect"))
        .collect();
    for s in &mut held {
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).expect("response");
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    let mut extra = TcpStream::connect(r.addr()).expect("the kernel still completes the handshake");
    let _ = extra.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let (text, closed) = read_until_close(&mut extra, Duration::from_secs(5));
    assert!(
        closed && text.is_empty(),
        "third connection was served: {text}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        request("GET", &r.url("/v2/"), &[], None).status,
        200,
        "capacity did not come back"
    );
}

#[test]
fn header_count_and_target_length_limits_are_configurable() {
    let Some((r, _dir)) = start(&[
        ("REGISTRY_HTTP_LIMITS_HEADERSMAX", "5"),
        ("REGISTRY_HTTP_LIMITS_TARGETBYTESMAX", "64"),
    ]) else {
        return;
    };
    let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut s = TcpStream::connect(r.addr()).expect("connect");
    s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes())
        .expect("write");
    let (text, _) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let mut s = TcpStream::connect(r.addr()).expect("connect");
    s.write_all(format!("GET /v2/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100)).as_bytes())
        .expect("write");
    let (text, _) = read_until_close(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 414"), "{text}");
    assert_eq!(request("GET", &r.url("/v2/"), &[], None).status, 200);
}
