//! Request head parsing through the public API.

use berth_http::{parse_request_head, BodyFraming, HeadError, Limits, Method, Version};

fn parse(buf: &[u8]) -> Result<Option<(berth_http::RequestHead, usize)>, HeadError> {
    parse_request_head(buf, &Limits::default())
}

fn complete(buf: &[u8]) -> (berth_http::RequestHead, usize) {
    match parse(buf) {
        Ok(Some(x)) => x,
        other => panic!(
            "expected a complete head for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn err(buf: &[u8]) -> HeadError {
    match parse(buf) {
        Err(e) => e,
        other => panic!(
            "expected an error for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

#[test]
fn simple_get() {
    let buf = b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nAccept: */*\r\n\r\n";
    let (h, n) = complete(buf);
    assert_eq!(n, buf.len());
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.target, "/v2/");
    assert_eq!(h.path(), "/v2/");
    assert_eq!(h.query(), None);
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.framing, BodyFraming::None);
    assert!(h.keep_alive);
    assert!(!h.expect_continue);
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.headers.get("host"), Some("registry"));
    assert_eq!(h.headers.get("ACCEPT"), Some("*/*"));
    assert_eq!(h.headers.get("missing"), None);
    let all: Vec<(&str, &[u8])> = h.headers.iter().collect();
    assert_eq!(
        all,
        vec![("Host", &b"registry"[..]), ("Accept", &b"*/*"[..])]
    );
}

#[test]
fn methods() {
    for (tok, m) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("PATCH", Method::Patch),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("get", Method::Other("get".into())),
        ("PROPFIND", Method::Other("PROPFIND".into())),
    ] {
        let buf = format!("{tok} / HTTP/1.1\r\nHost: h\r\n\r\n");
        let (h, _) = complete(buf.as_bytes());
        assert_eq!(h.method, m);
        assert_eq!(h.method.as_str(), tok);
    }
}

#[test]
fn target_with_query() {
    let (h, _) = complete(
        b"PUT /v2/foo/bar/blobs/uploads/1234?digest=sha256:abcd&x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(h.method, Method::Put);
    assert_eq!(h.path(), "/v2/foo/bar/blobs/uploads/1234");
    assert_eq!(h.query(), Some("digest=sha256:abcd&x=1"));
    assert_eq!(h.framing, BodyFraming::Length(0));
}

#[test]
fn incomplete_heads_need_more() {
    let full = b"POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    for cut in 0..full.len() {
        assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
    }
    let (h, n) = complete(full);
    assert_eq!(n, full.len());
    assert_eq!(h.framing, BodyFraming::Length(3));
}

#[test]
fn pipelined_heads_consume_exactly() {
    let a = b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n";
    let b = b"HEAD /v2/foo/manifests/latest HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let mut buf = a.to_vec();
    buf.extend_from_slice(b);
    let (h1, n1) = complete(&buf);
    assert_eq!(n1, a.len());
    assert_eq!(h1.method, Method::Get);
    let (h2, n2) = complete(&buf[n1..]);
    assert_eq!(n2, b.len());
    assert_eq!(h2.method, Method::Head);
    assert!(!h2.keep_alive);
}

#[test]
fn pipelined_head_with_body_leaves_body() {
    let buf = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let (h, n) = complete(buf);
    assert_eq!(h.framing, BodyFraming::Length(5));
    assert_eq!(&buf[n..n + 5], b"hello");
    let (h2, n2) = complete(&buf[n + 5..]);
    assert_eq!(h2.method, Method::Get);
    assert_eq!(n + 5 + n2, buf.len());
}

#[test]
fn leading_empty_lines_are_skipped_and_counted() {
    let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let (h, n) = complete(buf);
    assert_eq!(n, buf.len());
    assert_eq!(h.target, "/");
}

#[test]
fn keep_alive_rules() {
    let ka = |s: &str| complete(s.as_bytes()).0.keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: foo\r\nConnection: close\r\n\r\n"
    ));
    assert!(ka(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"
    ));
    assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
    assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
}

#[test]
fn expect_continue() {
    let ec = |s: &str| complete(s.as_bytes()).0.expect_continue;
    assert!(ec(
        "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"
    ));
    assert!(ec(
        "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nexpect: 100-Continue\r\n\r\n"
    ));
    assert!(!ec(
        "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n"
    ));
    assert!(!ec("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"));
    // RFC 9110 §10.1.1: ignored on HTTP/1.0.
    assert!(!ec(
        "PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"
    ));
}

#[test]
fn versions() {
    assert_eq!(
        complete(b"GET / HTTP/1.0\r\n\r\n").0.version,
        Version::Http10
    );
    for bad in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
        b"GET / HTTP/0.9\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let e = err(bad);
        assert_eq!(
            e,
            HeadError::UnsupportedVersion,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(e.status(), 505);
    }
}

#[test]
fn host_rules() {
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
        HeadError::Malformed(_)
    ));
    complete(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
}

#[test]
fn malformed_request_lines() {
    for bad in [
        &b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let e = err(bad);
        assert!(
            matches!(e, HeadError::Malformed(_) | HeadError::UnsupportedVersion),
            "{:?} -> {e:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(e.status() == 400 || e.status() == 505);
    }
}

#[test]
fn malformed_headers() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",
    ] {
        let e = err(bad);
        assert!(
            matches!(e, HeadError::Malformed(_)),
            "{:?} -> {e:?}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn obs_fold_rejected() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n\ttwo\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
    ] {
        assert!(
            matches!(err(bad), HeadError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn bare_lf_rejected() {
    for bad in [
        &b"GET / HTTP/1.1\nHost: h\n\n"[..],
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(
            err(bad),
            HeadError::Malformed("bare LF in request head"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn header_values_bytes_and_text() {
    let (h, _) = complete(b"GET / HTTP/1.1\r\nHost: h\r\nX-Bin: caf\xc3\xa9\r\nX-Latin: \xe9t\xe9\r\nX-Bin: second\r\n\r\n");
    assert_eq!(h.headers.get("x-bin"), Some("café"));
    assert_eq!(h.headers.get("x-latin"), None, "not UTF-8");
    let all: Vec<&[u8]> = h.headers.get_all("X-BIN").collect();
    assert_eq!(all, vec![&b"caf\xc3\xa9"[..], b"second"]);
    assert_eq!(h.headers.get_all("x-latin").next(), Some(&b"\xe9t\xe9"[..]));
    assert!(h.headers.contains("x-latin"));
    assert!(!h.headers.is_empty());
}

#[test]
fn header_value_whitespace_trimmed() {
    let (h, _) = complete(b"GET / HTTP/1.1\r\nHost: h\r\nX:  \t spaced value \t \r\n\r\n");
    assert_eq!(h.headers.get("x"), Some("spaced value"));
}

#[test]
fn oversize_head_rejected_even_while_partial() {
    let limits = Limits {
        head_bytes_max: 64,
        ..Limits::default()
    };
    let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    // Still partial and under the limit: need more.
    assert_eq!(parse_request_head(&buf, &limits), Ok(None));
    buf.resize(63, b'a');
    assert_eq!(parse_request_head(&buf, &limits), Ok(None));
    buf.push(b'a');
    assert_eq!(
        parse_request_head(&buf, &limits),
        Err(HeadError::HeadTooLarge)
    );
    buf.resize(10_000, b'a');
    let e = parse_request_head(&buf, &limits).unwrap_err();
    assert_eq!(e, HeadError::HeadTooLarge);
    assert_eq!(e.status(), 431);
    // Endless empty lines before the request line are bounded too.
    assert_eq!(
        parse_request_head(&[b'\r', b'\n'].repeat(40), &limits),
        Err(HeadError::HeadTooLarge)
    );
}

#[test]
fn complete_head_over_limit_rejected() {
    let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let exact = Limits {
        head_bytes_max: buf.len(),
        ..Limits::default()
    };
    assert!(matches!(parse_request_head(buf, &exact), Ok(Some((_, n))) if n == buf.len()));
    let under = Limits {
        head_bytes_max: buf.len() - 1,
        ..Limits::default()
    };
    assert_eq!(
        parse_request_head(buf, &under),
        Err(HeadError::HeadTooLarge)
    );
    // A complete head under the limit followed by lots of body is fine.
    let mut with_body = buf.to_vec();
    with_body.extend(std::iter::repeat_n(b'z', 1000));
    assert!(matches!(parse_request_head(&with_body, &exact), Ok(Some((_, n))) if n == buf.len()));
}

#[test]
fn too_many_headers() {
    let limits = Limits {
        headers_max: 3,
        ..Limits::default()
    };
    let ok = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(matches!(parse_request_head(ok, &limits), Ok(Some(_))));
    let bad = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let e = parse_request_head(bad, &limits).unwrap_err();
    assert_eq!(e, HeadError::TooManyHeaders);
    assert_eq!(e.status(), 431);
    // Detected before the head is complete.
    let partial = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
    assert_eq!(
        parse_request_head(partial, &limits),
        Err(HeadError::TooManyHeaders)
    );
    // Default limit: 100.
    let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse(&many), Err(HeadError::TooManyHeaders));
}

#[test]
fn target_too_long() {
    let limits = Limits {
        target_bytes_max: 16,
        ..Limits::default()
    };
    let ok = b"GET /0123456789abcde HTTP/1.1\r\nHost: h\r\n\r\n";
    assert!(matches!(parse_request_head(ok, &limits), Ok(Some(_))));
    let bad = b"GET /0123456789abcdef HTTP/1.1\r\nHost: h\r\n\r\n";
    let e = parse_request_head(bad, &limits).unwrap_err();
    assert_eq!(e, HeadError::TargetTooLong);
    assert_eq!(e.status(), 414);
    // Detected while the request line is still arriving.
    assert_eq!(
        parse_request_head(b"GET /0123456789abcdef", &limits),
        Err(HeadError::TargetTooLong)
    );
    assert_eq!(
        parse_request_head(b"GET /0123456789abcde", &limits),
        Ok(None)
    );
    // With the default limits, a 9 KiB target gives 414 rather than 431.
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9 * 1024));
    assert_eq!(parse(&long), Err(HeadError::TargetTooLong));
}

#[test]
fn error_statuses() {
    assert_eq!(HeadError::Malformed("x").status(), 400);
    assert_eq!(HeadError::ConflictingFraming.status(), 400);
    assert_eq!(HeadError::InvalidContentLength.status(), 400);
    assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
    assert_eq!(
        HeadError::Malformed("bare LF").to_string(),
        "malformed request: bare LF"
    );
}
