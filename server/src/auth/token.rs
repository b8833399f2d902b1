//! Bearer-token authentication (registry:2's `auth.token`, the Docker token
//! specification): clients get a JWT from an external token service and send
//! it as `Authorization: Bearer`. berth verifies the signature (RS256,
//! ES256 or EdDSA) with a key from `rootcertbundle` (matched by the JWT's
//! `kid`, the libtrust key id registry:2 uses, or by an `x5c` chain that
//! leads to a bundle certificate) or from a `jwks` file (matched by `kid`),
//! then checks `iss`, `aud`, `exp`, `nbf` and that the `access` claim grants
//! every scope the request needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

/// One access a request needs (`repository:NAME:pull,push`,
/// `registry:catalog:*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry`.
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// Actions needed (`pull`, `push`, `delete`, `*`).
    pub actions: Vec<String>,
}

impl Scope {
    /// `repository:NAME:actions`.
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// `registry:catalog:*`.
    pub fn catalog() -> Scope {
        Scope {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// The scope string for a challenge.
    pub fn to_challenge(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// A JWT signature algorithm berth accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// From a JWT `alg` / config name.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }
}

/// A public key that can verify token signatures.
#[derive(Clone, Debug)]
enum PublicKey {
    /// PKCS#1 RSAPublicKey DER.
    Rsa(Vec<u8>),
    /// Uncompressed P-256 point.
    P256(Vec<u8>),
    /// Raw Ed25519 key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        let (algorithm, key): (&dyn signature::VerificationAlgorithm, &[u8]) = match (alg, self) {
            (Algorithm::Rs256, PublicKey::Rsa(k)) => (&signature::RSA_PKCS1_2048_8192_SHA256, k),
            (Algorithm::Es256, PublicKey::P256(k)) => (&signature::ECDSA_P256_SHA256_FIXED, k),
            (Algorithm::EdDsa, PublicKey::Ed25519(k)) => (&signature::ED25519, k),
            _ => return false,
        };
        UnparsedPublicKey::new(algorithm, key)
            .verify(message, sig)
            .is_ok()
    }

    /// The key from a DER SubjectPublicKeyInfo.
    fn from_spki(spki: &[u8]) -> Option<PublicKey> {
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
        let (tag, body, _) = der_next(spki)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, algorithm, rest) = der_next(body)?;
        if tag != 0x30 {
            return None;
        }
        let (tag, key_bits, _) = der_next(rest)?;
        if tag != 0x03 || key_bits.first() != Some(&0) {
            return None;
        }
        let key = key_bits[1..].to_vec();
        let (tag, oid, params) = der_next(algorithm)?;
        if tag != 0x06 {
            return None;
        }
        match oid {
            RSA => Some(PublicKey::Rsa(key)),
            EC => {
                let (tag, curve, _) = der_next(params)?;
                (tag == 0x06 && curve == P256).then_some(PublicKey::P256(key))
            }
            ED25519 => Some(PublicKey::Ed25519(key)),
            _ => None,
        }
    }
}

/// Splits one DER TLV: (tag, contents, rest). Definite lengths only.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

/// registry:2's (libtrust) key id: base32 of the first 240 bits of the
/// SHA-256 of the SPKI DER, in groups of four joined by ':'.
pub fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki);
    let bytes = &hash[..30];
    let mut out = String::with_capacity(48);
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// The `auth.token` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    /// Where clients get tokens (`realm` in the challenge).
    pub realm: String,
    /// This registry's name in tokens (`aud`) and the challenge.
    pub service: String,
    /// The token issuer (`iss`) accepted.
    pub issuer: String,
    /// PEM bundle of certificates whose keys sign tokens.
    pub root_cert_bundle: Option<PathBuf>,
    /// A JWK Set file of signing keys.
    pub jwks: Option<PathBuf>,
    /// Algorithms accepted; empty = RS256, ES256 and EdDSA.
    pub signing_algorithms: Vec<String>,
}

/// Why token auth cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenSetupError {
    /// A key source could not be read or parsed.
    #[error("{what} {path}: {message}")]
    Keys {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is unusable.
    #[error("auth.token: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn der_integer(value: &[u8], out: &mut Vec<u8>) {
    let trimmed: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend(trimmed);
    out.push(0x02);
    der_length(body.len(), out);
    out.extend(body);
}

impl Jwk {
    fn public_key(&self) -> Option<PublicKey> {
        match self.kty.as_str() {
            "RSA" => {
                let mut inner = Vec::new();
                der_integer(&b64url(self.n.as_deref()?)?, &mut inner);
                der_integer(&b64url(self.e.as_deref()?)?, &mut inner);
                let mut der = vec![0x30];
                der_length(inner.len(), &mut der);
                der.extend(inner);
                Some(PublicKey::Rsa(der))
            }
            "EC" if self.crv.as_deref() == Some("P-256") => {
                let mut point = vec![4];
                point.extend(b64url(self.x.as_deref()?)?);
                point.extend(b64url(self.y.as_deref()?)?);
                (point.len() == 65).then_some(PublicKey::P256(point))
            }
            "OKP" if self.crv.as_deref() == Some("Ed25519") => {
                Some(PublicKey::Ed25519(b64url(self.x.as_deref()?)?))
            }
            _ => None,
        }
    }
}

/// Verifies tokens. Shared by every event loop.
pub struct TokenAuth {
    settings: TokenSettings,
    keys_by_id: HashMap<String, PublicKey>,
    roots: Vec<CertificateDer<'static>>,
    algorithms: Vec<Algorithm>,
    /// Tokens already verified, by SHA-256 of the token: their grants and
    /// `exp`. A client sends the same token on every request; checking its
    /// signature each time costs ~100 µs (ES256), a lookup ~1 µs.
    verified: std::sync::Mutex<HashMap<[u8; 32], (Grants, u64)>>,
}

/// Most tokens remembered by [`TokenAuth`]; past it, expired ones are
/// dropped, then all.
const VERIFIED_TOKENS_MAX: usize = 16_384;

/// Why a token was refused (logged; the client sees a challenge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not accepted.
    #[error("signing algorithm {0:?} not accepted")]
    Algorithm(String),
    /// No configured key matches `kid` / `x5c`.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// A claim is wrong (issuer, audience, expiry).
    #[error("token claim {0} rejected")]
    Claim(&'static str),
}

/// A verified token's grants.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// The token's subject (user), if any.
    pub subject: Option<String>,
    access: Vec<Scope>,
}

impl Grants {
    /// Whether the token grants every action of `scope`.
    pub fn allows(&self, scope: &Scope) -> bool {
        scope.actions.iter().all(|needed| {
            self.access.iter().any(|granted| {
                granted.kind == scope.kind
                    && granted.name == scope.name
                    && granted.actions.iter().any(|a| a == needed || a == "*")
            })
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    x5c: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct AccessClaim {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    actions: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(default)]
    access: Vec<AccessClaim>,
}

impl TokenAuth {
    /// Loads the key sources; fails naming the file if one is unusable.
    pub fn new(settings: TokenSettings) -> Result<TokenAuth, TokenSetupError> {
        let mut keys_by_id = HashMap::new();
        let mut roots = Vec::new();
        if let Some(path) = &settings.root_cert_bundle {
            let error = |message: String| TokenSetupError::Keys {
                what: "auth.token.rootcertbundle",
                path: path.clone(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| error(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.to_string()))?;
            if certs.is_empty() {
                return Err(error("holds no PEM certificate".into()));
            }
            for cert in certs {
                let parsed =
                    webpki::EndEntityCert::try_from(&cert).map_err(|e| error(format!("{e:?}")))?;
                let spki = parsed.subject_public_key_info();
                let key = PublicKey::from_spki(spki.as_ref()).ok_or_else(|| {
                    error("a certificate's key is not RSA, P-256 or Ed25519".into())
                })?;
                keys_by_id.insert(libtrust_key_id(spki.as_ref()), key);
                roots.push(cert.into_owned());
            }
        }
        if let Some(path) = &settings.jwks {
            let error = |message: String| TokenSetupError::Keys {
                what: "auth.token.jwks",
                path: path.clone(),
                message,
            };
            let text = std::fs::read(path).map_err(|e| error(e.to_string()))?;
            let set: JwkSet =
                serde_json::from_slice(&text).map_err(|e| error(format!("not a JWK set: {e}")))?;
            for jwk in set.keys {
                let kid = jwk
                    .kid
                    .clone()
                    .ok_or_else(|| error("a key has no kid".into()))?;
                let key = jwk
                    .public_key()
                    .ok_or_else(|| error(format!("key {kid}: unsupported or malformed")))?;
                keys_by_id.insert(kid, key);
            }
        }
        if keys_by_id.is_empty() {
            return Err(TokenSetupError::Invalid(
                "set rootcertbundle or jwks: no signing keys configured".into(),
            ));
        }
        let algorithms = if settings.signing_algorithms.is_empty() {
            vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa]
        } else {
            settings
                .signing_algorithms
                .iter()
                .map(|a| {
                    Algorithm::from_name(a).ok_or_else(|| {
                        TokenSetupError::Invalid(format!(
                            "signingalgorithms: unsupported {a} (RS256, ES256, EdDSA)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(TokenAuth {
            settings,
            keys_by_id,
            roots,
            algorithms,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The settings (realm and service for challenges).
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    fn key_from_chain(&self, chain: &[String]) -> Option<PublicKey> {
        let ders: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|c| STANDARD.decode(c).ok().map(CertificateDer::from))
            .collect::<Option<_>>()?;
        let leaf = ders.first()?;
        let parsed = webpki::EndEntityCert::try_from(leaf).ok()?;
        let trusted = if self.roots.iter().any(|r| r.as_ref() == leaf.as_ref()) {
            true
        } else {
            let anchors: Vec<_> = self
                .roots
                .iter()
                .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
                .collect();
            let now = UnixTime::now();
            parsed
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &anchors,
                    &ders[1..],
                    now,
                    webpki::KeyUsage::required_if_present(&[]),
                    None,
                    None,
                )
                .is_ok()
        };
        trusted
            .then(|| PublicKey::from_spki(parsed.subject_public_key_info().as_ref()))
            .flatten()
    }

    /// Verifies `token`; returns what it grants. A token verified before is
    /// answered from memory until its `exp` (plus the usual leeway) passes.
    pub fn verify(&self, token: &str) -> Result<Grants, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            match verified.get(&key) {
                Some((grants, exp)) if exp.saturating_add(LEEWAY_SECONDS) > now => {
                    return Ok(grants.clone())
                }
                Some(_) => {
                    verified.remove(&key);
                    return Err(TokenError::Claim("exp"));
                }
                None => {}
            }
        }
        let (grants, exp) = self.verify_signature_and_claims(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_TOKENS_MAX {
            verified.retain(|_, (_, exp)| (*exp).saturating_add(LEEWAY_SECONDS) > now);
            if verified.len() >= VERIFIED_TOKENS_MAX {
                verified.clear();
            }
        }
        verified.insert(key, (grants.clone(), exp));
        Ok(grants)
    }

    /// The full check: signature by a trusted key, issuer, audience,
    /// expiry and not-before. Returns the grants and `exp`.
    fn verify_signature_and_claims(&self, token: &str) -> Result<(Grants, u64), TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = serde_json::from_slice(&b64url(h).ok_or(TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
        let alg = Algorithm::from_name(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| TokenError::Algorithm(header.alg.clone()))?;
        let key = match (&header.x5c, &header.kid) {
            (Some(chain), _) => self.key_from_chain(chain).ok_or(TokenError::UnknownKey)?,
            (None, Some(kid)) => self
                .keys_by_id
                .get(kid)
                .cloned()
                .ok_or(TokenError::UnknownKey)?,
            (None, None) => return Err(TokenError::UnknownKey),
        };
        let sig = b64url(s).ok_or(TokenError::Malformed)?;
        if !key.verify(alg, format!("{h}.{p}").as_bytes(), &sig) {
            return Err(TokenError::BadSignature);
        }
        let claims: Claims = serde_json::from_slice(&b64url(p).ok_or(TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
        if claims.iss.as_deref() != Some(self.settings.issuer.as_str()) {
            return Err(TokenError::Claim("iss"));
        }
        let audience_ok = match &claims.aud {
            Some(serde_json::Value::String(a)) => *a == self.settings.service,
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(self.settings.service.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::Claim("aud"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let exp = match claims.exp {
            Some(exp) if exp.saturating_add(LEEWAY_SECONDS) > now => exp,
            _ => return Err(TokenError::Claim("exp")),
        };
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECONDS))
        {
            return Err(TokenError::Claim("nbf"));
        }
        let grants = Grants {
            subject: claims.sub,
            access: claims
                .access
                .into_iter()
                .map(|a| Scope {
                    kind: a.kind,
                    name: a.name,
                    actions: a.actions,
                })
                .collect(),
        };
        Ok((grants, exp))
    }
}

/// Reads the key bundle path for error messages.
pub fn describe(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtrust_key_id_has_twelve_groups_of_four() {
        let id = libtrust_key_id(b"any spki bytes");
        assert_eq!(id.len(), 59);
        assert_eq!(id.split(':').count(), 12);
        assert!(id
            .chars()
            .all(|c| c == ':' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
    }

    #[test]
    fn grants_need_every_action() {
        let grants = Grants {
            subject: None,
            access: vec![Scope::repository("a", &["pull"]), Scope::catalog()],
        };
        assert!(grants.allows(&Scope::repository("a", &["pull"])));
        assert!(!grants.allows(&Scope::repository("a", &["pull", "push"])));
        assert!(!grants.allows(&Scope::repository("b", &["pull"])));
        assert!(grants.allows(&Scope::catalog()));
    }

    #[test]
    fn der_reader_refuses_truncation() {
        assert_eq!(der_next(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(der_next(&[0x30, 0x82, 0x00]), None);
        assert_eq!(
            der_next(&[0x02, 0x01, 0x07]),
            Some((0x02, &[7u8][..], &[][..]))
        );
        assert!(PublicKey::from_spki(&[0x30, 0x00]).is_none());
    }

    fn ed25519_auth(dir: &Path) -> (TokenAuth, ring::signature::Ed25519KeyPair) {
        use ring::signature::KeyPair as _;
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .expect("key");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let jwks = dir.join("jwks.json");
        let set = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}]});
        std::fs::write(&jwks, set.to_string()).expect("jwks");
        let auth = TokenAuth::new(TokenSettings {
            realm: "https://auth.example/token".into(),
            service: "svc".into(),
            issuer: "iss".into(),
            root_cert_bundle: None,
            jwks: Some(jwks),
            signing_algorithms: Vec::new(),
        })
        .expect("token auth");
        (auth, pair)
    }

    fn sign(pair: &ring::signature::Ed25519KeyPair, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k1"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"iss": "iss", "aud": "svc", "exp": exp, "sub": "alice",
                "access": [{"type": "repository", "name": "a", "actions": ["pull"]}]})
            .to_string(),
        );
        let input = format!("{header}.{claims}");
        let sig = URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref());
        format!("{input}.{sig}")
    }

    #[test]
    fn a_token_that_never_expires_is_checked_without_overflow() {
        // Found by the `jwt` fuzz target (fuzz/regressions/jwt/exp_u64_max):
        // `exp + leeway` overflowed.
        let dir = tempfile::tempdir().expect("tempdir");
        let (auth, pair) = ed25519_auth(dir.path());
        for _ in 0..2 {
            let grants = auth.verify(&sign(&pair, u64::MAX)).expect("valid token");
            assert!(grants.allows(&Scope::repository("a", &["pull"])));
        }
    }

    #[test]
    fn verified_tokens_are_remembered_only_until_they_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (auth, pair) = ed25519_auth(dir.path());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let token = sign(&pair, now + 300);
        for _ in 0..2 {
            let grants = auth.verify(&token).expect("valid token");
            assert!(grants.allows(&Scope::repository("a", &["pull"])));
        }
        assert_eq!(
            auth.verified.lock().expect("lock").len(),
            1,
            "remembered once"
        );

        // The remembered entry expires like the token: refused, forgotten.
        for (_, exp) in auth.verified.lock().expect("lock").values_mut() {
            *exp = now - LEEWAY_SECONDS - 1;
        }
        assert_eq!(auth.verify(&token).err(), Some(TokenError::Claim("exp")));
        assert!(auth.verified.lock().expect("lock").is_empty());

        // A forged signature is never answered from memory.
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert!(auth.verify(&forged).is_err());
        assert!(
            auth.verify(&sign(&pair, now - 3600)).is_err(),
            "expired token"
        );
    }
}
