//! The v2 API and the HTTP layer, driven over real sockets against the real
//! binary: push and pull flows, the spec's error codes and headers, and bad
//! input that must get a clear error and change nothing.

use std::time::Duration;

use berth_tests::http::{raw_exchange, request, HttpResponse};
use berth_tests::registry::{Registry, RegistryCommand};
use sha2::{Digest as _, Sha256};

fn start() -> (Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = RegistryCommand::from_env();
    command
        .env
        .push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    let registry = Registry::start_with(command, &dir.path().join("data"));
    (registry, dir)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn error_code(response: &HttpResponse) -> String {
    let body = response.json();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned()
}

/// The registry's log tail once it contains `needle` (the access log line is
/// written just after the response), or after 5 s.
fn log_with(r: &Registry, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = r.log_tail(50);
        if log.contains(needle) || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_api_header(response: &HttpResponse) {
    assert_eq!(
        response.header("Docker-Distribution-API-Version"),
        Some("registry/2.0"),
        "{response:?}"
    );
}

fn push_blob(r: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let url = r.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let res = request(
        "POST",
        &url,
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.header("Docker-Content-Digest"), Some(digest.as_str()));
    digest
}

fn manifest(config: &str, layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers
    }))
    .expect("json")
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn base_root_and_unknown_routes() {
    let (r, _dir) = start();
    let root = request("GET", &r.url("/"), &[], None);
    assert_eq!(root.status, 200);
    let base = request("GET", &r.url("/v2/"), &[], None);
    assert_eq!(base.status, 200);
    assert_api_header(&base);
    let unknown = request("GET", &r.url("/v2/nothing-here"), &[], None);
    assert_eq!(unknown.status, 404);
    assert_api_header(&unknown);
    assert!(!error_code(&unknown).is_empty());
    let missing_repo = request("GET", &r.url("/v2/none/tags/list"), &[], None);
    assert_eq!(
        (missing_repo.status, error_code(&missing_repo).as_str()),
        (404, "NAME_UNKNOWN")
    );
    assert_api_header(&missing_repo);
}

#[test]
fn chunked_upload_then_pull_by_tag_and_digest() {
    let (r, _dir) = start();
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let layer_digest = sha256(&layer);
    let start = request("POST", &r.url("/v2/team/app/blobs/uploads/"), &[], None);
    assert_eq!(start.status, 202);
    assert_eq!(start.header("Range"), Some("0-0"));
    assert!(start.header("Docker-Upload-UUID").is_some());
    let mut location = start.header("Location").expect("Location").to_owned();
    let mut offset = 0usize;
    for piece in layer.chunks(100_000) {
        let range = format!("{}-{}", offset, offset + piece.len() - 1);
        let res = request(
            "PATCH",
            &location,
            &[
                ("Content-Range", &range),
                ("Content-Type", "application/octet-stream"),
            ],
            Some(piece),
        );
        assert_eq!(res.status, 202, "{}", res.text());
        offset += piece.len();
        assert_eq!(
            res.header("Range"),
            Some(format!("0-{}", offset - 1).as_str())
        );
        location = res.header("Location").expect("Location").to_owned();
    }
    let status = request("GET", &location, &[], None);
    assert_eq!(
        (status.status, status.header("Range")),
        (204, Some("0-299999"))
    );
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = request(
        "PUT",
        &format!("{location}{sep}digest={layer_digest}"),
        &[],
        None,
    );
    assert_eq!(done.status, 201, "{}", done.text());
    assert_eq!(
        done.header("Docker-Content-Digest"),
        Some(layer_digest.as_str())
    );

    let config_digest = push_blob(&r, "team/app", b"{}");
    let body = manifest(&config_digest, &[(&layer_digest, layer.len())]);
    let put = request(
        "PUT",
        &r.url("/v2/team/app/manifests/v1"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&body),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let manifest_digest = sha256(&body);
    assert_eq!(
        put.header("Docker-Content-Digest"),
        Some(manifest_digest.as_str())
    );

    for reference in ["v1", manifest_digest.as_str()] {
        let got = request(
            "GET",
            &r.url(&format!("/v2/team/app/manifests/{reference}")),
            &[],
            None,
        );
        assert_eq!(got.status, 200);
        assert_eq!(got.body, body);
        assert_eq!(got.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(
            got.header("Docker-Content-Digest"),
            Some(manifest_digest.as_str())
        );
        let head = request(
            "HEAD",
            &r.url(&format!("/v2/team/app/manifests/{reference}")),
            &[],
            None,
        );
        assert_eq!(
            head.header("Content-Length"),
            Some(body.len().to_string().as_str())
        );
    }
    let blob = request(
        "GET",
        &r.url(&format!("/v2/team/app/blobs/{layer_digest}")),
        &[],
        None,
    );
    assert_eq!(blob.status, 200);
    assert!(blob.body == layer, "blob bytes differ");
    let head = request(
        "HEAD",
        &r.url(&format!("/v2/team/app/blobs/{layer_digest}")),
        &[],
        None,
    );
    assert_eq!(
        (head.status, head.header("Content-Length")),
        (200, Some("300000"))
    );
    // A blob is visible only in repositories that link it.
    let elsewhere = request(
        "GET",
        &r.url(&format!("/v2/other/blobs/{layer_digest}")),
        &[],
        None,
    );
    assert_eq!(
        (elsewhere.status, error_code(&elsewhere).as_str()),
        (404, "BLOB_UNKNOWN")
    );
    // Cross-repository mount links it without moving bytes.
    let mount = request(
        "POST",
        &r.url(&format!(
            "/v2/other/blobs/uploads/?mount={layer_digest}&from=team/app"
        )),
        &[],
        None,
    );
    assert_eq!(mount.status, 201);
    assert_eq!(
        request(
            "HEAD",
            &r.url(&format!("/v2/other/blobs/{layer_digest}")),
            &[],
            None
        )
        .status,
        200
    );
}

#[test]
fn wrong_digest_and_out_of_order_chunks_change_nothing() {
    let (r, _dir) = start();
    let wrong = sha256(b"other bytes");
    let res = request(
        "POST",
        &r.url(&format!("/v2/a/blobs/uploads/?digest={wrong}")),
        &[],
        Some(b"these bytes"),
    );
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "DIGEST_INVALID")
    );
    assert_api_header(&res);
    assert_eq!(
        request("HEAD", &r.url(&format!("/v2/a/blobs/{wrong}")), &[], None).status,
        404
    );
    let catalog = request("GET", &r.url("/v2/_catalog"), &[], None).json();
    assert_eq!(catalog["repositories"], serde_json::json!([]));

    let start = request("POST", &r.url("/v2/a/blobs/uploads/"), &[], None);
    let location = start.header("Location").expect("Location").to_owned();
    let first = request(
        "PATCH",
        &location,
        &[("Content-Range", "0-3")],
        Some(b"abcd"),
    );
    assert_eq!(first.status, 202);
    let gap = request(
        "PATCH",
        &location,
        &[("Content-Range", "10-13")],
        Some(b"efgh"),
    );
    assert_eq!(
        (gap.status, error_code(&gap).as_str()),
        (416, "RANGE_INVALID")
    );
    assert_eq!(gap.header("Range"), Some("0-3"));
    assert!(gap.header("Location").is_some());
    let repeat = request(
        "PATCH",
        &location,
        &[("Content-Range", "0-3")],
        Some(b"abcd"),
    );
    assert_eq!(repeat.status, 416);
    let sep = if location.contains('?') { '&' } else { '?' };
    let bad = request(
        "PUT",
        &format!("{location}{sep}digest={}", sha256(b"abce")),
        &[],
        None,
    );
    assert_eq!(
        (bad.status, error_code(&bad).as_str()),
        (400, "DIGEST_INVALID")
    );
    let good = request(
        "PUT",
        &format!("{location}{sep}digest={}", sha256(b"abcd")),
        &[],
        None,
    );
    assert_eq!(good.status, 201, "{}", good.text());
    let missing_digest = request("PUT", &location, &[], None);
    assert_eq!(
        missing_digest.status, 404,
        "the session is closed after commit"
    );
}

#[test]
fn manifests_are_validated_before_anything_is_stored() {
    let (r, _dir) = start();
    let config = push_blob(&r, "m", b"{}");
    let missing = sha256(b"never pushed");
    let body = manifest(&config, &[(&missing, 12)]);
    let res = request(
        "PUT",
        &r.url("/v2/m/manifests/t"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&body),
    );
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    assert_eq!(
        res.json()["errors"][0]["detail"]["digest"],
        missing.as_str()
    );
    let garbage = request(
        "PUT",
        &r.url("/v2/m/manifests/t"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(b"{not json"),
    );
    assert_eq!(
        (garbage.status, error_code(&garbage).as_str()),
        (400, "MANIFEST_INVALID")
    );
    let schema1 = br#"{"schemaVersion":1,"name":"m","tag":"t","fsLayers":[]}"#;
    let res = request("PUT", &r.url("/v2/m/manifests/t"), &[], Some(schema1));
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "MANIFEST_INVALID")
    );
    let good = manifest(&config, &[]);
    let wrong_digest = sha256(b"x");
    let res = request(
        "PUT",
        &r.url(&format!("/v2/m/manifests/{wrong_digest}")),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&good),
    );
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "DIGEST_INVALID")
    );
    let too_big = vec![b' '; 4 * 1024 * 1024 + 1];
    let res = request(
        "PUT",
        &r.url("/v2/m/manifests/big"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&too_big),
    );
    assert_eq!(res.status, 413);
    let tags = request("GET", &r.url("/v2/m/tags/list"), &[], None).json();
    assert_eq!(
        tags["tags"],
        serde_json::json!([]),
        "no tag was written by a refused manifest"
    );
}

#[test]
fn grammars_are_enforced() {
    let (r, _dir) = start();
    let res = request("GET", &r.url("/v2/UPPER/tags/list"), &[], None);
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "NAME_INVALID")
    );
    let res = request("GET", &r.url("/v2/a/blobs/sha256:xyz"), &[], None);
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "DIGEST_INVALID")
    );
    // A reference that is not a valid tag names nothing: 404 on reads (as the
    // conformance suite expects), 400 TAG_INVALID when pushing to it.
    let res = request(
        "GET",
        &r.url("/v2/a/manifests/.INVALID_MANIFEST_NAME"),
        &[],
        None,
    );
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    assert_eq!(
        request("HEAD", &r.url("/v2/a/manifests/-bad-tag"), &[], None).status,
        404
    );
    let res = request(
        "PUT",
        &r.url("/v2/a/manifests/-bad-tag"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(b"{}"),
    );
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "TAG_INVALID")
    );
    let res = request("GET", &r.url("/v2/a/blobs/uploads/not-a-uuid"), &[], None);
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    // Names may contain route words.
    let d = push_blob(&r, "x/blobs/manifests", b"odd name");
    assert_eq!(
        request(
            "HEAD",
            &r.url(&format!("/v2/x/blobs/manifests/blobs/{d}")),
            &[],
            None
        )
        .status,
        200
    );
}

#[test]
fn a_pulled_manifest_is_kept_in_memory_and_the_metrics_say_how_much() {
    let (r, _dir) = start();
    let config = push_blob(&r, "m", b"{}");
    let body = manifest(&config, &[]);
    let put = request(
        "PUT",
        &r.url("/v2/m/manifests/v1"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&body),
    );
    assert_eq!(put.status, 201);
    let cached = || r.metric("berth_manifest_cache_bytes") as usize;
    assert_eq!(cached(), 0);
    for _ in 0..2 {
        let got = request("GET", &r.url("/v2/m/manifests/v1"), &[], None);
        assert_eq!((got.status, &got.body), (200, &body));
    }
    assert_eq!(cached(), body.len());
}

#[test]
fn tags_paginate_with_link_and_deletes_work() {
    let (r, _dir) = start();
    let config = push_blob(&r, "p", b"{}");
    let body = manifest(&config, &[]);
    for tag in ["a", "b", "c", "d"] {
        let res = request(
            "PUT",
            &r.url(&format!("/v2/p/manifests/{tag}")),
            &[("Content-Type", OCI_MANIFEST)],
            Some(&body),
        );
        assert_eq!(res.status, 201);
    }
    let page = request("GET", &r.url("/v2/p/tags/list?n=2"), &[], None);
    assert_eq!(page.json()["tags"], serde_json::json!(["a", "b"]));
    let link = page.header("Link").expect("Link header");
    assert!(
        link.contains("last=b") && link.contains("rel=\"next\""),
        "{link}"
    );
    let rest = request("GET", &r.url("/v2/p/tags/list?n=2&last=b"), &[], None);
    assert_eq!(rest.json()["tags"], serde_json::json!(["c", "d"]));
    assert!(rest.header("Link").is_none());
    let bad = request("GET", &r.url("/v2/p/tags/list?n=-1"), &[], None);
    assert_eq!(
        (bad.status, error_code(&bad).as_str()),
        (400, "PAGINATION_NUMBER_INVALID")
    );

    assert_eq!(
        request("DELETE", &r.url("/v2/p/manifests/a"), &[], None).status,
        202
    );
    assert_eq!(
        request("GET", &r.url("/v2/p/manifests/a"), &[], None).status,
        404
    );
    let digest = sha256(&body);
    assert_eq!(
        request(
            "DELETE",
            &r.url(&format!("/v2/p/manifests/{digest}")),
            &[],
            None
        )
        .status,
        202
    );
    let tags = request("GET", &r.url("/v2/p/tags/list"), &[], None).json();
    assert_eq!(tags["tags"], serde_json::json!([]));
    assert_eq!(
        request(
            "DELETE",
            &r.url(&format!("/v2/p/blobs/{config}")),
            &[],
            None
        )
        .status,
        202
    );
    assert_eq!(
        request("HEAD", &r.url(&format!("/v2/p/blobs/{config}")), &[], None).status,
        404
    );
}

#[test]
fn deletes_are_refused_when_disabled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start(&dir.path().join("data"));
    let d = push_blob(&r, "z", b"keep me");
    let res = request("DELETE", &r.url(&format!("/v2/z/blobs/{d}")), &[], None);
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (405, "UNSUPPORTED")
    );
    assert_eq!(
        request("HEAD", &r.url(&format!("/v2/z/blobs/{d}")), &[], None).status,
        200
    );
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let (r, _dir) = start();
    let wait = Duration::from_secs(5);
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ] {
        let exchange = raw_exchange(&r.addr(), bad, false, wait);
        let response = exchange.response().unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(bad)));
        assert_eq!(response.status, 400, "{:?} -> {}", String::from_utf8_lossy(bad), exchange.text());
        assert!(exchange.closed, "connection left open after {:?}", String::from_utf8_lossy(bad));
    }
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let exchange = raw_exchange(&r.addr(), huge.as_bytes(), false, wait);
    assert_eq!(exchange.response().map(|r| r.status), Some(431));
    // Random bytes never take the server down.
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..50 {
        let len = (state % 300) as usize;
        let mut junk = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            junk.push(state as u8);
        }
        raw_exchange(&r.addr(), &junk, true, Duration::from_millis(500));
    }
    assert_eq!(
        request("GET", &r.url("/v2/"), &[], None).status,
        200,
        "server died: {}",
        r.log_tail(30)
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (r, _dir) = start();
    let two = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/nope/tags/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let exchange = raw_exchange(&r.addr(), two, false, Duration::from_secs(5));
    let text = exchange.text();
    let first = text.find("HTTP/1.1 200").expect("first response");
    let second = text.find("HTTP/1.1 404").expect("second response");
    assert!(first < second, "{text}");
    assert!(exchange.closed);
}

#[test]
fn chunked_request_bodies_and_expect_continue() {
    use std::io::{Read, Write};
    let (r, _dir) = start();
    let data = b"streamed with chunked transfer-encoding";
    let digest = sha256(data);
    let head = format!(
        "POST /v2/c/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    let mut stream = std::net::TcpStream::connect(r.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    // The server asks for the body before the client sends it.
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let mut body = Vec::new();
    for piece in data.chunks(5) {
        body.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
    stream.write_all(&body).expect("write body");
    let mut rest = String::new();
    stream.read_to_string(&mut rest).expect("response");
    assert!(rest.starts_with("HTTP/1.1 201"), "{rest}");
    let blob = request("GET", &r.url(&format!("/v2/c/blobs/{digest}")), &[], None);
    assert_eq!(blob.body, data);
}

/// Regression: a read that ended right after a chunk-size line made the
/// body decoder return an empty slice from outside the read buffer, and
/// the connection task panicked (docker's streamed PATCH hit it).
#[test]
fn chunked_body_split_across_reads_at_framing_boundaries() {
    use std::io::{Read, Write};
    let (r, _dir) = start();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&data);
    let mut stream = std::net::TcpStream::connect(r.addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let head = format!(
        "POST /v2/split/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    for piece in data.chunks(10_000) {
        for part in [
            format!("{:x}\r\n", piece.len()).into_bytes(),
            piece.to_vec(),
            b"\r\n".to_vec(),
        ] {
            stream.write_all(&part).expect("write");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stream.write_all(b"0\r\n").expect("write");
    std::thread::sleep(Duration::from_millis(20));
    stream.write_all(b"\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(
        request(
            "GET",
            &r.url(&format!("/v2/split/blobs/{digest}")),
            &[],
            None
        )
        .body,
        data
    );
}

/// Regression: a request head that arrives in several reads must be
/// reassembled, not overwritten by the next read.
#[test]
fn request_head_split_across_reads() {
    use std::io::{Read, Write};
    let (r, _dir) = start();
    let mut stream = std::net::TcpStream::connect(r.addr()).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for part in [
        "GET /v2/ HT",
        "TP/1.1\r\nHo",
        "st: x\r\nConnection: cl",
        "ose\r\n",
        "\r\n",
    ] {
        stream.write_all(part.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(30));
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// The epoll fallback (forced, as under Docker's default seccomp profile)
/// serves the same protocol, and the start log names the driver.
#[test]
fn forced_poll_driver_serves_uploads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return; // a berth setting; the reference registry has no such driver
    }
    command
        .env
        .push(("REGISTRY_RUNTIME_DRIVER".into(), "poll".into()));
    let r = Registry::start_with(command, &dir.path().join("data"));
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let digest = push_blob(&r, "poll", &data);
    assert_eq!(
        request(
            "GET",
            &r.url(&format!("/v2/poll/blobs/{digest}")),
            &[],
            None
        )
        .body,
        data
    );
    let log = log_with(&r, "via ");
    assert!(
        log.contains("driver poll"),
        "start log does not name the poll driver: {log}"
    );
    assert!(
        log.contains("via copy"),
        "the poll driver must send blobs by copy: {log}"
    );
}

#[test]
fn blob_ranges_and_conditional_requests() {
    let (r, _dir) = start();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let digest = push_blob(&r, "rng", &data);
    let url = r.url(&format!("/v2/rng/blobs/{digest}"));
    let whole = request("GET", &url, &[], None);
    assert_eq!(whole.header("Accept-Ranges"), Some("bytes"));
    let etag = whole.header("ETag").expect("ETag").to_owned();
    assert_eq!(etag, format!("\"{digest}\""));
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-10", 99_990, 99_999),
        ("bytes=10-19", 10, 19),
    ] {
        let part = request("GET", &url, &[("Range", range)], None);
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(
            part.header("Content-Range"),
            Some(format!("bytes {start}-{end}/100000").as_str()),
            "{range}"
        );
        assert_eq!(part.body, &data[start..=end], "{range}");
    }
    let past = request("GET", &url, &[("Range", "bytes=100000-")], None);
    assert_eq!(
        (past.status, past.header("Content-Range")),
        (416, Some("bytes */100000"))
    );
    let multi = request("GET", &url, &[("Range", "bytes=0-1,5-6")], None);
    assert_eq!(
        (multi.status, error_code(&multi).as_str()),
        (416, "RANGE_INVALID")
    );
    let cached = request("GET", &url, &[("If-None-Match", &etag)], None);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    let other = request("GET", &url, &[("If-None-Match", "\"sha256:other\"")], None);
    assert_eq!(other.status, 200);

    let config = push_blob(&r, "rng", b"{}");
    let body = manifest(&config, &[]);
    request(
        "PUT",
        &r.url("/v2/rng/manifests/t"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&body),
    );
    let m = request("GET", &r.url("/v2/rng/manifests/t"), &[], None);
    let metag = m.header("ETag").expect("manifest ETag").to_owned();
    assert_eq!(
        request(
            "GET",
            &r.url("/v2/rng/manifests/t"),
            &[("If-None-Match", &metag)],
            None
        )
        .status,
        304
    );
}

/// Under io_uring blob bodies go socket-ward by splice; under the forced
/// poll driver by copy. The access log names the path taken.
#[test]
fn blob_bodies_are_spliced_under_io_uring() {
    let (r, _dir) = start();
    if !RegistryCommand::from_env().is_berth {
        return;
    }
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 233) as u8).collect();
    let digest = push_blob(&r, "zc", &data);
    let got = request("GET", &r.url(&format!("/v2/zc/blobs/{digest}")), &[], None);
    assert!(got.body == data, "spliced bytes differ");
    let part = request(
        "GET",
        &r.url(&format!("/v2/zc/blobs/{digest}")),
        &[("Range", "bytes=1000000-")],
        None,
    );
    assert!(part.body == data[1_000_000..], "spliced range differs");
    let log = log_with(&r, "bytes=1000000");
    if log.contains("driver io_uring") || !log.contains("driver poll") {
        assert!(
            log.contains(&format!("GET /v2/zc/blobs/{digest} 200 3000000"))
                && log.contains("via splice"),
            "{log}"
        );
    }
}

#[test]
fn referrers_list_manifests_by_subject() {
    let (r, _dir) = start();
    let config = push_blob(&r, "ref", b"{}");
    let subject_body = manifest(&config, &[]);
    let subject = sha256(&subject_body);
    assert_eq!(
        request(
            "PUT",
            &r.url("/v2/ref/manifests/base"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(&subject_body)
        )
        .status,
        201
    );
    let artifact = |artifact_type: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len()},
            "annotations": {"org.example.note": note}
        }))
        .expect("json")
    };
    let sbom = artifact("application/spdx+json", "sbom");
    let put = request(
        "PUT",
        &r.url(&format!("/v2/ref/manifests/{}", sha256(&sbom))),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&sbom),
    );
    assert_eq!(put.status, 201);
    assert_eq!(put.header("OCI-Subject"), Some(subject.as_str()));
    let sig = artifact("application/vnd.example.sig", "sig");
    request(
        "PUT",
        &r.url(&format!("/v2/ref/manifests/{}", sha256(&sig))),
        &[("Content-Type", OCI_MANIFEST)],
        Some(&sig),
    );

    let all = request(
        "GET",
        &r.url(&format!("/v2/ref/referrers/{subject}")),
        &[],
        None,
    );
    assert_eq!(all.status, 200);
    assert_eq!(
        all.header("Content-Type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index = all.json();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    let sbom_entry = index["manifests"]
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["digest"] == sha256(&sbom).as_str())
        .expect("sbom listed")
        .clone();
    assert_eq!(sbom_entry["artifactType"], "application/spdx+json");
    assert_eq!(sbom_entry["size"], sbom.len());
    assert_eq!(sbom_entry["annotations"]["org.example.note"], "sbom");

    let filtered = request(
        "GET",
        &r.url(&format!(
            "/v2/ref/referrers/{subject}?artifactType=application/spdx%2Bjson"
        )),
        &[],
        None,
    );
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(
        filtered.json()["manifests"].as_array().map(Vec::len),
        Some(1)
    );

    let unknown = request(
        "GET",
        &r.url(&format!("/v2/ref/referrers/{}", sha256(b"nothing"))),
        &[],
        None,
    );
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.json()["manifests"], serde_json::json!([]));
    let bad = request("GET", &r.url("/v2/ref/referrers/sha256:nothex"), &[], None);
    assert_eq!(
        (bad.status, error_code(&bad).as_str()),
        (400, "DIGEST_INVALID")
    );
}

#[test]
fn mount_without_from_finds_the_blob() {
    let (r, _dir) = start();
    let d = push_blob(&r, "src", b"mount me anywhere");
    let res = request(
        "POST",
        &r.url(&format!("/v2/dst/blobs/uploads/?mount={d}")),
        &[],
        None,
    );
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(
        request("GET", &r.url(&format!("/v2/dst/blobs/{d}")), &[], None).body,
        b"mount me anywhere"
    );
    // Unknown blob: a fresh upload session instead (202).
    let other = request(
        "POST",
        &r.url(&format!(
            "/v2/dst/blobs/uploads/?mount={}",
            sha256(b"absent")
        )),
        &[],
        None,
    );
    assert_eq!(other.status, 202);
}

#[test]
fn access_log_lines_name_the_error_code() {
    let (r, _dir) = start();
    if !RegistryCommand::from_env().is_berth {
        return;
    }
    let digest = sha256(b"never pushed");
    let path = format!("/v2/some/repo/blobs/{digest}");
    let res = request("GET", &r.url(&path), &[], None);
    assert_eq!(res.status, 404);
    let code = error_code(&res);
    let log = log_with(&r, &path);
    let line = log
        .lines()
        .find(|l| l.contains(&path))
        .unwrap_or_else(|| panic!("no access line in {log}"));
    assert!(line.ends_with(&format!(" error={code}")), "{line}");
    // A success names none.
    let res = request("GET", &r.url("/v2/"), &[], None);
    assert_eq!(res.status, 200);
    let log = log_with(&r, "GET /v2/ 200");
    let line = log
        .lines()
        .find(|l| l.contains("GET /v2/ 200"))
        .unwrap_or_else(|| panic!("no access line in {log}"));
    assert!(!line.contains("error="), "{line}");
}

#[test]
fn access_log_lines_as_json() {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    command
        .env
        .push(("REGISTRY_LOG_FORMATTER".into(), "json".into()));
    let dir = tempfile::tempdir().expect("temp dir");
    let r = Registry::start_with(command, &dir.path().join("data"));
    assert_eq!(
        request("GET", &r.url("/v2/none/tags/list"), &[], None).status,
        404
    );
    let log = log_with(&r, "/v2/none/tags/list");
    let line = log
        .lines()
        .find(|l| l.contains("/v2/none/tags/list"))
        .expect("access line");
    let record: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(record["method"], "GET");
    assert_eq!(record["status"], 404);
    assert_eq!(record["error"], "NAME_UNKNOWN", "{record}");
    assert!(
        record["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{record}"
    );
    assert!(
        record["duration_ms"].is_number() && record["time"].is_string(),
        "{record}"
    );
    for other in log.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(other)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {other}"));
    }
}

#[test]
fn health_reports_storage() {
    let (r, _dir) = start();
    if !RegistryCommand::from_env().is_berth {
        return;
    }
    // Served on the debug listener (http.debug.addr) in registry:2's shape.
    let health = r.health();
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), serde_json::json!({}));
}
