//! Derivation of the request body length from the head (RFC 9112 §6.3).
//!
//! The rules here are deliberately strict: every head on which two
//! reasonable implementations could disagree about where the body ends is
//! rejected, because that disagreement is what request smuggling exploits.

use crate::error::HeadError;
use crate::headers::Headers;
use crate::list;
use crate::method::Version;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyFraming {
    /// No body: neither `Content-Length` nor `Transfer-Encoding` was sent.
    None,
    /// Exactly this many body bytes follow the head (may be 0).
    Length(u64),
    /// A `chunked` body follows the head.
    Chunked,
}

/// Derives the framing of a request from its headers.
///
/// Guarantees: returns `Chunked` only when `Transfer-Encoding` is exactly
/// `chunked` (case-insensitive, OWS and empty list elements ignored) on an
/// HTTP/1.1 request without `Content-Length`; `Length(n)` only when every
/// `Content-Length` element is the same valid decimal `n` and there is no
/// `Transfer-Encoding`; `None` when neither field is present.
pub(crate) fn derive(headers: &Headers, version: Version) -> Result<BodyFraming, HeadError> {
    let has_te = headers.contains("transfer-encoding");
    let has_cl = headers.contains("content-length");
    if has_te && has_cl {
        return Err(HeadError::ConflictingFraming);
    }
    if has_te {
        if version == Version::Http10 {
            return Err(HeadError::Malformed(
                "transfer-encoding in an HTTP/1.0 request",
            ));
        }
        check_transfer_encoding(headers)?;
        return Ok(BodyFraming::Chunked);
    }
    if has_cl {
        return content_length(headers).map(BodyFraming::Length);
    }
    Ok(BodyFraming::None)
}

/// Accepts only a coding list whose last element is the sole `chunked`.
fn check_transfer_encoding(headers: &Headers) -> Result<(), HeadError> {
    let codings: Vec<&[u8]> = list::elements(headers.get_all("transfer-encoding"))
        .filter(|c| !c.is_empty())
        .collect();
    let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.split_last() {
        None => Err(HeadError::Malformed("empty transfer-encoding")),
        Some((last, _)) if !is_chunked(last) => Err(HeadError::Malformed(
            "transfer-encoding does not end in chunked",
        )),
        Some((_, before)) if before.iter().any(is_chunked) => {
            Err(HeadError::Malformed("chunked applied more than once"))
        }
        Some((_, before)) if !before.is_empty() => Err(HeadError::UnsupportedTransferEncoding),
        Some(_) => Ok(()),
    }
}

/// The common value of all `Content-Length` elements.
fn content_length(headers: &Headers) -> Result<u64, HeadError> {
    let mut found: Option<u64> = None;
    for element in list::elements(headers.get_all("content-length")) {
        let n = parse_decimal(element).ok_or(HeadError::InvalidContentLength)?;
        match found {
            Some(prev) if prev != n => return Err(HeadError::ConflictingFraming),
            _ => found = Some(n),
        }
    }
    found.ok_or(HeadError::InvalidContentLength)
}

/// `1*DIGIT` as a `u64`; `None` for empty input, any non-digit (sign, space,
/// hex) or overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        let mut hs = Headers::new();
        for (n, v) in pairs {
            hs.push(n, v.as_bytes());
        }
        hs
    }

    fn d(pairs: &[(&str, &str)]) -> Result<BodyFraming, HeadError> {
        derive(&h(pairs), Version::Http11)
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"007"), Some(7));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"1.0",
            b"1e3",
            b" 1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn none_when_absent() {
        assert_eq!(d(&[("Host", "x")]), Ok(BodyFraming::None));
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(d(&[("Content-Length", "42")]), Ok(BodyFraming::Length(42)));
        assert_eq!(d(&[("content-length", "0")]), Ok(BodyFraming::Length(0)));
        assert_eq!(
            d(&[("Content-Length", "5"), ("Content-Length", "5")]),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            d(&[("Content-Length", "5, 5,5")]),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            d(&[("Content-Length", "5"), ("Content-Length", "6")]),
            Err(HeadError::ConflictingFraming)
        );
        assert_eq!(
            d(&[("Content-Length", "5, 6")]),
            Err(HeadError::ConflictingFraming)
        );
        for bad in [
            "",
            "-1",
            "+1",
            "1 2",
            "abc",
            "5,",
            "5,,5",
            "99999999999999999999",
        ] {
            assert_eq!(
                d(&[("Content-Length", bad)]),
                Err(HeadError::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        assert_eq!(
            d(&[("Transfer-Encoding", "chunked")]),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            d(&[("Transfer-Encoding", "CHUNKED")]),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            d(&[("Transfer-Encoding", ", chunked ,")]),
            Ok(BodyFraming::Chunked)
        );
        let te = |v| d(&[("Transfer-Encoding", v)]);
        let malformed =
            |r: Result<BodyFraming, HeadError>| matches!(r, Err(HeadError::Malformed(_)));
        assert!(malformed(te("chunked, identity")));
        assert!(malformed(te("gzip")));
        assert!(malformed(te("identity")));
        assert!(malformed(te("xchunked")));
        assert!(malformed(te("chunked;foo=bar")));
        assert!(malformed(te("chunked, chunked")));
        assert!(malformed(te("")));
        assert!(malformed(te(" , ")));
        assert_eq!(
            te("gzip, chunked"),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            d(&[
                ("Transfer-Encoding", "gzip"),
                ("Transfer-Encoding", "chunked")
            ]),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        assert!(malformed(d(&[
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "identity")
        ])));
    }

    #[test]
    fn both_is_conflict() {
        assert_eq!(
            d(&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
            Err(HeadError::ConflictingFraming)
        );
        assert_eq!(
            d(&[("Transfer-Encoding", "gzip"), ("Content-Length", "bogus")]),
            Err(HeadError::ConflictingFraming)
        );
    }

    #[test]
    fn http10_chunked_rejected() {
        assert!(matches!(
            derive(&h(&[("Transfer-Encoding", "chunked")]), Version::Http10),
            Err(HeadError::Malformed(_))
        ));
        assert_eq!(
            derive(&h(&[("Content-Length", "3")]), Version::Http10),
            Ok(BodyFraming::Length(3))
        );
    }
}
