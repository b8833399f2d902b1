//! The `Range` request header (RFC 9110 §14.2) for a representation of a
//! known length. Only single byte ranges are served; a multi-range request
//! is reported as such so the caller can refuse it cleanly.

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole representation (200). Returned for
    /// a header in a unit other than `bytes` or with invalid syntax, which
    /// RFC 9110 says to ignore.
    Full,
    /// Serve bytes `start..=end` (206); `end < len` is guaranteed.
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// No requested range overlaps the representation (416).
    Unsatisfiable,
    /// Several ranges were requested; berth does not build multipart bodies.
    Multiple,
}

/// A byte position, `1*DIGIT` (leading zeros allowed), if it fits in a u64.
/// Any position up to `u64::MAX` must parse: a `Partial` answer for a huge
/// representation has 20-digit offsets, and its canonical `bytes=start-end`
/// form must mean the same range again.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Interprets a `Range` header value against a length of `len` bytes.
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let specs: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.len() > 1 {
        return RangeRequest::Multiple;
    }
    let Some((first, last)) = specs.first().and_then(|s| s.split_once('-')) else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Some(suffix) = digits(last) else {
            return RangeRequest::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial {
            start: len.saturating_sub(suffix),
            end: len - 1,
        };
    }
    let Some(start) = digits(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(end) if end >= start => end,
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(parse_range("bytes=2-", 10), Partial { start: 2, end: 9 });
        assert_eq!(parse_range("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(parse_range("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=5-100", 10), Partial { start: 5, end: 9 });
    }

    #[test]
    fn unsatisfiable_and_multiple() {
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Multiple);
    }

    #[test]
    fn positions_up_to_u64_max() {
        // Found by the `range` fuzz target: the answer for a suffix range of a
        // huge representation has a 20-digit end, which must parse again.
        let max = u64::MAX;
        let got = parse_range("bytes=-9999999999999999999", max);
        assert_eq!(
            got,
            Partial {
                start: max - 9_999_999_999_999_999_999,
                end: max - 1
            }
        );
        let Partial { start, end } = got else {
            unreachable!()
        };
        assert_eq!(parse_range(&format!("bytes={start}-{end}"), max), got);
        assert_eq!(
            parse_range("bytes=18446744073709551614-", max),
            Partial {
                start: max - 1,
                end: max - 1
            }
        );
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=00000000000000000000005-", 10),
            Partial { start: 5, end: 9 }
        );
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        for v in [
            "items=0-1",
            "bytes=",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=--1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(parse_range(v, 10), Full, "{v}");
        }
    }
}
