//! Request smuggling attempts: every ambiguous framing must be rejected.

use berth_http::{parse_request_head, BodyFraming, HeadError, Limits};

fn with_headers(headers: &str) -> Result<BodyFraming, HeadError> {
    with_version("HTTP/1.1", headers)
}

fn with_version(version: &str, headers: &str) -> Result<BodyFraming, HeadError> {
    let buf = format!("POST /v2/x/blobs/uploads/ {version}\r\nHost: h\r\n{headers}\r\n");
    match parse_request_head(buf.as_bytes(), &Limits::default()) {
        Ok(Some((h, n))) => {
            assert_eq!(n, buf.len());
            Ok(h.framing)
        }
        Ok(None) => panic!("incomplete: {buf:?}"),
        Err(e) => Err(e),
    }
}

fn is_400(r: Result<BodyFraming, HeadError>) -> bool {
    matches!(r, Err(e) if e.status() == 400)
}

#[test]
fn plain_chunked_and_length_accepted() {
    assert_eq!(
        with_headers("Transfer-Encoding: chunked\r\n"),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        with_headers("Transfer-Encoding: Chunked\r\n"),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        with_headers("Content-Length: 10\r\n"),
        Ok(BodyFraming::Length(10))
    );
    assert_eq!(with_headers(""), Ok(BodyFraming::None));
}

#[test]
fn cl_and_te_conflict() {
    for h in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
        "content-length: 5\r\ntransfer-encoding: CHUNKED\r\n",
    ] {
        assert_eq!(with_headers(h), Err(HeadError::ConflictingFraming), "{h:?}");
    }
}

#[test]
fn chunked_then_identity() {
    assert!(is_400(with_headers(
        "Transfer-Encoding: chunked, identity\r\n"
    )));
    assert!(is_400(with_headers(
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
    )));
}

#[test]
fn duplicate_differing_content_length() {
    for h in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 6\r\n",
        "Content-Length: 0\r\nContent-Length: 10\r\n",
    ] {
        assert_eq!(with_headers(h), Err(HeadError::ConflictingFraming), "{h:?}");
    }
    assert_eq!(
        with_headers("Content-Length: 7\r\nContent-Length: 7\r\n"),
        Ok(BodyFraming::Length(7))
    );
    assert_eq!(
        with_headers("Content-Length: 7,7\r\n"),
        Ok(BodyFraming::Length(7))
    );
}

#[test]
fn invalid_content_length_values() {
    for v in [
        "-1",
        "+5",
        "0x10",
        "1_0",
        "1 0",
        "5.0",
        "",
        "abc",
        "18446744073709551616",
        "5,",
        ",5",
    ] {
        let h = format!("Content-Length: {v}\r\n");
        let r = with_headers(&h);
        assert_eq!(r, Err(HeadError::InvalidContentLength), "{v:?}");
    }
    assert_eq!(
        with_headers("Content-Length: 18446744073709551615\r\n"),
        Ok(BodyFraming::Length(u64::MAX))
    );
    // Surrounding whitespace is OWS and stripped; leading zeros are digits.
    assert_eq!(
        with_headers("Content-Length:  \t42 \r\n"),
        Ok(BodyFraming::Length(42))
    );
    assert_eq!(
        with_headers("Content-Length: 007\r\n"),
        Ok(BodyFraming::Length(7))
    );
}

#[test]
fn chunked_whitespace_variants() {
    // OWS around the value and around list commas is legitimate.
    assert_eq!(
        with_headers("Transfer-Encoding:  chunked\r\n"),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        with_headers("Transfer-Encoding:\tchunked\t\r\n"),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        with_headers("Transfer-Encoding: , chunked\r\n"),
        Ok(BodyFraming::Chunked)
    );
    // Whitespace before the colon, folding, and odd bytes inside the token are not.
    for h in [
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        " Transfer-Encoding: chunked\r\n",
        "X: y\r\n Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding:\r\n chunked\r\n",
        "Transfer-Encoding: chun ked\r\n",
        "Transfer-Encoding: chunked\x0b\r\n",
        "Transfer-Encoding: \x0cchunked\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
    ] {
        let r = with_headers(h);
        assert!(is_400(r), "{h:?} -> {r:?}");
    }
}

#[test]
fn not_quite_chunked() {
    for v in [
        "xchunked",
        "chunkedx",
        "chunked;x=1",
        "chunk",
        "identity",
        "gzip",
        "chunked, chunked",
        "",
    ] {
        let h = format!("Transfer-Encoding: {v}\r\n");
        let r = with_headers(&h);
        assert!(is_400(r), "{v:?} -> {r:?}");
    }
}

#[test]
fn other_coding_before_chunked_is_501() {
    for h in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
    ] {
        let r = with_headers(h);
        assert_eq!(r, Err(HeadError::UnsupportedTransferEncoding), "{h:?}");
        assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
    }
}

#[test]
fn http10_chunked_is_400() {
    let r = with_version("HTTP/1.0", "Transfer-Encoding: chunked\r\n");
    assert!(is_400(r), "{r:?}");
    assert_eq!(
        with_version("HTTP/1.0", "Content-Length: 3\r\n"),
        Ok(BodyFraming::Length(3))
    );
}

#[test]
fn header_name_lookalikes_are_not_framing() {
    // Not the same field name: ignored, so no body.
    assert_eq!(
        with_headers("Transfer_Encoding: chunked\r\n"),
        Ok(BodyFraming::None)
    );
    assert_eq!(
        with_headers("Content-Length2: 5\r\n"),
        Ok(BodyFraming::None)
    );
    // Control bytes in a name are a parse error.
    assert!(is_400(with_headers("Transfer-Encoding\x00: chunked\r\n")));
}
