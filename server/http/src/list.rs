//! Splitting of comma-separated field values (RFC 9110 §5.6.1).

/// Iterates over the elements of every value of a list-valued field, with
/// optional whitespace (SP / HTAB) trimmed from each element. Empty elements
/// are yielded as empty slices so callers can decide whether to ignore them.
pub(crate) fn elements<'a>(
    values: impl Iterator<Item = &'a [u8]> + 'a,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    values.flat_map(|v| v.split(|&b| b == b',')).map(trim_ows)
}

/// Strips leading and trailing SP / HTAB.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether any non-empty element of the list equals `token`, ASCII
/// case-insensitively.
pub(crate) fn has_token<'a>(values: impl Iterator<Item = &'a [u8]> + 'a, token: &str) -> bool {
    elements(values).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_splits() {
        let vals: [&[u8]; 2] = [b" a ,\tb", b"c,,"];
        let got: Vec<&[u8]> = elements(vals.into_iter()).collect();
        let want: Vec<&[u8]> = vec![b"a", b"b", b"c", b"", b""];
        assert_eq!(got, want);
        assert_eq!(trim_ows(b" \t "), b"");
    }
}
