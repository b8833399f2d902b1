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

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Interprets a `Range` header value against a length of `len` bytes.
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    let specs: Vec<&str> = spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if specs.len() > 1 {
        return RangeRequest::Multiple;
    }
    let Some((first, last)) = specs.first().and_then(|s| s.split_once('-')) else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Some(suffix) = digits(last) else { return RangeRequest::Full };
        if suffix == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial { start: len.saturating_sub(suffix), end: len - 1 };
    }
    let Some(start) = digits(first) else { return RangeRequest::Full };
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
    RangeRequest::Partial { start, end: end.min(len - 1) }
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
    fn invalid_syntax_is_ignored() {
        for v in ["items=0-1", "bytes=", "bytes=a-b", "bytes=5-2", "bytes=--1", "bytes=+1-2", "bytes=99999999999999999999-"] {
            assert_eq!(parse_range(v, 10), Full, "{v}");
        }
    }
}
