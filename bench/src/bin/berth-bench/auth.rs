//! Pure pieces of registry authentication, no sockets: scope sets (what a
//! bearer token must grant), token service answers, and the encodings they
//! need (base64, base64url, percent-encoding). The challenge flow that uses
//! them is in `http.rs`; challenges are parsed by
//! `berth_http::parse_challenge`, query values decoded by
//! `berth_http::percent_decode_form`.

use std::collections::{BTreeMap, BTreeSet};

/// The accesses a token must grant, as resource (`repository:bench/app`)
/// → actions (`pull`, `push`); merged over every challenge seen so a
/// token fetched once covers every request of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeMap<String, BTreeSet<String>>);

impl Scopes {
    /// Parses a challenge's `scope`: space-separated `type:name:actions`
    /// (`name` may hold colons, e.g. a registry host with a port).
    pub fn parse(text: &str) -> Scopes {
        let mut s = Scopes::default();
        for item in text.split_ascii_whitespace() {
            if let Some((resource, actions)) = item.rsplit_once(':') {
                if !resource.contains(':') {
                    continue;
                }
                let set = s.0.entry(resource.to_string()).or_default();
                set.extend(
                    actions
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string),
                );
            }
        }
        s
    }

    pub fn merge(&mut self, other: &Scopes) {
        for (r, a) in &other.0 {
            self.0
                .entry(r.clone())
                .or_default()
                .extend(a.iter().cloned());
        }
    }

    /// Whether every access of `other` is in `self`.
    pub fn covers(&self, other: &Scopes) -> bool {
        other
            .0
            .iter()
            .all(|(r, a)| self.0.get(r).is_some_and(|have| a.is_subset(have)))
    }

    /// One `type:name:a,b` string per resource, as token services take
    /// them (one `scope=` query parameter each).
    pub fn items(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(r, a)| format!("{r}:{}", a.iter().cloned().collect::<Vec<_>>().join(",")))
            .collect()
    }
}

/// The token from a token service's JSON answer: `token`, or the OAuth2
/// spelling `access_token` (Docker's token spec allows either).
pub fn parse_token_response(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the token service's answer is not JSON: {e}"))?;
    for key in ["token", "access_token"] {
        if let Some(t) = v.get(key).and_then(|t| t.as_str()) {
            if !t.is_empty() {
                return Ok(t.to_string());
            }
        }
    }
    Err("the token service's answer has no \"token\" or \"access_token\"".into())
}

/// The query string for a token request (without the `?`).
pub fn token_query(service: Option<&str>, scopes: &Scopes) -> String {
    let mut parts = Vec::new();
    if let Some(s) = service {
        parts.push(format!("service={}", percent_encode(s)));
    }
    for item in scopes.items() {
        parts.push(format!("scope={}", percent_encode(&item)));
    }
    parts.join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(input: &[u8], table: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(table[(n >> 18) as usize & 63] as char);
        out.push(table[(n >> 12) as usize & 63] as char);
        if c.len() > 1 {
            out.push(table[(n >> 6) as usize & 63] as char);
        } else if pad {
            out.push('=');
        }
        if c.len() > 2 {
            out.push(table[n as usize & 63] as char);
        } else if pad {
            out.push('=');
        }
    }
    out
}

/// Standard base64 with padding (Basic credentials).
pub fn base64(input: &[u8]) -> String {
    encode(input, STANDARD, true)
}

/// base64url without padding (JWT segments).
pub fn base64url(input: &[u8]) -> String {
    encode(input, URL_SAFE, false)
}

/// Decodes standard base64 (padding optional); `None` if malformed.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in input.trim_end_matches('=').bytes() {
        let v = STANDARD.iter().position(|&t| t == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_merge_cover_and_format() {
        let mut a = Scopes::parse("repository:bench/app:pull");
        let b = Scopes::parse("repository:bench/app:push,pull registry:catalog:*");
        assert!(!a.covers(&b));
        a.merge(&b);
        assert!(a.covers(&b));
        assert!(a.covers(&Scopes::default()));
        assert_eq!(
            a.items(),
            vec!["registry:catalog:*", "repository:bench/app:pull,push"]
        );
        let host = Scopes::parse("repository:localhost:5000/app:pull junk");
        assert_eq!(host.items(), vec!["repository:localhost:5000/app:pull"]);
        assert_eq!(
            token_query(Some("my svc"), &host),
            "service=my%20svc&scope=repository%3Alocalhost%3A5000%2Fapp%3Apull"
        );
    }

    #[test]
    fn token_json_forms() {
        assert_eq!(
            parse_token_response(br#"{"token":"abc","expires_in":60}"#),
            Ok("abc".into())
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"xyz"}"#),
            Ok("xyz".into())
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"z"}"#),
            Ok("z".into())
        );
        assert!(parse_token_response(br#"{"expires_in":60}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode("Z!"), None);
        assert_eq!(berth_http::percent_decode_form("a%3Ab+c%2"), "a:b c%2");
        assert_eq!(
            berth_http::percent_decode_form(&percent_encode("repository:a/b:pull,push")),
            "repository:a/b:pull,push"
        );
    }
}
