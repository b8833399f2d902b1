//! TLS termination with rustls: certificate chains from PEM files (leaf then
//! intermediates, as registry:2's deployment guide concatenates them),
//! PKCS#8 / PKCS#1 RSA / SEC1 EC keys, optional client certificates
//! (`http.tls.clientcas`), a minimum version and a cipher-suite list. ALPN
//! offers `http/1.1`. The certificate and key are re-read when either file
//! changes (checked at most once a second, at a handshake) or on SIGHUP,
//! without touching open connections.

use std::fmt;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::filestamp::{file_stamp, FileStamp};

/// Whether and how client certificates are checked (`http.tls.clientauth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate signed by a `clientcas` CA.
    RequireAndVerify,
    /// A certificate is verified if given; clients without one are allowed.
    VerifyIfGiven,
}

/// The lowest TLS version accepted (`http.tls.minimumtls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinimumVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The `http.tls` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
    /// PEM files of CAs that sign client certificates; empty = no client auth.
    pub client_cas: Vec<PathBuf>,
    /// How client certificates are required.
    pub client_auth: ClientAuth,
    /// Lowest version accepted.
    pub minimum: MinimumVersion,
    /// IANA names of the cipher suites to allow; empty = rustls's defaults.
    pub cipher_suites: Vec<String>,
}

/// Why TLS cannot be set up. Messages name the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

static RELOAD_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every TLS acceptor to re-read its certificate and key at the next
/// handshake (SIGHUP).
pub fn request_reload() {
    RELOAD_REQUESTED.store(true, Ordering::SeqCst);
}

fn file_error(what: &'static str, path: &Path, message: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error("certificate file", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate file", path, e))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate file",
            path,
            "holds no PEM certificate",
        ));
    }
    Ok(chain)
}

fn load_certified_key(
    settings: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_chain(&settings.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| file_error("key file", &settings.key, e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        file_error(
            "key file",
            &settings.key,
            format!(
                "does not fit the certificate in {}: {e}",
                settings.certificate.display()
            ),
        )
    })
}

/// Serves the current certificate and swaps in a new one when the files change.
struct ReloadingResolver {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and their (mtime, size) then.
    checked: Mutex<(Instant, Option<FileStamp>, Option<FileStamp>)>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("certificate", &self.settings.certificate)
            .finish()
    }
}

impl ReloadingResolver {
    fn maybe_reload(&self) {
        let forced = RELOAD_REQUESTED.swap(false, Ordering::SeqCst);
        let Ok(mut checked) = self.checked.lock() else {
            return;
        };
        if !forced && checked.0.elapsed() < Duration::from_secs(1) {
            return;
        }
        checked.0 = Instant::now();
        let stamps = (
            file_stamp(&self.settings.certificate),
            file_stamp(&self.settings.key),
        );
        if !forced && (checked.1, checked.2) == stamps {
            return;
        }
        (checked.1, checked.2) = stamps;
        match load_certified_key(&self.settings, &self.provider) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(key);
                }
                log::info!(
                    "TLS certificate reloaded from {}",
                    self.settings.certificate.display()
                );
            }
            Err(e) => log::error!("TLS certificate reload failed, keeping the old one: {e}"),
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        self.current.read().ok().map(|k| k.clone())
    }
}

/// Builds the rustls server configuration, checking every file now so a
/// bad setting stops the start.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let wanted: Vec<String> = settings
            .cipher_suites
            .iter()
            .map(|s| s.to_ascii_uppercase())
            .collect();
        for name in &wanted {
            if !provider
                .cipher_suites
                .iter()
                .any(|s| format!("{:?}", s.suite()) == *name)
            {
                let known: Vec<String> = provider
                    .cipher_suites
                    .iter()
                    .map(|s| format!("{:?}", s.suite()))
                    .collect();
                return Err(TlsError::Config(format!(
                    "http.tls.ciphersuites: unknown suite {name}; supported: {}",
                    known.join(", ")
                )));
            }
        }
        provider
            .cipher_suites
            .retain(|s| wanted.contains(&format!("{:?}", s.suite())));
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.minimum {
        MinimumVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinimumVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let key = load_certified_key(settings, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(format!("http.tls.minimumtls / ciphersuites: {e}")))?;
    let builder = if settings.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for path in &settings.client_cas {
            for cert in load_chain(path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("client CA file", path, e))?;
            }
        }
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if settings.client_auth == ClientAuth::VerifyIfGiven {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Config(format!("http.tls.clientcas: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let resolver = ReloadingResolver {
        settings: settings.clone(),
        provider,
        current: RwLock::new(Arc::new(key)),
        checked: Mutex::new((
            Instant::now(),
            file_stamp(&settings.certificate),
            file_stamp(&settings.key),
        )),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, suites: &[&str], minimum: MinimumVersion) -> TlsSettings {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TlsSettings {
            certificate: cert_path,
            key: key_path,
            client_cas: Vec::new(),
            client_auth: ClientAuth::RequireAndVerify,
            minimum,
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn cipher_suites_are_chosen_by_iana_name_and_unknown_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = server_config(&settings(
            dir.path(),
            &["TLS13_AES_256_GCM_SHA384"],
            MinimumVersion::Tls13,
        ))
        .unwrap();
        let names: Vec<String> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names, vec!["TLS13_AES_256_GCM_SHA384".to_string()]);
        let err = server_config(&settings(
            dir.path(),
            &["TLS_RSA_WITH_RC4_128_MD5"],
            MinimumVersion::Tls12,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("http.tls.ciphersuites"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = settings(dir.path(), &[], MinimumVersion::Tls12);
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&good.key, other.serialize_pem()).unwrap();
        let err = server_config(&good).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
