//! Timeouts and the connection cap (`http.limits.*`): a slow head gets 408,
//! an idle keep-alive connection is closed, a stalled upload is cut without
//! harming anyone else, and connections past the cap are refused. An
//! unauthenticated huge body is answered without being read, and running
//! out of descriptors gives 503, not a hang.

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

/// Writes a body of `declared` bytes after `head` from another thread,
/// 64 KiB at a time, until the server closes the connection; answers the
/// bytes it managed to write.
fn send_until_closed(stream: &TcpStream, declared: u64) -> std::thread::JoinHandle<u64> {
    let mut writer = stream.try_clone().expect("clone");
    std::thread::spawn(move || {
        let piece = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < declared {
            match writer.write(&piece) {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n as u64,
            }
        }
        sent
    })
}

/// Reads a response head (to its blank line) within `within`.
fn response_head(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn an_unauthenticated_huge_body_gets_401_and_is_not_read() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let htpasswd = dir.path().join("htpasswd");
    let out = std::process::Command::new(berth_tests::registry::berth_binary())
        .args(["htpasswd", "-Bbn", "user", "secret"])
        .output()
        .expect("berth htpasswd");
    std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
    command.with_htpasswd(&htpasswd);
    command.ready_log_line = Some("berth listening".into());
    let r = Registry::start_with(command, &dir.path().join("data"));
    for method in ["PATCH", "PUT"] {
        let mut stream = TcpStream::connect(r.addr()).expect("connect");
        let declared = 1u64 << 30;
        let head = format!(
            "{method} /v2/a/blobs/uploads/0f6e3c6a-5d4b-4b8e-9c1a-2b3c4d5e6f70?digest=sha256:{} HTTP/1.1\r\n\
             Host: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n",
            "0".repeat(64),
            r.addr()
        );
        stream.write_all(head.as_bytes()).expect("head");
        let started = Instant::now();
        let writer = send_until_closed(&stream, declared);
        let answer = response_head(&mut stream, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 401"), "{method}: {answer}");
        assert!(answer.contains("Connection: close"), "{method}: {answer}");
        let sent = writer.join().expect("writer");
        eprintln!(
            "{method}: the client wrote {sent} bytes of a 1 GiB body before the close ({:?})",
            started.elapsed()
        );
        // 64 KiB discarded + 64 KiB while lingering, a read buffer each,
        // and the two kernels' socket buffers: far under the 64 MiB read
        // before the discard was bounded.
        assert!(sent < 8 << 20, "{method}: the client wrote {sent} bytes");
        assert!(started.elapsed() < Duration::from_secs(5), "{method}");
    }
}

#[test]
fn out_of_descriptors_a_request_gets_503_not_a_hang_and_recovers() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    // Run berth under a low descriptor limit (prlimit execs it: same pid).
    let program = std::mem::replace(&mut command.program, "prlimit".into());
    let mut args = vec!["--nofile=128:128".to_owned(), "--".to_owned()];
    args.push(program.display().to_string());
    args.append(&mut command.args);
    command.args = args;
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start_with(command, &dir.path().join("data"));
    let mut idle = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let mut stream = TcpStream::connect(r.addr()).expect("connect");
        let started = Instant::now();
        let get = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", r.addr());
        stream.write_all(get.as_bytes()).expect("request");
        let (text, _) = read_response(&mut stream, Duration::from_secs(5));
        assert!(
            !text.is_empty(),
            "no answer (a hang) after {} connections",
            idle.len()
        );
        if text.starts_with("HTTP/1.1 503") {
            refused = Some((text, started.elapsed()));
            break;
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        idle.push(stream);
    }
    let (text, took) = refused.expect("no 503 within 200 connections under 128 descriptors");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.contains("\"UNAVAILABLE\""), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The idle connections go: requests are served again.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = request("GET", &r.url("/v2/"), &[], None).status;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the idle connections closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads one response (head and a Content-Length body) within `within`.
fn read_response(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let head = response_head(stream, within);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let complete = stream.read_exact(&mut body).is_ok();
    (head + &String::from_utf8_lossy(&body), complete)
}

#[test]
fn a_trickling_upload_is_cut_and_a_fast_one_is_not() {
    let Some((r, _dir)) = start(&[
        ("REGISTRY_HTTP_LIMITS_BODYBYTESPERSECONDMIN", "1024"),
        ("REGISTRY_HTTP_LIMITS_BODYRATEWINDOWMS", "2000"),
    ]) else {
        return;
    };
    let digest = format!("sha256:{}", "0".repeat(64));
    let head = format!(
        "POST /v2/trickle/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    );
    // One byte every 100 ms: progress, but ten times under the minimum.
    let mut slow = TcpStream::connect(r.addr()).expect("connect");
    slow.write_all(head.as_bytes()).expect("head");
    let started = Instant::now();
    let mut writer = slow.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for _ in 0..1000 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (text, closed) = read_until_close(&mut slow, Duration::from_secs(10));
    assert!(closed, "the trickle was not cut: {text}");
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
    trickle.join().expect("trickle");
    // A client sending 64 KiB every 100 ms (64 times the minimum) for
    // three seconds, longer than a window, is served.
    let body: Vec<u8> = (0..30 * 64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
    };
    let mut fast = TcpStream::connect(r.addr()).expect("connect");
    let head = format!(
        "POST /v2/fast/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    fast.write_all(head.as_bytes()).expect("head");
    for piece in body.chunks(64 * 1024) {
        fast.write_all(piece).expect("a fast body is not cut");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = response_head(&mut fast, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}
