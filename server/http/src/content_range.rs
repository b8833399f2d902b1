//! The `Content-Range` request header of a chunked blob upload
//! (`PATCH /v2/<name>/blobs/uploads/<id>`).
//!
//! The OCI distribution spec defines it as `<start>-<end>`, matching
//! `^[0-9]+-[0-9]+$`, both offsets inclusive. This is *not* the RFC 9110
//! `Content-Range` response syntax (`bytes 0-99/100`); some clients prefix
//! the spec form with a range unit anyway, so one leading `bytes ` or
//! `bytes=` is tolerated (the unit ASCII case-insensitively, as RFC 9110
//! §14.1 treats range units). Nothing else is: no `/length`, no inner
//! whitespace, no sign, no second prefix.

/// Why a `Content-Range` request header value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContentRangeError {
    /// Not `<start>-<end>` with both offsets one or more ASCII digits
    /// (after an optional `bytes ` / `bytes=` prefix).
    #[error("expected <start>-<end> with decimal offsets")]
    Malformed,
    /// An offset is larger than `u64::MAX`.
    #[error("offset does not fit in 64 bits")]
    TooLarge,
    /// The last offset is before the first (ranges are inclusive, so a
    /// one-byte chunk is `n-n`; an empty chunk has no valid range).
    #[error("end offset {end} is before start offset {start}")]
    EndBeforeStart {
        /// First byte offset as sent.
        start: u64,
        /// Last byte offset as sent.
        end: u64,
    },
}

/// Parses an upload `Content-Range: <start>-<end>` header value into the
/// inclusive byte offsets `(start, end)`.
///
/// Accepted: optional spaces/tabs around the value, one optional
/// case-insensitive `bytes ` or `bytes=` prefix, then `^[0-9]+-[0-9]+$`.
/// Guaranteed on `Ok((start, end))`: `start <= end`, and
/// `format!("{start}-{end}")` parses back to the same pair.
///
/// ```
/// use berth_http::{parse_content_range, ContentRangeError};
/// assert_eq!(parse_content_range("0-1023"), Ok((0, 1023)));
/// assert_eq!(parse_content_range("bytes=1024-2047"), Ok((1024, 2047)));
/// assert_eq!(parse_content_range("5-4"), Err(ContentRangeError::EndBeforeStart { start: 5, end: 4 }));
/// ```
pub fn parse_content_range(value: &str) -> Result<(u64, u64), ContentRangeError> {
    let value = value.trim_matches([' ', '\t']);
    let spec = match value.get(..6) {
        Some(prefix)
            if prefix.eq_ignore_ascii_case("bytes ") || prefix.eq_ignore_ascii_case("bytes=") =>
        {
            &value[6..]
        }
        _ => value,
    };
    let (start, end) = spec.split_once('-').ok_or(ContentRangeError::Malformed)?;
    // Syntax first, so "x-99999999999999999999" is Malformed, not TooLarge.
    // Leading zeros are allowed, as the spec's pattern allows them.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(start) || !digits(end) {
        return Err(ContentRangeError::Malformed);
    }
    // All ASCII digits, so the only way parsing can fail is overflow.
    let offset = |s: &str| s.parse::<u64>().map_err(|_| ContentRangeError::TooLarge);
    let (start, end) = (offset(start)?, offset(end)?);
    if end < start {
        return Err(ContentRangeError::EndBeforeStart { start, end });
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentRangeError::*;

    #[test]
    fn spec_form() {
        assert_eq!(parse_content_range("0-0"), Ok((0, 0)));
        assert_eq!(parse_content_range("0-1023"), Ok((0, 1023)));
        assert_eq!(parse_content_range("007-010"), Ok((7, 10)));
        assert_eq!(parse_content_range(" \t5-9\t "), Ok((5, 9)));
        let max = u64::MAX;
        assert_eq!(parse_content_range(&format!("{max}-{max}")), Ok((max, max)));
        assert_eq!(
            parse_content_range(&format!("0000{max}-0{max}")),
            Ok((max, max))
        );
    }

    #[test]
    fn tolerated_prefixes() {
        for v in [
            "bytes 3-4",
            "bytes=3-4",
            "BYTES=3-4",
            "Bytes 3-4",
            " bytes=3-4 ",
        ] {
            assert_eq!(parse_content_range(v), Ok((3, 4)), "{v:?}");
        }
    }

    #[test]
    fn malformed() {
        for v in [
            "",
            "-",
            "5",
            "5-",
            "-5",
            "a-b",
            "+1-2",
            "1-+2",
            "1--2",
            "1-2-3",
            "1 -2",
            "1- 2",
            "bytes",
            "bytes ",
            "bytes=",
            "bytes  1-2",
            "bytes= 1-2",
            "bytes =1-2",
            "bytes1-2",
            "bytes=bytes=1-2",
            "bytes 0-9/10",
            "bytes 0-9/*",
            "0x1-0x2",
            "١-٢",
            "1-2\r",
            "1-2\n",
        ] {
            assert_eq!(parse_content_range(v), Err(Malformed), "{v:?}");
        }
    }

    #[test]
    fn too_large_and_reversed() {
        assert_eq!(parse_content_range("0-18446744073709551616"), Err(TooLarge));
        assert_eq!(
            parse_content_range("99999999999999999999-99999999999999999999"),
            Err(TooLarge)
        );
        assert_eq!(
            parse_content_range("x-99999999999999999999"),
            Err(Malformed)
        );
        assert_eq!(
            parse_content_range("10-9"),
            Err(EndBeforeStart { start: 10, end: 9 })
        );
        assert_eq!(
            parse_content_range("bytes=1-0"),
            Err(EndBeforeStart { start: 1, end: 0 })
        );
    }

    #[test]
    fn canonical_form_round_trips() {
        for v in ["bytes=00-01", "12-12", "BYTES 4-400"] {
            let (s, e) = parse_content_range(v).unwrap();
            assert_eq!(parse_content_range(&format!("{s}-{e}")), Ok((s, e)));
        }
    }
}
