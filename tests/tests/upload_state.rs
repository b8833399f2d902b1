//! Upload sessions across restarts and `http.secret`: a Location issued by a
//! registry keeps working after a restart with the same secret (configured
//! or generated), and is refused clearly when signed with another secret.

use berth_tests::http::request;
use berth_tests::registry::{Registry, RegistryCommand};
use sha2::{Digest as _, Sha256};

fn start(dir: &std::path::Path, secret: Option<&str>) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    if let Some(secret) = secret {
        command
            .env
            .push(("REGISTRY_HTTP_SECRET".into(), secret.into()));
    }
    Some(Registry::start_with(command, dir))
}

fn patch(location: &str, start: usize, data: &[u8]) -> berth_tests::http::HttpResponse {
    let range = format!("{}-{}", start, start + data.len() - 1);
    request("PATCH", location, &[("Content-Range", &range)], Some(data))
}

#[test]
fn sessions_resume_after_restart_with_the_same_secret() {
    for secret in [Some("shared-secret"), None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let Some(mut r) = start(dir.path(), secret) else {
            return;
        };
        let started = request("POST", &r.url("/v2/resume/blobs/uploads/"), &[], None);
        let location = started.header("Location").expect("Location").to_owned();
        assert!(location.contains("_state="), "{location}");
        assert_eq!(patch(&location, 0, b"first half, ").status, 202);
        r.restart();
        let status = request("GET", &location, &[], None);
        assert_eq!(
            (status.status, status.header("Range")),
            (204, Some("0-11")),
            "secret {secret:?}"
        );
        let location = status.header("Location").expect("Location").to_owned();
        assert_eq!(patch(&location, 12, b"second half").status, 202);
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"first half, second half"))
        );
        let done = request("PUT", &format!("{location}&digest={digest}"), &[], None);
        assert_eq!(done.status, 201, "{}", done.text());
    }
}

#[test]
fn state_signed_with_another_secret_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut r) = start(dir.path(), Some("secret-one")) else {
        return;
    };
    let started = request("POST", &r.url("/v2/lb/blobs/uploads/"), &[], None);
    let location = started.header("Location").expect("Location").to_owned();
    r.stop();
    let Some(r2) = start(dir.path(), Some("secret-two")) else {
        return;
    };
    let moved = location.replace(&r.addr(), &r2.addr());
    let res = patch(&moved, 0, b"data");
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("http.secret"),
        "{body}"
    );
    // A tampered token is refused the same way; nothing was appended.
    let tampered = moved.replace("_state=", "_state=x");
    assert_eq!(patch(&tampered, 0, b"data").status, 400);
    let path_only = moved.split('?').next().expect("path").to_owned();
    assert_eq!(
        request("GET", &path_only, &[], None).header("Range"),
        Some("0-0")
    );
}

#[test]
fn idle_uploads_are_purged() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    for (k, v) in [
        ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "1s"),
        ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL", "1s"),
    ] {
        command.env.push((k.into(), v.into()));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start_with(command, dir.path());
    let started = request("POST", &r.url("/v2/purge/blobs/uploads/"), &[], None);
    let location = started.header("Location").expect("Location").to_owned();
    assert_eq!(patch(&location, 0, b"abandoned").status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while request("GET", &location, &[], None).status != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle upload was never purged: {}",
            r.log_tail(10)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        r.log_tail(30).contains("upload purging: removed 1"),
        "{}",
        r.log_tail(10)
    );
}

/// Splits an absolute `http://host:port/path?query` into its address and
/// request target.
fn address_and_target(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// Location");
    let slash = rest.find('/').expect("a path");
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// Sends `PATCH` with `head_fields` and then `body_bytes` verbatim over a
/// fresh connection; with `read_answer`, returns the status line, else
/// closes the connection right after the bytes (a client gone mid-body).
fn raw_patch(url: &str, head_fields: &str, body_bytes: &[u8], read_answer: bool) -> String {
    use std::io::{Read, Write};
    let (address, target) = address_and_target(url);
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    let head = format!("PATCH {target} HTTP/1.1\r\nHost: {address}\r\n{head_fields}\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body_bytes).expect("send body");
    if !read_answer {
        return String::new();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read answer");
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Large bodies go through berth's receive/hash/write pipeline (aligned
/// blocks, direct I/O): a chunked-encoded body starting mid-page lands
/// byte for byte, a body cut off midway keeps exactly the bytes that
/// arrived, and the client resumes from the Range the server reports.
#[test]
fn large_bodies_stream_through_the_pipeline_and_a_cut_one_keeps_what_arrived() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(r) = start(dir.path(), None) else {
        return;
    };
    let data: Vec<u8> = (0..9 * 1024 * 1024 + 4321)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = request("POST", &r.url("/v2/piped/blobs/uploads/"), &[], None);
    let location = started.header("Location").expect("Location").to_owned();
    // A small first chunk, so the large one starts at an unaligned offset.
    assert_eq!(patch(&location, 0, &data[..1000]).status, 202);

    // 3 MiB in HTTP chunked encoding (length unknown up front).
    let status = request("GET", &location, &[], None);
    let location = status.header("Location").expect("Location").to_owned();
    let second_end = 1000 + 3 * 1024 * 1024;
    let mut chunked = Vec::new();
    for piece in data[1000..second_end].chunks(65_521) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_patch(&location, "Transfer-Encoding: chunked\r\n", &chunked, true);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        answer.contains(&format!("Range: 0-{}\r\n", second_end - 1)),
        "{answer}"
    );

    // A body declared as everything left, cut off after 2 MiB + 123 bytes.
    let status = request("GET", &location, &[], None);
    let location = status.header("Location").expect("Location").to_owned();
    let cut_end = second_end + 2 * 1024 * 1024 + 123;
    let declared = format!("Content-Length: {}\r\n", data.len() - second_end);
    raw_patch(&location, &declared, &data[second_end..cut_end], false);
    let expected_range = format!("0-{}", cut_end - 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let location = loop {
        let status = request("GET", &location, &[], None);
        if status.header("Range") == Some(expected_range.as_str()) {
            break status.header("Location").expect("Location").to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cut body was not kept up to what arrived: status {} Range {:?}, log: {}",
            status.status,
            status.header("Range"),
            r.log_tail(10)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };

    // The client resumes from there and commits; the blob is intact.
    assert_eq!(patch(&location, cut_end, &data[cut_end..]).status, 202);
    let status = request("GET", &location, &[], None);
    let location = status.header("Location").expect("Location").to_owned();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let done = request("PUT", &format!("{location}&digest={digest}"), &[], None);
    assert_eq!(done.status, 201, "{}", done.text());
    let blob = request(
        "GET",
        &r.url(&format!("/v2/piped/blobs/{digest}")),
        &[],
        None,
    );
    assert_eq!(blob.status, 200);
    assert!(
        blob.body == data,
        "the stored blob differs from what was pushed"
    );
    // The large bodies (3 MiB, then 2 MiB + 123, then the rest) went
    // through the pipeline; the small first chunk did not.
    assert_eq!(
        r.metric("berth_upload_bytes_piped_total"),
        (data.len() - 1000) as u64
    );
}

/// When every pipeline place is taken (four per core, at least eight), a
/// further large body is appended on the event loop instead, and lands
/// just as intact; the held bodies then finish through their pipelines.
#[test]
fn a_large_body_beyond_the_pipeline_bound_is_appended_directly() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(r) = start(dir.path(), None) else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let places = (4 * cores).max(8);
    let body_len = 2 * 1024 * 1024;
    let bodies: Vec<Vec<u8>> = (0..=places)
        .map(|k| {
            (0..body_len)
                .map(|i: usize| (i.wrapping_mul(31).wrapping_add(k * 7) >> 3) as u8)
                .collect()
        })
        .collect();
    let locations: Vec<String> = (0..=places)
        .map(|_| {
            let started = request("POST", &r.url("/v2/bound/blobs/uploads/"), &[], None);
            started.header("Location").expect("Location").to_owned()
        })
        .collect();
    // Take every place: send half of each body (more than one block, so
    // its pipeline starts) and hold the rest.
    let mut held = Vec::new();
    for (location, body) in locations.iter().zip(&bodies).take(places) {
        let (address, target) = address_and_target(location);
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        let head = format!(
            "PATCH {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {body_len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(&body[..body_len / 2]).expect("send half");
        held.push(stream);
    }
    let piped_so_far = || r.metric("berth_upload_bytes_piped_total");
    // Each held half (1 MiB: two whole 512 KiB blocks) has been written
    // through its pipeline; waiting for less let a late second block be
    // counted against the extra body below.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while piped_so_far() < (places * body_len / 2) as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the held bodies never started their pipelines: {}",
            r.log_tail(10)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let piped_before = piped_so_far();
    // One more large body: no place is free, so it is appended directly.
    let answer = raw_patch(
        &locations[places],
        &format!("Content-Length: {body_len}\r\n"),
        &bodies[places],
        true,
    );
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        answer.contains(&format!("Range: 0-{}\r\n", body_len - 1)),
        "{answer}"
    );
    assert_eq!(piped_so_far(), piped_before, "the extra body was piped");
    // The held bodies finish through their pipelines.
    for (stream, body) in held.iter_mut().zip(&bodies) {
        stream.write_all(&body[body_len / 2..]).expect("send rest");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 202");
    }
    // Every blob commits intact.
    for (location, body) in locations.iter().zip(&bodies) {
        let status = request("GET", location, &[], None);
        let location = status.header("Location").expect("Location");
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        let done = request("PUT", &format!("{location}&digest={digest}"), &[], None);
        assert_eq!(done.status, 201, "{}", done.text());
    }
}
