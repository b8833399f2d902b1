//! Streaming body decoding through the public API.

use berth_http::{BodyDecoder, BodyError, BodyFraming, TRAILERS_BYTES_MAX};

/// Feeds `pieces` in order, carrying unconsumed bytes over like a server
/// would, and returns (payload, total consumed, done).
fn feed(framing: BodyFraming, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut dec = BodyDecoder::new(&framing);
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0;
    for piece in pieces {
        pending.extend_from_slice(piece);
        loop {
            let d = dec.decode(&pending)?;
            assert!(d.consumed <= pending.len());
            if !d.data.is_empty() {
                // The payload is a sub-slice of the consumed input.
                let start = d.data.as_ptr() as usize - pending.as_ptr() as usize;
                assert!(start + d.data.len() <= d.consumed);
            }
            assert_eq!(d.done, dec.is_done());
            out.extend_from_slice(d.data);
            let (consumed, done) = (d.consumed, d.done);
            total += consumed;
            if consumed == 0 {
                assert!(pending.is_empty() || done, "no progress on non-empty input");
                break;
            }
            pending.drain(..consumed);
        }
    }
    Ok((out, total, dec.is_done()))
}

fn whole(framing: BodyFraming, input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    feed(framing, &[input])
}

fn assert_every_split(framing: BodyFraming, input: &[u8], payload: &[u8], body_len: usize) {
    let expect = (payload.to_vec(), body_len, true);
    assert_eq!(whole(framing, input), Ok(expect.clone()));
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(feed(framing, &[a, b]), Ok(expect.clone()), "split at {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(framing, &bytes), Ok(expect.clone()), "byte by byte");
    for (i, j) in [(1, 2), (3, 7), (5, 11)] {
        if j < input.len() {
            assert_eq!(
                feed(framing, &[&input[..i], &input[i..j], &input[j..]]),
                Ok(expect.clone())
            );
        }
    }
}

const CHUNKED: &[u8] = b"5\r\nhello\r\n7;name=val;x\r\n, world\r\nA\r\n0123456789\r\n1 \r\n!\r\n0\r\nX-Trailer: yes\r\nY: z\r\n\r\n";
const CHUNKED_PAYLOAD: &[u8] = b"hello, world0123456789!";

#[test]
fn chunked_every_split_same_payload() {
    assert_every_split(
        BodyFraming::Chunked,
        CHUNKED,
        CHUNKED_PAYLOAD,
        CHUNKED.len(),
    );
}

#[test]
fn chunked_every_split_leaves_pipelined_bytes() {
    let mut input = CHUNKED.to_vec();
    input.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_every_split(BodyFraming::Chunked, &input, CHUNKED_PAYLOAD, CHUNKED.len());
}

#[test]
fn chunked_minimal_and_upper_hex() {
    assert_eq!(
        whole(BodyFraming::Chunked, b"0\r\n\r\n"),
        Ok((vec![], 5, true))
    );
    let body = b"0000B\r\nhello world\r\n00\r\n\r\n";
    assert_eq!(
        whole(BodyFraming::Chunked, body),
        Ok((b"hello world".to_vec(), body.len(), true))
    );
}

#[test]
fn one_call_one_contiguous_run() {
    let mut dec = BodyDecoder::new(&BodyFraming::Chunked);
    let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let d = dec.decode(input).unwrap();
    assert_eq!(d.data, b"abc");
    assert_eq!(
        d.consumed, 11,
        "framing up to the next payload byte is consumed"
    );
    assert!(!d.done);
    let d2 = dec.decode(&input[d.consumed..]).unwrap();
    assert_eq!(d2.data, b"de");
    assert!(d2.done);
    assert_eq!(d.consumed + d2.consumed, input.len());
    assert_eq!(
        dec.decode(b"more").unwrap(),
        berth_http::Decoded {
            consumed: 0,
            data: b"",
            done: true
        }
    );
    assert_eq!(dec.remaining_hint(), Some(0));
}

#[test]
fn content_length_every_split() {
    let mut input = b"0123456789abcdef".to_vec();
    assert_every_split(BodyFraming::Length(16), &input, b"0123456789abcdef", 16);
    input.extend_from_slice(b"NEXT REQUEST");
    assert_every_split(BodyFraming::Length(16), &input, b"0123456789abcdef", 16);
}

#[test]
fn content_length_hint_and_done() {
    let mut dec = BodyDecoder::new(&BodyFraming::Length(10));
    assert_eq!(dec.remaining_hint(), Some(10));
    assert!(!dec.is_done());
    let d = dec.decode(b"abcd").unwrap();
    assert_eq!((d.consumed, d.data, d.done), (4, &b"abcd"[..], false));
    assert_eq!(dec.remaining_hint(), Some(6));
    let d = dec.decode(b"").unwrap();
    assert_eq!((d.consumed, d.data, d.done), (0, &b""[..], false));
    let d = dec.decode(b"efghijXYZ").unwrap();
    assert_eq!((d.consumed, d.data, d.done), (6, &b"efghij"[..], true));
    assert_eq!(dec.remaining_hint(), Some(0));
}

#[test]
fn empty_bodies_are_done_immediately() {
    for f in [BodyFraming::None, BodyFraming::Length(0)] {
        let mut dec = BodyDecoder::new(&f);
        assert!(dec.is_done());
        assert_eq!(dec.remaining_hint(), Some(0));
        let d = dec.decode(b"GET / HTTP/1.1").unwrap();
        assert_eq!((d.consumed, d.done), (0, true));
    }
    let dec = BodyDecoder::new(&BodyFraming::Chunked);
    assert_eq!(dec.remaining_hint(), None);
    assert!(!dec.is_done());
}

fn chunked_err(input: &[u8]) -> BodyError {
    let r = whole(BodyFraming::Chunked, input);
    let e = r
        .clone()
        .expect_err(&format!("{:?} -> {r:?}", String::from_utf8_lossy(input)));
    assert_eq!(e.status(), 400);
    e
}

#[test]
fn invalid_chunk_sizes() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"-1\r\n",
        b"+1\r\n",
        b"0x5\r\n",
        b" 5\r\n",
        b";ext\r\n",
        b"5 x\r\n",
        b"5\rx",
        b"5\nhello\r\n0\r\n\r\n",
        b"5;ext\nhello",
        b"5\r\r\n",
    ] {
        assert_eq!(
            chunked_err(bad),
            BodyError::InvalidChunkSize,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn chunk_size_digit_limit() {
    // 16 digits is fine (value fits u64); the decoder then waits for data.
    let sixteen = b"000000000000000F\r\n";
    assert_eq!(
        whole(BodyFraming::Chunked, sixteen),
        Ok((vec![], sixteen.len(), false))
    );
    let max = b"FFFFFFFFFFFFFFFF\r\nabc";
    assert_eq!(
        whole(BodyFraming::Chunked, max),
        Ok((b"abc".to_vec(), max.len(), false))
    );
    assert_eq!(
        chunked_err(b"10000000000000000\r\n"),
        BodyError::ChunkSizeTooLarge
    );
    assert_eq!(
        chunked_err(b"00000000000000001\r\n"),
        BodyError::ChunkSizeTooLarge
    );
}

#[test]
fn chunk_data_must_end_in_crlf() {
    for bad in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\rX",
        b"5\r\nhello0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            chunked_err(bad),
            BodyError::InvalidChunkTerminator,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn trailers() {
    let ok = b"0\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(
        whole(BodyFraming::Chunked, ok),
        Ok((vec![], ok.len(), true))
    );
    assert_eq!(chunked_err(b"0\r\nA: 1\n\r\n"), BodyError::InvalidTrailers);
    assert_eq!(chunked_err(b"0\r\n\n"), BodyError::InvalidTrailers);
    assert_eq!(chunked_err(b"0\r\nA: 1\rX"), BodyError::InvalidTrailers);
    assert_eq!(chunked_err(b"0\r\n\rX"), BodyError::InvalidTrailers);
    let mut big = b"0\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', TRAILERS_BYTES_MAX));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(chunked_err(&big), BodyError::TrailersTooLarge);
}

#[test]
fn extensions_are_bounded() {
    let mut big = b"1;".to_vec();
    big.extend(std::iter::repeat_n(b'x', berth_http::EXTENSIONS_BYTES_MAX));
    big.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
    assert_eq!(chunked_err(&big), BodyError::ExtensionsTooLarge);
    // Many small extensions count against one per-body budget.
    let mut many = Vec::new();
    for _ in 0..2000 {
        many.extend_from_slice(b"1;abcdefghi\r\nz\r\n");
    }
    assert_eq!(chunked_err(&many), BodyError::ExtensionsTooLarge);
}

#[test]
fn body_error_statuses() {
    for e in [
        BodyError::InvalidChunkSize,
        BodyError::ChunkSizeTooLarge,
        BodyError::InvalidChunkTerminator,
        BodyError::TrailersTooLarge,
        BodyError::ExtensionsTooLarge,
        BodyError::InvalidTrailers,
    ] {
        assert_eq!(e.status(), 400);
        assert!(!e.to_string().is_empty());
    }
}
