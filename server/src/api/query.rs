//! Query-string parameters. Pure.

use berth_http::percent_decode;

/// Query parameters in order, each percent-decoded. Malformed pairs are
/// kept with their raw text so a handler can refuse them by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a query string (without the leading `?`).
    pub fn parse(query: Option<&str>) -> Query {
        let Some(q) = query else {
            return Query::default();
        };
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let decode = |x: &str| percent_decode(x).unwrap_or_else(|| x.to_owned());
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_finds_params() {
        let q = Query::parse(Some("digest=sha256%3Aab&n=2&&flag"));
        assert_eq!(q.get("digest"), Some("sha256:ab"));
        assert_eq!(q.get("n"), Some("2"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("missing"), None);
    }
}
