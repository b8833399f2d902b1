//! Automatic certificates over ACME (RFC 8555), registry:2's
//! `http.tls.letsencrypt`: berth obtains a certificate for `hosts` from the
//! ACME directory (Let's Encrypt by default) with the TLS-ALPN-01 challenge,
//! answered on its own TLS port, keeps the account key and certificate in
//! `cachefile`, serves the certificate, and renews it before it ages out.
//! Until the first certificate arrives, TLS handshakes (other than the
//! challenge's) fail.
//!
//! The ACME client is blocking and runs on its own thread; the event loops
//! only read the current certificate.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Let's Encrypt's production directory (registry:2's default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// A certificate is renewed once it is this old (Let's Encrypt's last 90 days).
const RENEW_AFTER: Duration = Duration::from_secs(60 * 24 * 3600);

/// The `http.tls.letsencrypt` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LetsEncryptSettings {
    /// Where the account key and certificate are kept.
    pub cache_file: PathBuf,
    /// Contact address for the ACME account.
    pub email: Option<String>,
    /// DNS names to obtain the certificate for.
    pub hosts: Vec<String>,
    /// The ACME directory URL.
    pub directory_url: String,
    /// PEM roots to trust for the directory's HTTPS (berth; default: the system's).
    pub directory_ca: Option<PathBuf>,
}

/// Why ACME failed (retried with backoff; logged).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// An HTTP exchange with the ACME server failed.
    #[error("ACME request to {url} failed: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The server answered something unusable.
    #[error("ACME protocol: {0}")]
    Protocol(String),
    /// Local setup (keys, files).
    #[error("ACME setup: {0}")]
    Setup(String),
}

fn protocol(message: impl Into<String>) -> AcmeError {
    AcmeError::Protocol(message.into())
}

/// Serves the obtained certificate, and the TLS-ALPN-01 challenge
/// certificates while a validation runs.
pub struct AcmeResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for AcmeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AcmeResolver")
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wants_challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == b"acme-tls/1"));
        if wants_challenge {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().ok()?.get(&name).cloned();
        }
        self.current.read().ok()?.clone()
    }
}

/// What the cache file holds.
#[derive(Serialize, Deserialize, Default)]
struct Cache {
    account_key_pkcs8: String,
    account_url: Option<String>,
    hosts: Vec<String>,
    certificate_pem: Option<String>,
    key_pkcs8: Option<String>,
    obtained_unix: Option<u64>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_cache(path: &PathBuf) -> Option<Cache> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_cache(path: &PathBuf, cache: &Cache) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let setup = |e: std::io::Error| AcmeError::Setup(format!("cache file {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(setup)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(setup)?;
    file.write_all(&serde_json::to_vec_pretty(cache).unwrap_or_default())
        .map_err(setup)?;
    file.sync_all().map_err(setup)?;
    std::fs::rename(&tmp, path).map_err(setup)
}

fn certified_key(
    chain_pem: &str,
    key_pkcs8: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, AcmeError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| protocol(format!("certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(protocol("the certificate chain is empty"));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| protocol(format!("certificate and key: {e}")))
}

/// Builds the TLS configuration for ACME-managed certificates and starts the
/// thread that obtains and renews them.
pub fn start(settings: LetsEncryptSettings) -> Result<Arc<rustls::ServerConfig>, AcmeError> {
    if settings.hosts.is_empty() {
        return Err(AcmeError::Setup(
            "http.tls.letsencrypt.hosts is empty".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(AcmeResolver {
        current: RwLock::new(None),
        challenges: RwLock::new(HashMap::new()),
    });
    if let Some(cache) = read_cache(&settings.cache_file) {
        if let (Some(pem), Some(key), true) = (
            &cache.certificate_pem,
            &cache.key_pkcs8,
            cache.hosts == settings.hosts,
        ) {
            match STANDARD
                .decode(key)
                .map_err(|e| protocol(e.to_string()))
                .and_then(|k| certified_key(pem, &k, &provider))
            {
                Ok(key) => {
                    *resolver
                        .current
                        .write()
                        .map_err(|_| AcmeError::Setup("lock".into()))? = Some(Arc::new(key));
                    log::info!(
                        "ACME: serving the cached certificate for {}",
                        settings.hosts.join(", ")
                    );
                }
                Err(e) => log::warn!(
                    "ACME: the cached certificate is unusable ({e}); obtaining a new one"
                ),
            }
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AcmeError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"acme-tls/1".to_vec()];
    let manager_resolver = resolver;
    std::thread::Builder::new()
        .name("berth-acme".into())
        .spawn(move || manage(settings, manager_resolver, provider))
        .map_err(|e| AcmeError::Setup(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Obtains the certificate when missing or old, retrying with backoff.
fn manage(
    settings: LetsEncryptSettings,
    resolver: Arc<AcmeResolver>,
    provider: Arc<CryptoProvider>,
) {
    let mut backoff = Duration::from_secs(2);
    loop {
        let cache = read_cache(&settings.cache_file).unwrap_or_default();
        let fresh = cache.hosts == settings.hosts
            && cache
                .obtained_unix
                .is_some_and(|t| now_unix().saturating_sub(t) < RENEW_AFTER.as_secs())
            && resolver.current.read().is_ok_and(|c| c.is_some());
        if fresh {
            backoff = Duration::from_secs(2);
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        }
        match obtain(&settings, &resolver, &provider, cache) {
            Ok(()) => {
                log::info!(
                    "ACME: certificate obtained for {}",
                    settings.hosts.join(", ")
                );
                backoff = Duration::from_secs(2);
            }
            Err(e) => {
                log::error!("ACME: {e}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(600));
            }
        }
    }
}

struct Client {
    agent: ureq::Agent,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    nonce: Option<String>,
    new_nonce: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

fn agent(settings: &LetsEncryptSettings) -> Result<ureq::Agent, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    let bundle = settings
        .directory_ca
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let certs = CertificateDer::pem_file_iter(&bundle)
        .map_err(|e| AcmeError::Setup(format!("CA bundle {}: {e}", bundle.display())))?;
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AcmeError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout(Duration::from_secs(30))
        .build())
}

impl Client {
    fn jwk(&self) -> serde_json::Value {
        let public = self.key.public_key().as_ref();
        serde_json::json!({
            "crv": "P-256",
            "kty": "EC",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        })
    }

    /// RFC 7638 thumbprint (members in lexicographic order, no spaces).
    fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or(""),
            jwk["y"].as_str().unwrap_or("")
        );
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    fn fresh_nonce(&mut self) -> Result<String, AcmeError> {
        if let Some(nonce) = self.nonce.take() {
            return Ok(nonce);
        }
        let response = self
            .agent
            .head(&self.new_nonce)
            .call()
            .map_err(|e| AcmeError::Http {
                url: self.new_nonce.clone(),
                message: e.to_string(),
            })?;
        response
            .header("Replay-Nonce")
            .map(str::to_owned)
            .ok_or_else(|| protocol("newNonce gave no Replay-Nonce"))
    }

    /// A JWS-signed POST; `payload` None = POST-as-GET. Retries on badNonce.
    fn post(&mut self, url: &str, payload: Option<&serde_json::Value>) -> Result<Reply, AcmeError> {
        for attempt in 0..3 {
            let nonce = self.fresh_nonce()?;
            let mut protected = serde_json::json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(kid) => protected["kid"] = kid.clone().into(),
                None => protected["jwk"] = self.jwk(),
            }
            let protected =
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap_or_default());
            let payload = payload
                .map(|p| URL_SAFE_NO_PAD.encode(serde_json::to_vec(p).unwrap_or_default()))
                .unwrap_or_default();
            let signature = self
                .key
                .sign(&self.rng, format!("{protected}.{payload}").as_bytes())
                .map_err(|_| AcmeError::Setup("signing failed".into()))?;
            let body = serde_json::json!({"protected": protected, "payload": payload, "signature": URL_SAFE_NO_PAD.encode(signature.as_ref())});
            let response = match self
                .agent
                .post(url)
                .set("Content-Type", "application/jose+json")
                .send_string(&body.to_string())
            {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => {
                    return Err(AcmeError::Http {
                        url: url.to_owned(),
                        message: e.to_string(),
                    })
                }
            };
            self.nonce = response.header("Replay-Nonce").map(str::to_owned);
            let status = response.status();
            let location = response.header("Location").map(str::to_owned);
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(response.into_reader(), 1 << 20),
                &mut bytes,
            )
            .map_err(|e| AcmeError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
            if status >= 400 {
                let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if problem["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(":badNonce"))
                    && attempt < 2
                {
                    continue;
                }
                return Err(AcmeError::Http {
                    url: url.to_owned(),
                    message: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
                });
            }
            return Ok(Reply {
                location,
                body: bytes,
            });
        }
        Err(protocol("the server refused three nonces in a row"))
    }
}

/// A successful ACME response.
struct Reply {
    location: Option<String>,
    body: Vec<u8>,
}

fn json(bytes: &[u8]) -> Result<serde_json::Value, AcmeError> {
    serde_json::from_slice(bytes).map_err(|e| protocol(format!("not JSON: {e}")))
}

fn obtain(
    settings: &LetsEncryptSettings,
    resolver: &AcmeResolver,
    provider: &CryptoProvider,
    mut cache: Cache,
) -> Result<(), AcmeError> {
    let rng = SystemRandom::new();
    let account_pkcs8 = match STANDARD
        .decode(&cache.account_key_pkcs8)
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) => k,
        None => {
            let k = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| AcmeError::Setup("key generation".into()))?;
            cache.account_key_pkcs8 = STANDARD.encode(k.as_ref());
            cache.account_url = None;
            k.as_ref().to_vec()
        }
    };
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &account_pkcs8, &rng)
        .map_err(|_| AcmeError::Setup("account key unreadable".into()))?;
    let agent = agent(settings)?;
    let directory: Directory = agent
        .get(&settings.directory_url)
        .call()
        .map_err(|e| AcmeError::Http {
            url: settings.directory_url.clone(),
            message: e.to_string(),
        })?
        .into_string()
        .map_err(|e| protocol(format!("directory: {e}")))
        .and_then(|text| {
            serde_json::from_str(&text).map_err(|e| protocol(format!("directory: {e}")))
        })?;
    let mut client = Client {
        agent,
        key,
        rng,
        nonce: None,
        new_nonce: directory.new_nonce.clone(),
        kid: cache.account_url.clone(),
    };
    if client.kid.is_none() {
        let mut account = serde_json::json!({"termsOfServiceAgreed": true});
        if let Some(email) = &settings.email {
            account["contact"] = serde_json::json!([format!("mailto:{email}")]);
        }
        let reply = client.post(&directory.new_account, Some(&account))?;
        let kid = reply
            .location
            .ok_or_else(|| protocol("newAccount gave no Location"))?;
        client.kid = Some(kid.clone());
        cache.account_url = Some(kid);
        write_cache(&settings.cache_file, &cache)?;
    }
    let identifiers: Vec<_> = settings
        .hosts
        .iter()
        .map(|h| serde_json::json!({"type": "dns", "value": h}))
        .collect();
    let reply = client.post(
        &directory.new_order,
        Some(&serde_json::json!({"identifiers": identifiers})),
    )?;
    let order_url = reply
        .location
        .ok_or_else(|| protocol("newOrder gave no Location"))?;
    let order = json(&reply.body)?;
    let thumbprint = client.thumbprint();
    for authz_url in order["authorizations"]
        .as_array()
        .ok_or_else(|| protocol("order without authorizations"))?
    {
        let authz_url = authz_url
            .as_str()
            .ok_or_else(|| protocol("authorization URL"))?;
        let authz = json(&client.post(authz_url, None)?.body)?;
        if authz["status"] == "valid" {
            continue;
        }
        let host = authz["identifier"]["value"]
            .as_str()
            .ok_or_else(|| protocol("authorization identifier"))?
            .to_ascii_lowercase();
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "tls-alpn-01"))
            .ok_or_else(|| protocol(format!("no tls-alpn-01 challenge for {host}")))?;
        let token = challenge["token"]
            .as_str()
            .ok_or_else(|| protocol("challenge token"))?;
        let key_authorization = format!("{token}.{thumbprint}");
        let mut params = rcgen::CertificateParams::new(vec![host.clone()])
            .map_err(|e| AcmeError::Setup(e.to_string()))?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
            &Sha256::digest(key_authorization.as_bytes()),
        )];
        let challenge_key =
            rcgen::KeyPair::generate().map_err(|e| AcmeError::Setup(e.to_string()))?;
        let challenge_cert = params
            .self_signed(&challenge_key)
            .map_err(|e| AcmeError::Setup(e.to_string()))?;
        // `CertifiedKey::new`, not `from_der`: webpki cannot parse the critical
        // acmeIdentifier extension, and the validator checks it, not us.
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                challenge_key.serialize_der(),
            )))
            .map_err(|e| AcmeError::Setup(e.to_string()))?;
        let certified = CertifiedKey::new(vec![challenge_cert.der().clone()], signing_key);
        if let Ok(mut challenges) = resolver.challenges.write() {
            challenges.insert(host.clone(), Arc::new(certified));
        }
        let challenge_url = challenge["url"]
            .as_str()
            .ok_or_else(|| protocol("challenge URL"))?;
        client.post(challenge_url, Some(&serde_json::json!({})))?;
        let result = poll(&mut client, authz_url, "valid");
        if let Ok(mut challenges) = resolver.challenges.write() {
            challenges.remove(&host);
        }
        result?;
    }
    let cert_key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Setup(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(settings.hosts.clone())
        .and_then(|p| p.serialize_request(&cert_key))
        .map_err(|e| AcmeError::Setup(e.to_string()))?;
    let finalize = order["finalize"]
        .as_str()
        .ok_or_else(|| protocol("order without finalize"))?;
    client.post(
        finalize,
        Some(&serde_json::json!({"csr": URL_SAFE_NO_PAD.encode(csr.der())})),
    )?;
    let done = poll(&mut client, &order_url, "valid")?;
    let cert_url = done["certificate"]
        .as_str()
        .ok_or_else(|| protocol("valid order without certificate"))?;
    let chain = String::from_utf8(client.post(cert_url, None)?.body)
        .map_err(|_| protocol("certificate is not PEM text"))?;
    let key_pkcs8 = cert_key.serialize_der();
    let certified = certified_key(&chain, &key_pkcs8, provider)?;
    cache.hosts = settings.hosts.clone();
    cache.certificate_pem = Some(chain);
    cache.key_pkcs8 = Some(STANDARD.encode(&key_pkcs8));
    cache.obtained_unix = Some(now_unix());
    write_cache(&settings.cache_file, &cache)?;
    if let Ok(mut current) = resolver.current.write() {
        *current = Some(Arc::new(certified));
    }
    Ok(())
}

/// POST-as-GET `url` until its `status` is `want` (or it fails), for up to a minute.
fn poll(client: &mut Client, url: &str, want: &str) -> Result<serde_json::Value, AcmeError> {
    for _ in 0..60 {
        let object = json(&client.post(url, None)?.body)?;
        match object["status"].as_str() {
            Some(s) if s == want => return Ok(object),
            Some("invalid") => return Err(protocol(format!("{url} became invalid: {object}"))),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    Err(protocol(format!(
        "{url} did not become {want} within a minute"
    )))
}
