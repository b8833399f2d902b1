//! Property checks for the auth fuzz targets (`htpasswd`, `authorization`,
//! `jwt`), shared by the targets in `fuzz/fuzz_targets/` and by the
//! regression test `server/tests/fuzz_regressions.rs` (which includes this
//! file with `#[path]`, so `cargo test` replays every seed and saved crash on
//! stable, without libFuzzer). Each entry point takes the raw fuzzer input
//! and panics if a property fails. Only the public `berth` API is used.
#![allow(dead_code)] // each fuzz target uses one entry point

use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use berth::auth::htpasswd::{parse, HtpasswdError};
use berth::auth::token::{Scope, TokenAuth, TokenSettings};
use berth::auth::{parse_basic, parse_bearer};
use ring::signature::KeyPair as _;

// ---------------------------------------------------------------- htpasswd

/// `htpasswd`: the input (lossily UTF-8) as an htpasswd file. Never panics;
/// an error names a line that exists; every user parsed is non-empty, has
/// no ':' and comes from a `user:hash` line of the input; writing the users
/// back as a file parses to the same users.
pub fn htpasswd(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse(Path::new("fuzz"), &text) {
        Ok(users) => {
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            let mut rewritten = String::new();
            for (user, hash) in &users {
                assert!(!user.is_empty() && !user.contains(':'), "user {user:?}");
                let line = format!("{user}:{hash}");
                assert!(
                    lines.contains(&line.as_str()),
                    "{line:?} is not a line of the input"
                );
                rewritten.push_str(&line);
                rewritten.push('\n');
            }
            let again = parse(Path::new("fuzz"), &rewritten)
                .unwrap_or_else(|e| panic!("its own users do not re-parse: {e}"));
            assert_eq!(again, users);
        }
        Err(HtpasswdError::Line { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
        }
        Err(other) => panic!("parsing text failed without a line: {other}"),
    }
}

// ---------------------------------------------------------------- authorization

/// `authorization`: the input (lossily UTF-8) as an `Authorization` value.
/// A parsed Basic value re-encodes to itself (scheme aside) and its user
/// has no ':'; a parsed Bearer token is trimmed, non-blank when the value
/// has one, and `Bearer <token>` gives it back; no value is both.
pub fn authorization(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    let basic = parse_basic(&value);
    if let Some((user, password)) = &basic {
        assert!(!user.contains(':'), "user {user:?}");
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        let (scheme, rest) = value
            .trim()
            .split_once(' ')
            .expect("a parsed value has a space");
        assert!(scheme.eq_ignore_ascii_case("basic"));
        assert_eq!(
            rest.trim(),
            encoded,
            "a parsed Basic value re-encodes to itself"
        );
        assert_eq!(
            parse_basic(&format!("Basic {encoded}")),
            Some((user.clone(), password.clone()))
        );
    }
    let bearer = parse_bearer(&value);
    if let Some(token) = bearer {
        assert_eq!(token, token.trim());
        assert!(basic.is_none(), "both Basic and Bearer");
        if !token.is_empty() {
            assert_eq!(parse_bearer(&format!("Bearer {token}")), Some(token));
        }
    }
}

// ---------------------------------------------------------------- jwt

const ISSUER: &str = "fuzz-issuer";
const SERVICE: &str = "fuzz-service";
const LEEWAY: u64 = 60;

struct Signer {
    auth: TokenAuth,
    pair: ring::signature::Ed25519KeyPair,
    _dir: tempfile::TempDir,
}

/// Token auth with one Ed25519 key (`kid` "k1", a fixed seed, so seeds can
/// carry tokens it signed), and that key.
fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32])
            .expect("a 32-byte seed");
        let dir = tempfile::tempdir().expect("temp dir");
        let jwks = dir.path().join("jwks.json");
        let set = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}]});
        std::fs::write(&jwks, set.to_string()).expect("jwks");
        let auth = TokenAuth::new(TokenSettings {
            realm: "https://auth.example/token".into(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            root_cert_bundle: None,
            jwks: Some(jwks),
            signing_algorithms: Vec::new(),
        })
        .expect("token auth");
        Signer {
            auth,
            pair,
            _dir: dir,
        }
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `token`'s third part is a valid signature of its first two by
/// the fuzz key (an independent check with ring).
fn signed_by_key(token: &str) -> bool {
    let mut parts = token.rsplitn(2, '.');
    let (Some(sig), Some(input)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        signer().pair.public_key().as_ref(),
    )
    .verify(input.as_bytes(), &sig)
    .is_ok()
}

/// Whether the claims (JSON) are ones the registry must accept or may:
/// issuer, audience, expiry and not-before as the token spec says.
fn claims_acceptable(claims: &[u8]) -> bool {
    // Lossily: a claim the registry ignores may hold invalid UTF-8 (serde
    // skips it unchecked); the claims checked here cannot.
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(claims)) else {
        return false;
    };
    let now = now();
    let iss = v.get("iss").and_then(|i| i.as_str()) == Some(ISSUER);
    let aud = match v.get("aud") {
        Some(serde_json::Value::String(a)) => a == SERVICE,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(SERVICE)),
        _ => false,
    };
    let exp = v
        .get("exp")
        .and_then(|e| e.as_u64())
        .is_some_and(|exp| exp.saturating_add(LEEWAY) > now);
    let nbf = match v.get("nbf") {
        None | Some(serde_json::Value::Null) => true,
        Some(n) => n.as_u64().is_some_and(|nbf| nbf <= now + LEEWAY),
    };
    iss && aud && exp && nbf
}

/// `jwt`: the first byte picks the mode. 0: the rest (lossily UTF-8) is a
/// token, verified as sent. Otherwise the rest is a JWT header and claims
/// (split at the first 0xFF), signed with the configured key. Properties:
/// never a panic; a token is accepted only when its signature verifies
/// under the key (checked independently with ring) and its claims pass
/// issuer, audience, expiry and not-before; a token whose signature was
/// altered is never accepted; what it grants is only what it lists.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = signer();
    let token = if mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let at = rest.iter().position(|&b| b == 0xFF).unwrap_or(rest.len());
        let (header, claims) = (&rest[..at], rest.get(at + 1..).unwrap_or(&[]));
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = URL_SAFE_NO_PAD.encode(s.pair.sign(input.as_bytes()).as_ref());
        format!("{input}.{sig}")
    };
    if let Ok(grants) = s.auth.verify(&token) {
        assert!(
            signed_by_key(&token),
            "accepted a token the key did not sign: {token:?}"
        );
        let claims = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .expect("an accepted token has claims");
        assert!(
            claims_acceptable(&claims),
            "accepted claims: {}",
            String::from_utf8_lossy(&claims)
        );
        let unlisted = Scope::repository("fuzz/never-granted-\u{1}", &["pull"]);
        assert!(
            !grants.allows(&unlisted) || claims.windows(13).any(|w| w == b"never-granted"),
            "grants a scope the token does not list"
        );
    }
    // The same token with its signature altered (one bit of its last
    // character flipped, or a character added) is refused.
    if let Some(last) = token.chars().last() {
        let mut forged = token[..token.len() - last.len_utf8()].to_owned();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        if !signed_by_key(&forged) {
            assert!(
                s.auth.verify(&forged).is_err(),
                "accepted a forged signature: {forged:?}"
            );
        }
    }
}
