//! Percent-decoding (RFC 3986 §2.1) of paths and query strings.

/// Percent-decodes `s`. Returns `None` if an escape is malformed or the
/// result is not UTF-8. `+` is left as is (paths and digests never use it
/// for spaces).
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_byte(bytes.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes a form-encoded query value (`application/x-www-form-urlencoded`,
/// as token services receive `scope=`): `%XX` escapes and `+` for a space.
/// Never fails: a malformed escape is kept as it is, and bytes that are not
/// UTF-8 become U+FFFD.
pub fn percent_decode_form(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(hex_byte);
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte two hex digits spell (`from_str_radix` alone would also take
/// a sign, as in `%+1`).
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let value = |d: u8| (d as char).to_digit(16);
    match digits {
        [hi, lo] => Some((value(*hi)? * 16 + value(*lo)?) as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_escapes_are_refused() {
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%+1"), None, "a sign is not a hex digit");
    }

    #[test]
    fn form_values_decode_plus_and_keep_bad_escapes() {
        assert_eq!(percent_decode_form("a%3Ab+c%2"), "a:b c%2");
        assert_eq!(
            percent_decode_form("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode_form("%zz%"), "%zz%");
        assert_eq!(percent_decode_form("%ff"), "\u{fffd}");
        assert_eq!(percent_decode_form("%+1"), "% 1");
    }
}
