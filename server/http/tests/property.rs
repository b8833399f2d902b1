//! Randomised tests with a tiny xorshift PRNG (deterministic seeds, no extra
//! crates): nothing input can reach panics, and decoding does not depend on
//! how the input is split.

use berth_http::{parse_request_head, BodyDecoder, BodyError, BodyFraming, Limits};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"5",
    b"F",
    b"GET",
    b"PUT",
    b"/",
    b"?",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"Host: h",
    b"Content-Length",
    b"Transfer-Encoding",
    b"chunked",
    b"identity",
    b"Connection: close",
    b"Expect: 100-continue",
    b"\x00",
    b"\xff",
    b"\r\n\r\n",
];

fn mutate(rng: &mut XorShift, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 if !v.is_empty() => {
                let end = (at + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            1 if at < v.len() => v[at] = rng.next() as u8,
            _ => {
                let tok = *rng.pick(TOKENS);
                v.splice(at..at, tok.iter().copied());
            }
        }
    }
    v
}

fn check_head(buf: &[u8], limits: &Limits) {
    match parse_request_head(buf, limits) {
        Ok(Some((head, n))) => {
            assert!(n <= buf.len() && n <= limits.head_bytes_max);
            assert!(head.target.len() <= limits.target_bytes_max);
            assert!(head.headers.len() <= limits.headers_max);
            let _ = (head.path(), head.query());
            // The head alone parses identically.
            let again = parse_request_head(&buf[..n], limits);
            assert_eq!(again, Ok(Some((head, n))));
            // No strict prefix is a complete head.
            for cut in [0, n / 2, n.saturating_sub(1)] {
                if cut < n {
                    assert!(!matches!(
                        parse_request_head(&buf[..cut], limits),
                        Ok(Some(_))
                    ));
                }
            }
        }
        Ok(None) => assert!(buf.len() < limits.head_bytes_max),
        Err(e) => assert!(matches!(e.status(), 400 | 414 | 431 | 501 | 505)),
    }
}

#[test]
fn random_bytes_never_panic_head() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let small = Limits {
        head_bytes_max: 128,
        headers_max: 4,
        target_bytes_max: 32,
    };
    for _ in 0..20_000 {
        let len = rng.below(200);
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_head(&buf, &Limits::default());
        check_head(&buf, &small);
    }
}

#[test]
fn mutated_requests_never_panic_head() {
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    let bases: &[&[u8]] = &[
        b"GET /v2/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PUT /v2/a/blobs/uploads/1?digest=sha256:00 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"PATCH /v2/a/blobs/uploads/1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    let small = Limits {
        head_bytes_max: 96,
        headers_max: 3,
        target_bytes_max: 24,
    };
    for _ in 0..30_000 {
        let base = *rng.pick(bases);
        let buf = mutate(&mut rng, base);
        check_head(&buf, &Limits::default());
        check_head(&buf, &small);
    }
}

/// Decodes `input` fed in the given pieces; returns payload, consumed, done.
fn decode_pieces(
    framing: BodyFraming,
    input: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut dec = BodyDecoder::new(&framing);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for end in bounds {
        while pos < end {
            let d = dec.decode(&input[pos..end])?;
            assert!(d.consumed <= end - pos);
            out.extend_from_slice(d.data);
            pos += d.consumed;
            if d.consumed == 0 {
                assert!(d.done);
                break;
            }
        }
    }
    Ok((out, pos, dec.is_done()))
}

fn random_chunked(rng: &mut XorShift) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut payload = Vec::new();
    for _ in 0..rng.below(6) {
        let size = 1 + rng.below(40);
        let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        let hex = if rng.below(2) == 0 {
            format!("{size:x}")
        } else {
            format!("{size:04X}")
        };
        wire.extend_from_slice(hex.as_bytes());
        match rng.below(4) {
            0 => wire.extend_from_slice(b";a=b"),
            1 => wire.extend_from_slice(b" ;x"),
            _ => {}
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&data);
        wire.extend_from_slice(b"\r\n");
        payload.extend_from_slice(&data);
    }
    wire.extend_from_slice(b"0\r\n");
    for _ in 0..rng.below(3) {
        wire.extend_from_slice(b"X-T: v\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    (wire, payload)
}

#[test]
fn random_valid_chunked_bodies_split_anywhere() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for _ in 0..2_000 {
        let (wire, payload) = random_chunked(&mut rng);
        let expect = Ok((payload, wire.len(), true));
        assert_eq!(decode_pieces(BodyFraming::Chunked, &wire, &[]), expect);
        let cuts: Vec<usize> = (0..rng.below(5))
            .map(|_| rng.below(wire.len() + 1))
            .collect();
        assert_eq!(
            decode_pieces(BodyFraming::Chunked, &wire, &cuts),
            expect,
            "cuts {cuts:?}"
        );
    }
}

#[test]
fn random_bytes_body_split_equals_whole() {
    let mut rng = XorShift(0xFEED_FACE_1234_5678);
    for i in 0..30_000 {
        let input: Vec<u8> = if i % 2 == 0 {
            let (wire, _) = random_chunked(&mut rng);
            mutate(&mut rng, &wire)
        } else {
            (0..rng.below(64))
                .map(|_| *rng.pick(b"0123456789abcdefABXZ;= \t\r\n"))
                .collect()
        };
        let framings = [
            BodyFraming::Chunked,
            BodyFraming::Length(rng.below(80) as u64),
        ];
        for framing in framings {
            let whole = decode_pieces(framing, &input, &[]);
            let cut = rng.below(input.len() + 1);
            let split = decode_pieces(framing, &input, &[cut]);
            match (&whole, &split) {
                (Ok(w), Ok(s)) => assert_eq!(w, s),
                (Err(a), Err(b)) => assert_eq!(a, b),
                _ => panic!("whole {whole:?} vs split at {cut} {split:?} for {input:?}"),
            }
        }
    }
}
