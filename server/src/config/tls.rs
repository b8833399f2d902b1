//! The `http.tls` section: a certificate and key from files, or
//! certificates obtained over ACME (`http.tls.letsencrypt`), and client
//! certificate checks.

use std::path::PathBuf;

use crate::acme::LetsEncryptSettings;
use crate::tls::{ClientAuth, MinimumVersion, TlsSettings};

use super::error::ConfigError;
use super::source::Source;

/// `http.tls.*`: the files' settings (`None`: no certificate configured)
/// and the ACME settings (`None`: no `letsencrypt.cachefile`); never both.
pub(super) fn parse(
    src: &Source,
) -> Result<(Option<TlsSettings>, Option<LetsEncryptSettings>), ConfigError> {
    let tls = files(src)?;
    let letsencrypt = match src.text("http.tls.letsencrypt.cachefile")? {
        None if src.raw("http.tls.letsencrypt.hosts").is_some() => {
            return Err(ConfigError::invalid(
                "http.tls.letsencrypt.cachefile",
                "a file to keep the ACME account and certificate in",
                "nothing",
            ))
        }
        None => None,
        Some(cache_file) => {
            if tls.is_some() {
                return Err(ConfigError::invalid(
                    "http.tls.letsencrypt",
                    "either http.tls.certificate/key or http.tls.letsencrypt, not both",
                    "both",
                ));
            }
            let hosts = src.list("http.tls.letsencrypt.hosts")?;
            if hosts.is_empty() {
                return Err(ConfigError::invalid(
                    "http.tls.letsencrypt.hosts",
                    "the DNS names to obtain a certificate for",
                    "nothing",
                ));
            }
            Some(LetsEncryptSettings {
                cache_file: PathBuf::from(cache_file),
                email: src.text("http.tls.letsencrypt.email")?,
                hosts,
                directory_url: src
                    .text("http.tls.letsencrypt.directoryurl")?
                    .unwrap_or_else(|| crate::acme::LETS_ENCRYPT.to_owned()),
                directory_ca: src
                    .text("http.tls.letsencrypt.directoryca")?
                    .map(PathBuf::from),
            })
        }
    };
    Ok((tls, letsencrypt))
}

fn files(src: &Source) -> Result<Option<TlsSettings>, ConfigError> {
    let certificate = src.text("http.tls.certificate")?;
    let key = src.text("http.tls.key")?;
    let (certificate, key) = match (certificate, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "http.tls.key",
                "a PEM key file (http.tls.certificate is set)",
                "nothing",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "http.tls.certificate",
                "a PEM certificate file (http.tls.key is set)",
                "nothing",
            ))
        }
    };
    let client_auth = match src.text("http.tls.clientauth")?.as_deref() {
        Some("verify-client-cert-if-given") => ClientAuth::VerifyIfGiven,
        _ => ClientAuth::RequireAndVerify,
    };
    let minimum = match src.text("http.tls.minimumtls")?.as_deref() {
        Some("tls1.3") => MinimumVersion::Tls13,
        _ => MinimumVersion::Tls12,
    };
    Ok(Some(TlsSettings {
        certificate,
        key,
        client_cas: src
            .list("http.tls.clientcas")?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        client_auth,
        minimum,
        cipher_suites: src.list("http.tls.ciphersuites")?,
    }))
}
