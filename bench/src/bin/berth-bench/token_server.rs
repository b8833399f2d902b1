//! `berth-bench token-server`: a tiny Docker token service for benchmarks
//! of bearer-token auth. It grants every scope asked for (optionally only
//! to one Basic user) as a JWT signed with `--key` (ES256 for a P-256 key,
//! RS256 for an RSA key; PKCS#8 PEM as `openssl genpkey` writes it), with
//! the libtrust `kid` registry:2 and berth look keys up by, so the
//! registry's `auth.token.rootcertbundle` is just a certificate of that
//! key. Blocking, a thread per connection, keep-alive.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use crate::auth;

#[derive(clap::Args)]
pub struct TokenServerArgs {
    /// The signing key, PEM (PKCS#8 EC P-256 or RSA; PKCS#1 RSA too).
    #[arg(long)]
    key: PathBuf,
    /// The `iss` claim (the registry's auth.token.issuer).
    #[arg(long)]
    issuer: String,
    /// The `aud` claim (the registry's auth.token.service).
    #[arg(long)]
    service: String,
    /// Address to listen on; the bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Token lifetime, seconds.
    #[arg(long, default_value_t = 300)]
    expires: u64,
    /// Only grant tokens to this Basic user (with --password).
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
}

/// A loaded signing key.
pub enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl Signer {
    /// Parses PKCS#8 (EC P-256 or RSA) or PKCS#1 (RSA) DER.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Signer, String> {
        let rng = SystemRandom::new();
        match key {
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                {
                    return Ok(Signer::Es256(k));
                }
                RsaKeyPair::from_pkcs8(der)
                    .map(Signer::Rs256)
                    .map_err(|e| format!("not a P-256 or RSA PKCS#8 key: {e}"))
            }
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map(Signer::Rs256)
                .map_err(|e| format!("bad RSA key: {e}")),
            _ => Err(
                "SEC1 EC keys are not supported: convert with `openssl pkcs8 -topk8 -nocrypt`"
                    .into(),
            ),
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        }
    }

    /// The key's SubjectPublicKeyInfo, DER.
    pub fn spki(&self) -> Vec<u8> {
        match self {
            Signer::Es256(k) => {
                // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }
                let mut out = vec![
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ];
                out.extend_from_slice(k.public_key().as_ref());
                out
            }
            Signer::Rs256(k) => {
                // SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING RSAPublicKey }
                let alg = [
                    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                    0x05, 0x00,
                ];
                let mut bits = vec![0u8];
                bits.extend_from_slice(k.public().as_ref());
                let mut body = alg.to_vec();
                body.extend(der(0x03, &bits));
                der(0x30, &body)
            }
        }
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Signer::Es256(k) => k
                .sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing failed".into()),
            Signer::Rs256(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .map_err(|_| "signing failed".to_string())?;
                Ok(sig)
            }
        }
    }
}

/// A DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// registry:2's (libtrust) key id: base32 of the first 240 bits of the
/// SHA-256 of the SPKI DER, in groups of four joined by ':'.
pub fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki);
    let (mut out, mut buffer, mut bits) = (String::new(), 0u32, 0);
    for &b in &hash[..30] {
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

/// Scopes asked for in a token request's query (`scope=` repeated, each
/// possibly several space-separated scopes), as JWT `access` entries.
pub fn access_claims(query: &str) -> serde_json::Value {
    let mut scopes = auth::Scopes::default();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k == "scope" {
            scopes.merge(&auth::Scopes::parse(&berth_http::percent_decode_form(v)));
        }
    }
    let access: Vec<serde_json::Value> = scopes
        .items()
        .iter()
        .filter_map(|item| {
            let (resource, actions) = item.rsplit_once(':')?;
            let (kind, name) = resource.split_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    serde_json::Value::Array(access)
}

pub struct Minter {
    pub signer: Signer,
    pub kid: String,
    pub issuer: String,
    pub service: String,
    pub expires: u64,
}

impl Minter {
    pub fn mint(
        &self,
        subject: &str,
        access: serde_json::Value,
        now: u64,
    ) -> Result<String, String> {
        let header = serde_json::json!({"typ": "JWT", "alg": self.signer.alg(), "kid": self.kid});
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now + self.expires, "nbf": now.saturating_sub(10), "iat": now,
            "jti": format!("{now}-{}", std::process::id()), "access": access,
        });
        let input = format!(
            "{}.{}",
            auth::base64url(&serde_json::to_vec(&header).expect("json")),
            auth::base64url(&serde_json::to_vec(&claims).expect("json"))
        );
        let sig = self.signer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", auth::base64url(&sig)))
    }
}

pub fn main(args: &TokenServerArgs) -> ExitCode {
    let key = match PrivateKeyDer::from_pem_file(&args.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("berth-bench token-server: {}: {e}", args.key.display());
            return ExitCode::from(2);
        }
    };
    let signer = match Signer::from_der(&key) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth-bench token-server: {}: {e}", args.key.display());
            return ExitCode::from(2);
        }
    };
    let minter = Arc::new(Minter {
        kid: libtrust_key_id(&signer.spki()),
        signer,
        issuer: args.issuer.clone(),
        service: args.service.clone(),
        expires: args.expires,
    });
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "berth-bench token-server: listening on {}: {e}",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().expect("bound");
    println!("{addr}");
    eprintln!(
        "berth-bench token-server: {} tokens (kid {}) on http://{addr}/",
        minter.signer.alg(),
        minter.kid
    );
    let _ = std::io::stdout().flush();
    let basic = args
        .user
        .as_ref()
        .map(|u| format!("{u}:{}", args.password.as_deref().unwrap_or("")));
    let basic = Arc::new(basic);
    for stream in listener.incoming().flatten() {
        let (minter, basic) = (minter.clone(), basic.clone());
        std::thread::spawn(move || serve(stream, &minter, basic.as_deref()));
    }
    ExitCode::SUCCESS
}

/// One keep-alive connection: every GET is a token request.
fn serve(stream: TcpStream, minter: &Minter, basic: Option<&str>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut user, mut length, mut close) = (None::<String>, 0usize, false);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "authorization" => {
                    user = value
                        .strip_prefix("Basic ")
                        .and_then(|b| auth::base64_decode(b.trim()))
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                }
                "content-length" => length = value.parse().unwrap_or(0),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let allowed = basic.is_none_or(|b| user.as_deref() == Some(b));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let subject = user
            .as_deref()
            .and_then(|u| u.split_once(':'))
            .map_or("anonymous", |(u, _)| u)
            .to_string();
        let (status, body) = if !allowed {
            (
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
            )
        } else {
            match minter.mint(&subject, access_claims(query), now) {
                Ok(t) => (
                    "200 OK",
                    serde_json::json!({"token": t, "access_token": t, "expires_in": minter.expires, "issued_at": now.to_string()}).to_string(),
                ),
                Err(e) => ("500 Internal Server Error", serde_json::json!({"error": e}).to_string()),
            }
        };
        let extra = if allowed {
            ""
        } else {
            "WWW-Authenticate: Basic realm=\"berth-bench token-server\"\r\n"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn access_from_query() {
        let a = access_claims("service=s&scope=repository%3Abench%2Fapp%3Apull&scope=repository:bench/app:push+registry:catalog:*");
        assert_eq!(
            a,
            serde_json::json!([
                {"type": "registry", "name": "catalog", "actions": ["*"]},
                {"type": "repository", "name": "bench/app", "actions": ["pull", "push"]}
            ])
        );
        assert_eq!(access_claims(""), serde_json::json!([]));
    }

    #[test]
    fn mints_verifiable_es256_tokens() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into());
        let signer = Signer::from_der(&key).unwrap();
        let spki = signer.spki();
        assert_eq!(spki.len(), 91);
        let public = match &signer {
            Signer::Es256(k) => k.public_key().as_ref().to_vec(),
            _ => unreachable!(),
        };
        let minter = Minter {
            kid: libtrust_key_id(&spki),
            signer,
            issuer: "i".into(),
            service: "s".into(),
            expires: 60,
        };
        assert_eq!(minter.kid.len(), 59); // 12 groups of 4 and 11 colons
        let t = minter.mint("alice", serde_json::json!([]), 1000).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = base64url_decode(sig);
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
            .verify(input.as_bytes(), &sig)
            .expect("signature verifies");
        let claims: serde_json::Value =
            serde_json::from_slice(&base64url_decode(input.split('.').nth(1).unwrap())).unwrap();
        assert_eq!(claims["aud"], "s");
        assert_eq!(claims["exp"], 1060);
    }

    fn base64url_decode(s: &str) -> Vec<u8> {
        auth::base64_decode(&s.replace('-', "+").replace('_', "/")).unwrap()
    }
}
