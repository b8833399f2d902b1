//! An owned, ordered header list with case-insensitive lookup.

use std::ops::Range;

/// The header fields of a request, in wire order, duplicates kept.
///
/// Names and values are copied out of the input buffer into two contiguous
/// allocations. Names compare case-insensitively (ASCII); values are raw
/// bytes as delivered by `httparse` (leading/trailing whitespace stripped,
/// no control characters other than HTAB).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    names: String,
    values: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Headers {
            names: String::with_capacity(n * 16),
            values: Vec::with_capacity(n * 32),
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends a field after all existing ones. Performs no validation; the
    /// parser only pushes fields `httparse` accepted.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let n0 = self.names.len();
        self.names.push_str(name);
        let v0 = self.values.len();
        self.values.extend_from_slice(value);
        self.entries
            .push((n0..self.names.len(), v0..self.values.len()));
    }

    fn entry(&self, (n, v): &(Range<usize>, Range<usize>)) -> (&str, &[u8]) {
        (
            self.names.get(n.clone()).unwrap_or(""),
            self.values.get(v.clone()).unwrap_or(&[]),
        )
    }

    /// The first value of `name` (case-insensitive) as text, or `None` if the
    /// field is absent or its first value is not valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of `name` (case-insensitive), in wire order, as raw bytes.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether at least one field called `name` (case-insensitive) exists.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Number of fields, duplicates counted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All `(name, value)` pairs in wire order, names as sent (case kept).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(move |e| self.entry(e))
    }
}
