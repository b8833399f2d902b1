//! The `auth` section: anonymous, htpasswd or bearer tokens, and the limit
//! on failed htpasswd logins.

use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::error::ConfigError;
use super::source::{describe, Source};

/// The `auth` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    /// No `auth` section: anonymous access, as registry:2.
    None,
    /// `auth.token`: bearer tokens from an external token service.
    Token(crate::auth::token::TokenSettings),
    /// `auth.htpasswd`: basic auth against a bcrypt htpasswd file.
    Htpasswd {
        /// `auth.htpasswd.realm`.
        realm: String,
        /// `auth.htpasswd.path`.
        path: PathBuf,
    },
}

/// `auth.htpasswd.failuresmax`, `.failurewindow` (berth): the failed-login
/// limiter's own settings type.
pub use crate::auth::failures::FailureSettings;

pub(super) fn parse_login_failures(src: &Source) -> Result<FailureSettings, ConfigError> {
    let key = "auth.htpasswd.failuresmax";
    Ok(FailureSettings {
        failures_max: u32::try_from(src.int(key)?)
            .map_err(|_| ConfigError::invalid(key, "a smaller number", ""))?,
        failure_window: src.positive_duration("auth.htpasswd.failurewindow")?,
    })
}

pub(super) fn parse(src: &Source) -> Result<AuthConfig, ConfigError> {
    let section = match src.raw("auth") {
        None => return Ok(AuthConfig::None),
        Some(Value::String(s)) if s.is_empty() => return Ok(AuthConfig::None),
        Some(Value::Mapping(m)) if m.is_empty() => return Ok(AuthConfig::None),
        Some(Value::Mapping(m)) => m,
        Some(other) => {
            return Err(ConfigError::invalid(
                "auth",
                "a section naming one method (htpasswd)",
                describe(other),
            ))
        }
    };
    let kinds: Vec<String> = section
        .keys()
        .map(|k| k.as_str().unwrap_or("?").to_owned())
        .collect();
    match kinds.as_slice() {
        [kind] if kind == "htpasswd" => {
            let realm = src.text("auth.htpasswd.realm")?.ok_or_else(|| {
                ConfigError::invalid(
                    "auth.htpasswd.realm",
                    "the realm for the login challenge (REGISTRY_AUTH_HTPASSWD_REALM)",
                    "nothing",
                )
            })?;
            let path = src.text("auth.htpasswd.path")?.ok_or_else(|| {
                ConfigError::invalid(
                    "auth.htpasswd.path",
                    "the htpasswd file (REGISTRY_AUTH_HTPASSWD_PATH)",
                    "nothing",
                )
            })?;
            Ok(AuthConfig::Htpasswd {
                realm,
                path: PathBuf::from(path),
            })
        }
        [kind] if kind == "token" => {
            let required = |key: &'static str, what: &str| -> Result<String, ConfigError> {
                src.text(key)?
                    .ok_or_else(|| ConfigError::invalid(key, what, "nothing"))
            };
            let settings = crate::auth::token::TokenSettings {
                realm: required("auth.token.realm", "the token service URL")?,
                service: required("auth.token.service", "this registry's service name")?,
                issuer: required("auth.token.issuer", "the token issuer")?,
                root_cert_bundle: src.text("auth.token.rootcertbundle")?.map(PathBuf::from),
                jwks: src.text("auth.token.jwks")?.map(PathBuf::from),
                signing_algorithms: src.list("auth.token.signingalgorithms")?,
            };
            if settings.root_cert_bundle.is_none() && settings.jwks.is_none() {
                return Err(ConfigError::invalid(
                    "auth.token.rootcertbundle",
                    "a PEM certificate bundle (or auth.token.jwks) with the token signing keys",
                    "nothing",
                ));
            }
            Ok(AuthConfig::Token(settings))
        }
        [kind] => Err(ConfigError::invalid(
            "auth",
            "htpasswd or token (other methods are not supported; refusing to run unprotected)",
            kind,
        )),
        _ => Err(ConfigError::invalid(
            "auth",
            "exactly one method",
            kinds.join(", "),
        )),
    }
}
