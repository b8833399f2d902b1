//! Property checks for the `berth-http` fuzz targets, shared by the targets
//! in `fuzz/fuzz_targets/` and by the regression test
//! `server/http/tests/fuzz_regressions.rs` (which includes this file with
//! `#[path]`, so `cargo test` replays every seed and saved crash on stable,
//! without libFuzzer). Each entry point takes the raw fuzzer input and
//! panics if a property fails. Only the public `berth_http` API is used.
#![allow(dead_code)] // each fuzz target uses one entry point

use berth_http::{
    parse_challenge, parse_content_range, parse_range, parse_request_head, BodyDecoder, BodyError,
    BodyFraming, Challenge, ContentRangeError, Limits, RangeRequest,
};

// ---------------------------------------------------------------- request_head

/// `request_head`: arbitrary bytes into `parse_request_head` with default
/// and with tiny `Limits`.
pub fn request_head(data: &[u8]) {
    check_head(data, &Limits::default());
    check_head(
        data,
        &Limits {
            head_bytes_max: 256,
            headers_max: 4,
            target_bytes_max: 32,
        },
    );
}

fn check_head(data: &[u8], limits: &Limits) {
    match parse_request_head(data, limits) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= limits.head_bytes_max);
            assert!(head.target.len() <= limits.target_bytes_max);
            assert!(head.headers.len() <= limits.headers_max);
            let _ = (head.path(), head.query(), head.headers.get("host"));
            // The head alone parses to the same value.
            assert_eq!(parse_request_head(&data[..n], limits), Ok(Some((head, n))));
            // No strict prefix is a complete head.
            assert!(!matches!(
                parse_request_head(&data[..n - 1], limits),
                Ok(Some(_))
            ));
        }
        Ok(None) => assert!(data.len() < limits.head_bytes_max),
        Err(e) => assert!(matches!(e.status(), 400 | 414 | 431 | 501 | 505)),
    }
}

// ---------------------------------------------------------------- chunked_body

/// `chunked_body`: the first two bytes choose a split point and a
/// Content-Length, the rest is the body. Decoding split must equal decoding
/// whole, for `Chunked` and `Length(n)`.
pub fn chunked_body(data: &[u8]) {
    let (cut, len, input) = match data {
        [a, b, rest @ ..] => (
            (usize::from(*a) << 8 | usize::from(*b)) % (rest.len() + 1),
            u64::from(*b),
            rest,
        ),
        _ => (0, 0, data),
    };
    for framing in [BodyFraming::Chunked, BodyFraming::Length(len)] {
        let whole = decode_body(framing, input, input.len());
        let split = decode_body(framing, input, cut);
        assert_eq!(whole, split, "framing {framing:?}, cut {cut}");
        if let Ok((payload, consumed, _)) = &whole {
            assert!(payload.len() <= *consumed);
        }
    }
}

/// Decodes `input` delivered in two pieces, `input[..cut]` then the rest,
/// carrying unconsumed bytes over like a server does.
fn decode_body(
    framing: BodyFraming,
    input: &[u8],
    cut: usize,
) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut dec = BodyDecoder::new(&framing);
    let mut out = Vec::new();
    let mut pos = 0;
    for end in [cut, input.len()] {
        while pos < end {
            let d = dec.decode(&input[pos..end])?;
            assert!(d.consumed <= end - pos);
            assert_eq!(d.done, dec.is_done());
            out.extend_from_slice(d.data);
            pos += d.consumed;
            if d.consumed == 0 {
                assert!(d.done, "no progress on non-empty input");
                break;
            }
        }
    }
    Ok((out, pos, dec.is_done()))
}

// ----------------------------------------------------------------------- range

/// `range`: the first byte is the representation length if below 0xF0,
/// else the next 8 bytes are (little endian); the rest, as lossy UTF-8, is
/// the `Range` header value.
pub fn range(data: &[u8]) {
    let (len, rest) = match data {
        [b, rest @ ..] if *b < 0xF0 => (u64::from(*b), rest),
        [_, rest @ ..] if rest.len() >= 8 => {
            let (len, rest) = rest.split_at(8);
            (u64::from_le_bytes(len.try_into().unwrap()), rest)
        }
        _ => (0, data),
    };
    check_range(&String::from_utf8_lossy(rest), len);
}

/// Properties of `parse_range(value, len)`, stated against the same value
/// parsed for other lengths (so no second parser is needed):
///
/// * `Partial { start, end }` ⇒ `start <= end < len`, the canonical
///   `bytes=start-end` parses to the same thing, and it is exactly the part
///   of the request that exists (the request as seen with `len = u64::MAX`,
///   clipped to `len`; a suffix range is counted back from `len`).
/// * `Unsatisfiable` ⇒ no byte of the request exists: `len == 0`, an empty
///   suffix (`-0`), or a first byte at or past `len`.
/// * Whether the answer is `Full`, `Multiple` or a range (`Partial` /
///   `Unsatisfiable`) is a matter of syntax alone: it does not depend on
///   `len`. Anything but `Full` needs a `bytes=` header; `Multiple` needs
///   two or more non-blank comma-separated ranges.
pub fn check_range(value: &str, len: u64) {
    use RangeRequest::*;
    let class = |r: RangeRequest| match r {
        Full => 0,
        Multiple => 1,
        Partial { .. } | Unsatisfiable => 2,
    };
    let got = parse_range(value, len);
    for other in [0, 1, len / 2, len.saturating_add(1), u64::MAX] {
        assert_eq!(
            class(parse_range(value, other)),
            class(got),
            "{value:?} at {len} vs {other}"
        );
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        assert_eq!(got, Full);
        return;
    };
    let mut specs = spec.split(',').map(str::trim).filter(|s| !s.is_empty());
    let first_spec = specs.next();
    if got == Multiple {
        assert!(specs.next().is_some(), "{value:?}");
    }
    let suffix = first_spec.is_some_and(|s| s.starts_with('-'));
    // The request against the longest possible representation.
    let unbounded = parse_range(value, u64::MAX);
    match got {
        Partial { start, end } => {
            assert!(start <= end && end < len, "{value:?} at {len}: {got:?}");
            let canonical = format!("bytes={start}-{end}");
            assert_eq!(parse_range(&canonical, len), got, "{canonical:?} at {len}");
            let Partial {
                start: first,
                end: last,
            } = unbounded
            else {
                panic!("{value:?}: {got:?} at {len} but {unbounded:?} at u64::MAX");
            };
            if suffix {
                let n = u64::MAX - first; // the suffix length
                assert_eq!(
                    (start, end),
                    (len.saturating_sub(n), len - 1),
                    "{value:?} at {len}"
                );
            } else {
                assert_eq!(
                    (start, end),
                    (first, last.min(len - 1)),
                    "{value:?} at {len}"
                );
            }
        }
        Unsatisfiable => match unbounded {
            Unsatisfiable => assert!(suffix, "{value:?}"), // `-0`
            Partial { start: first, .. } => {
                assert!(
                    len == 0 || (!suffix && first >= len),
                    "{value:?} at {len}: unsatisfiable"
                )
            }
            other => panic!("{value:?}: unsatisfiable at {len} but {other:?} at u64::MAX"),
        },
        Full | Multiple => {}
    }
    if unbounded == Unsatisfiable {
        assert_eq!(got, Unsatisfiable, "{value:?} at {len}");
    }
}

// --------------------------------------------------------------- content_range

/// `content_range`: the input, as lossy UTF-8, is an upload `Content-Range`
/// header value.
pub fn content_range(data: &[u8]) {
    check_content_range(&String::from_utf8_lossy(data));
}

/// `parse_content_range` agrees with a plain restatement of its grammar
/// (optional SP/HTAB around, one optional case-insensitive `bytes ` or
/// `bytes=`, then `^[0-9]+-[0-9]+$`) with offsets computed by checked
/// schoolbook arithmetic, and gives exactly the right error otherwise. On
/// `Ok((start, end))`, `start <= end` and `"{start}-{end}"` (with or without
/// a prefix) parses to the same pair.
pub fn check_content_range(value: &str) {
    let got = parse_content_range(value);
    let body = value.trim_matches([' ', '\t']);
    let lower = body.to_ascii_lowercase(); // same byte offsets as `body`
    let spec = if lower.starts_with("bytes ") || lower.starts_with("bytes=") {
        &body[6..]
    } else {
        body
    };
    let parts: Vec<&str> = spec.split('-').collect();
    let well_formed = parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let number = |i: usize| decimal(parts[i]);
    match got {
        Ok((start, end)) => {
            assert!(well_formed, "{value:?} accepted as {start}-{end}");
            assert_eq!(
                (number(0), number(1)),
                (Some(start), Some(end)),
                "{value:?}"
            );
            assert!(start <= end, "{value:?}");
            for canonical in [
                format!("{start}-{end}"),
                format!("bytes={start}-{end}"),
                format!("bytes {start}-{end}"),
            ] {
                assert_eq!(
                    parse_content_range(&canonical),
                    Ok((start, end)),
                    "{canonical:?}"
                );
            }
        }
        Err(ContentRangeError::Malformed) => assert!(!well_formed, "{value:?}: Malformed"),
        Err(ContentRangeError::TooLarge) => {
            assert!(
                well_formed && (number(0).is_none() || number(1).is_none()),
                "{value:?}: TooLarge"
            )
        }
        Err(ContentRangeError::EndBeforeStart { start, end }) => {
            assert!(well_formed && end < start, "{value:?}");
            assert_eq!(
                (number(0), number(1)),
                (Some(start), Some(end)),
                "{value:?}"
            );
        }
    }
}

/// The value of an ASCII digit string, `None` above `u64::MAX`.
fn decimal(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |n, b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

// ------------------------------------------------------------ www_authenticate

/// `www_authenticate`: the input, as lossy UTF-8, is an upstream's
/// `WWW-Authenticate` value. Properties of `parse_challenge`:
///
/// * it never panics;
/// * a Bearer challenge always has a non-empty realm;
/// * what it found survives a round trip: rendered canonically (every
///   parameter quoted, `"` and `\` escaped) and parsed again, it is the
///   same challenge.
pub fn www_authenticate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Some(challenge) = parse_challenge(&text) else {
        return;
    };
    let rendered = match &challenge {
        Challenge::Basic => "Basic realm=\"x\"".to_owned(),
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => {
            assert!(!realm.is_empty(), "empty realm from {text:?}");
            let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
            let mut out = format!("Bearer realm={}", quote(realm));
            if let Some(service) = service {
                out.push_str(&format!(",service={}", quote(service)));
            }
            if let Some(scope) = scope {
                out.push_str(&format!(",scope={}", quote(scope)));
            }
            out
        }
    };
    assert_eq!(
        parse_challenge(&rendered).as_ref(),
        Some(&challenge),
        "{text:?} rendered as {rendered:?}"
    );
}
