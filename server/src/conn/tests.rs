//! The connection loop against handlers written for the test: how much of
//! an unread body it reads, and how it cuts a body that is too slow.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::exchange::Response;

/// Reads the whole body: 200 with `X-Bytes`, or 400 with `X-Error`.
struct ReadsAll;

impl Handler for ReadsAll {
    async fn handle(&self, _: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        let mut n = 0usize;
        loop {
            match body.chunk().await {
                Ok(Some(piece)) => n += piece.len(),
                Ok(None) => return Response::new(200).header("X-Bytes", n.to_string()),
                Err(e) => return Response::new(400).header("X-Error", e.to_string()),
            }
        }
    }

    fn refusal(&self, _: Refusal) -> Response {
        Response::new(503)
    }
}

/// Answers 401 without reading the body.
struct Refuses;

impl Handler for Refuses {
    async fn handle(&self, _: &Request<'_>, _: &mut RequestBody<'_>) -> Response {
        Response::new(401)
    }

    fn refusal(&self, _: Refusal) -> Response {
        Response::new(503)
    }
}

/// Serves one connection with `handler` on its own event loop; answers
/// the address to connect to.
fn serve_one<H: Handler + Send + 'static>(handler: H, settings: ConnSettings) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let (stream, peer) = listener.accept().await.unwrap();
                serve(
                    Stream::Plain(stream),
                    peer,
                    Rc::new(handler),
                    BusyCount::default(),
                    Rc::new(settings),
                    Limits::default(),
                )
                .await;
                // A read cancelled at a timeout holds the socket until the
                // driver reaps it: keep the loop running so it closes.
                compio::time::sleep(Duration::from_secs(2)).await;
            })
    });
    rx.recv().unwrap()
}

/// Reads the response head (up to its blank line).
fn response_head(client: &mut TcpStream) -> String {
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes `body` from another thread, `piece` bytes every `every`, until
/// `total` or the connection fails; answers the bytes written.
fn write_in_pieces(
    client: &TcpStream,
    piece: usize,
    every: Duration,
    total: u64,
) -> std::thread::JoinHandle<u64> {
    let mut writer = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sent = 0u64;
        let buf = vec![b'x'; piece];
        while sent < total {
            let n = piece.min((total - sent) as usize);
            if writer.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
            if !every.is_zero() {
                std::thread::sleep(every);
            }
        }
        sent
    })
}

#[test]
fn an_early_answer_reads_a_bounded_part_of_a_huge_body_then_closes() {
    let settings = ConnSettings {
        discard_body_bytes_max: 64 * 1024,
        ..ConnSettings::default()
    };
    let addr = serve_one(Refuses, settings);
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1073741824\r\n\r\n")
        .unwrap();
    let writer = write_in_pieces(&client, 64 * 1024, Duration::ZERO, 1 << 30);
    let head = response_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    let sent = writer.join().unwrap();
    // What the server read (64 KiB + a read buffer while draining, as much
    // again while lingering) plus what the two kernels buffer.
    assert!(
        sent < 16 << 20,
        "the client sent {sent} bytes before the close"
    );
}

#[test]
fn a_trickling_body_is_cut_after_the_rate_window() {
    let settings = ConnSettings {
        body_bytes_per_second_min: 1024,
        body_rate_window: Duration::from_secs(2),
        ..ConnSettings::default()
    };
    let addr = serve_one(ReadsAll, settings);
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let writer = write_in_pieces(&client, 1, Duration::from_millis(100), 100_000);
    let head = response_head(&mut client);
    let cut_after = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("too slow"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        cut_after >= Duration::from_millis(1900) && cut_after < Duration::from_secs(5),
        "{cut_after:?}"
    );
    // The connection closes (after a bounded linger): the trickle stops.
    let sent = writer.join().unwrap();
    assert!(sent < 100, "{sent} bytes trickled before the close");
}

#[test]
fn a_body_faster_than_the_minimum_is_not_cut() {
    let settings = ConnSettings {
        body_bytes_per_second_min: 1024,
        body_rate_window: Duration::from_secs(1),
        ..ConnSettings::default()
    };
    let addr = serve_one(ReadsAll, settings);
    let mut client = TcpStream::connect(addr).unwrap();
    let total = 30 * 1024u64;
    client
        .write_all(
            format!("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    // 10 KiB/s, ten times the minimum, for three windows.
    let writer = write_in_pieces(&client, 1024, Duration::from_millis(100), total);
    let head = response_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("X-Bytes: {total}")), "{head}");
    assert_eq!(writer.join().unwrap(), total);
}

#[test]
fn the_rate_minimum_can_be_turned_off() {
    let settings = ConnSettings {
        body_bytes_per_second_min: 0,
        body_rate_window: Duration::from_millis(300),
        ..ConnSettings::default()
    };
    let addr = serve_one(ReadsAll, settings);
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .write_all(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n")
        .unwrap();
    let writer = write_in_pieces(&client, 1, Duration::from_millis(100), 12);
    let head = response_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Bytes: 12"), "{head}");
    writer.join().unwrap();
}

/// The server half of [`out_of_descriptors_accept_still_answers_503`]: it
/// lowers the descriptor limit of its whole process, so it runs only in
/// the child process that test starts.
#[test]
#[ignore = "run in a child process by out_of_descriptors_accept_still_answers_503"]
fn child_accepts_with_no_descriptors_left() {
    use std::cell::RefCell;
    use std::io::ErrorKind;
    if std::env::var_os("BERTH_TEST_EMFILE_CHILD").is_none() {
        return;
    }
    let nofile = rustix::process::Resource::Nofile;
    let mut limit = rustix::process::getrlimit(nofile);
    limit.current = Some(128);
    rustix::process::setrlimit(nofile, limit).unwrap();
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reserve = RefCell::new(DescriptorReserve::new(2, 0).unwrap());
        let mut hog = Vec::new();
        let exhausted = loop {
            match std::fs::File::open("/dev/null") {
                Ok(file) => hog.push(file),
                Err(e) => break e,
            }
        };
        assert!(DescriptorReserve::is_exhaustion(&exhausted), "{exhausted}");
        assert_ne!(exhausted.kind(), ErrorKind::NotFound);
        println!("PORT={}", listener.local_addr().unwrap().port());
        match accept(&listener, Some(&reserve)).await {
            Accepted::Refuse(stream, peer, why) => {
                assert!(why.contains("out of file descriptors"), "{why}");
                let settings = ConnSettings::default();
                refuse_unavailable(Stream::Plain(stream), peer, &Refuses, why, &settings).await;
            }
            Accepted::Serve(..) => panic!("served with no descriptors left"),
            Accepted::Failed(e) => panic!("accept failed: {e}"),
        }
        // A cancelled read may hold the socket until the driver reaps it.
        compio::time::sleep(Duration::from_millis(300)).await;
        drop(hog);
        reserve.borrow_mut().refill();
        assert_eq!(reserve.borrow().held(), 2);
    });
}

#[test]
fn out_of_descriptors_accept_still_answers_503() {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "conn::tests::child_accepts_with_no_descriptors_left",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BERTH_TEST_EMFILE_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        // The harness's "test ... " has no newline before it.
        .find_map(|line| {
            line.split_once("PORT=")
                .map(|(_, port)| port.trim().to_owned())
        })
        .expect("the child reports its port");
    let mut client = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    let started = Instant::now();
    client
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let head = response_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Read the child's output to its end (it fails writing to a closed pipe).
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        child.wait().unwrap().success(),
        "the child test failed: {rest:?}"
    );
}
