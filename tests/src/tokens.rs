//! Bearer tokens for tests: signing keys with certificates (openssl), JWTs
//! as registry:2's token services mint them, and a tiny token service that
//! answers the Docker token flow (`GET realm?service=…&scope=…`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use sha2::{Digest as _, Sha256};

use crate::cmd;

/// The issuer every minted token names.
pub const ISSUER: &str = "test-token-issuer";

pub fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new(cmd::require_tool("openssl"));
    c.current_dir(dir).args(args);
    cmd::run(&mut c);
}

/// A signing key with its certificate, PKCS#8 DER and libtrust key id.
pub struct Signer {
    /// JWS algorithm name (RS256, ES256, EdDSA).
    pub alg: &'static str,
    /// The private key, PKCS#8 DER.
    pub pkcs8: Vec<u8>,
    /// A self-signed certificate of the key (for `rootcertbundle`).
    pub cert: PathBuf,
    /// The libtrust key id registry:2 matches tokens by.
    pub kid: String,
}

pub fn libtrust_kid(spki: &[u8]) -> String {
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

pub fn signer(dir: &Path, name: &str, alg: &'static str, genpkey: &[&str]) -> Signer {
    let key = dir.join(format!("{name}.key"));
    let k = key.to_str().expect("utf-8");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", k]);
    openssl(dir, &args);
    let der = dir.join(format!("{name}.p8.der"));
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            k,
            "-outform",
            "DER",
            "-out",
            der.to_str().expect("utf-8"),
        ],
    );
    let spki = dir.join(format!("{name}.spki.der"));
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            k,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            spki.to_str().expect("utf-8"),
        ],
    );
    let cert = dir.join(format!("{name}.crt"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            k,
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-out",
            cert.to_str().expect("utf-8"),
        ],
    );
    Signer {
        alg,
        pkcs8: std::fs::read(&der).expect("pkcs8"),
        cert,
        kid: libtrust_kid(&std::fs::read(&spki).expect("spki")),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn mint(
    s: &Signer,
    kid: &str,
    access: serde_json::Value,
    audience: &str,
    expires: u64,
) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": s.alg, "kid": kid});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": audience, "exp": expires, "nbf": now() - 10, "iat": now() - 10,
        "jti": "t", "access": access
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("json")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"))
    );
    let rng = SystemRandom::new();
    let sig = match s.alg {
        "RS256" => {
            let key = RsaKeyPair::from_pkcs8(&s.pkcs8).expect("rsa key");
            let mut sig = vec![0u8; key.public().modulus_len()];
            key.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .expect("sign");
            sig
        }
        "ES256" => {
            let key = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &s.pkcs8,
                &rng,
            )
            .expect("ec key");
            key.sign(&rng, signing_input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec()
        }
        _ => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&s.pkcs8)
            .expect("ed25519 key")
            .sign(signing_input.as_bytes())
            .as_ref()
            .to_vec(),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A token service on a loopback port: answers `GET /token?service=S&scope=…`
/// with `{"token": …, "expires_in": 300}` granting exactly the requested
/// scopes, and 401 when it requires basic credentials that are missing or
/// wrong. Counts the tokens it issued.
pub struct TokenServer {
    port: u16,
    issued: Arc<AtomicU64>,
}

impl TokenServer {
    /// Starts the service signing with `signer` for audience `service`;
    /// with `credentials`, only that user and password get tokens.
    pub fn start(signer: Signer, service: &str, credentials: Option<(&str, &str)>) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("token server bind");
        let port = listener.local_addr().expect("addr").port();
        let issued = Arc::new(AtomicU64::new(0));
        let counter = issued.clone();
        let service = service.to_owned();
        let expected =
            credentials.map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.trim().eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_owned());
                        }
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for pair in query.split('&') {
                    if let Some(scope) = pair.strip_prefix("scope=") {
                        let scope = berth_http::percent_decode_form(scope);
                        let parts: Vec<&str> = scope.splitn(3, ':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>()
                            }));
                        }
                    }
                }
                let mut out = stream;
                let allowed = expected.is_none() || authorization == expected;
                let response = if allowed {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let token = mint(
                        &signer,
                        &signer.kid,
                        serde_json::Value::Array(access),
                        &service,
                        now() + 300,
                    );
                    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = out.write_all(response.as_bytes());
            }
        });
        TokenServer { port, issued }
    }

    /// The realm URL to configure.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }
}
