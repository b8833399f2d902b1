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
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
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
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
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
