//! SIGTERM drains: the listener closes, a request already in flight (an
//! upload whose body is still arriving) completes and is durable, and the
//! process then exits on its own.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_tests::http::request;
use berth_tests::registry::{Registry, RegistryCommand};
use sha2::{Digest as _, Sha256};

fn wait_for_log(r: &Registry, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if r.log_tail(80).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn sigterm_finishes_an_upload_in_flight_then_exits() {
    let command = RegistryCommand::from_env();
    if !command.is_berth {
        return; // berth's own shutdown protocol and log lines
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut r = Registry::start_with(command, &dir.path().join("data"));
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 211) as u8).collect();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let mut stream = std::net::TcpStream::connect(r.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST /v2/drain/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&data[..100_000]).expect("first part");
    std::thread::sleep(Duration::from_millis(200));

    let pid = r.pid().expect("pid") as i32;
    // libc::kill takes plain integers; nothing is dereferenced.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_for_log(&r, "draining", Duration::from_secs(5)),
        "{}",
        r.log_tail(20)
    );
    // New connections are no longer accepted.
    std::thread::sleep(Duration::from_millis(200));
    let refused = std::net::TcpStream::connect(r.addr());
    assert!(
        refused.is_err(),
        "the listener is still open during the drain"
    );

    stream
        .write_all(&data[100_000..])
        .expect("rest of the body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("Connection: close"), "{response}");
    assert!(
        wait_for_log(&r, "berth stopped", Duration::from_secs(10)),
        "{}",
        r.log_tail(20)
    );
    assert!(
        wait_for_log(&r, "index snapshot written", Duration::from_secs(5)),
        "{}",
        r.log_tail(20)
    );

    r.restart(); // reaps the exited process, starts again on the same data
    let blob = request(
        "GET",
        &r.url(&format!("/v2/drain/blobs/{digest}")),
        &[],
        None,
    );
    assert!(
        blob.status == 200 && blob.body == data,
        "the drained upload is not durable"
    );
}
