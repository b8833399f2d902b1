//! The upstream registry a pull-through cache fronts: a blocking HTTP client
//! (call it off the event loops) that answers the upstream's challenges —
//! the Bearer token flow Docker Hub and most registries use, or Basic — with
//! `proxy.username` / `proxy.password`, and caches tokens per scope.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use berth_http::{parse_challenge, Challenge};

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer: connection refused, DNS, TLS, timeout, reset.
    #[error("upstream {url} is unreachable: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The upstream does not have it (404).
    #[error("upstream has no {url}")]
    NotFound {
        /// What was asked.
        url: String,
    },
    /// Any other status.
    #[error("upstream answered {status} for {url}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What was asked.
        url: String,
    },
    /// The upstream's authentication could not be satisfied.
    #[error("upstream authentication failed for {url}: {reason}")]
    Auth {
        /// What was asked.
        url: String,
        /// Why.
        reason: String,
    },
}

impl UpstreamError {
    /// Whether the upstream could not be asked at all (or failed on its
    /// side), as opposed to answering "no": cached content may then be
    /// served stale.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 429,
            UpstreamError::NotFound { .. } | UpstreamError::Auth { .. } => false,
        }
    }
}

/// How to reach the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `proxy.remoteurl`, e.g. `https://registry-1.docker.io`.
    pub remote_url: String,
    /// `proxy.username` and `proxy.password`.
    pub credentials: Option<(String, String)>,
    /// `proxy.remoteca` (berth): extra PEM CA certificates to trust.
    pub remote_ca: Option<std::path::PathBuf>,
}

/// A client of one upstream registry.
pub struct Upstream {
    base: String,
    agent: ureq::Agent,
    credentials: Option<(String, String)>,
    /// Tokens by scope, with when they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The upstream asked for Basic once: send credentials up front.
    basic: AtomicBool,
    /// Docker Hub keeps official images under `library/`.
    docker_hub: bool,
}

/// Docker Hub's registry host names.
const DOCKER_HUB_HOSTS: &[&str] = &["registry-1.docker.io", "index.docker.io", "docker.io"];

/// A token is refreshed this long before the upstream says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

impl Upstream {
    /// A client for `settings.remote_url`. Fails with a message naming the
    /// problem if the URL is not http(s) or the CA file cannot be read.
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, String> {
        let base = settings.remote_url.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| format!("proxy.remoteurl must be an http or https URL, got {base:?}"))?;
        let host = rest
            .split(['/', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("proxy.remoteurl names no host: {base:?}"));
        }
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls_config(settings.remote_ca.as_deref())?))
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .redirects(5)
            .user_agent(concat!(
                "berth/",
                env!("CARGO_PKG_VERSION"),
                " (pull-through cache)"
            ))
            .build();
        Ok(Upstream {
            base,
            agent,
            credentials: settings.credentials.clone(),
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            docker_hub: DOCKER_HUB_HOSTS.contains(&host.as_str()),
        })
    }

    /// The upstream URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The upstream's name for local repository `repo`: on Docker Hub a
    /// one-component name is an official image under `library/`.
    pub fn name_for(&self, repo: &str) -> String {
        if self.docker_hub && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_owned()
        }
    }

    /// (ureq's error type is large; it never leaves this function.)
    #[allow(clippy::result_large_err)]
    /// Sends `method` to `/v2/<upstream name of repo>/<tail>` with the given
    /// Accept values, answering one authentication challenge. Returns the
    /// response for 2xx; other statuses become errors.
    pub fn request(
        &self,
        method: &str,
        repo: &str,
        tail: &str,
        accept: &[&str],
    ) -> Result<ureq::Response, UpstreamError> {
        let name = self.name_for(repo);
        let url = format!("{}/v2/{name}/{tail}", self.base);
        let scope = format!("repository:{name}:pull");
        let send = |authorization: Option<String>| {
            let mut request = self.agent.request(method, &url);
            if !accept.is_empty() {
                request = request.set("Accept", &accept.join(", "));
            }
            if let Some(value) = authorization {
                request = request.set("Authorization", &value);
            }
            request.call()
        };
        let first = send(self.authorization(&scope));
        let challenge = match first {
            Ok(response) => return Ok(response),
            Err(ureq::Error::Status(401, response)) => response
                .header("www-authenticate")
                .and_then(parse_challenge)
                .ok_or_else(|| UpstreamError::Auth {
                    url: url.clone(),
                    reason: "401 without a challenge berth can answer".into(),
                })?,
            Err(e) => return Err(classify(&url, e)),
        };
        let authorization = match challenge {
            Challenge::Basic => {
                self.basic.store(true, Ordering::Relaxed);
                Some(self.basic_value().ok_or_else(|| UpstreamError::Auth {
                    url: url.clone(),
                    reason: "the upstream wants basic credentials; set proxy.username and proxy.password".into(),
                })?)
            }
            Challenge::Bearer {
                realm,
                service,
                scope: wanted,
            } => {
                let scope = wanted.unwrap_or(scope);
                let token = self.fetch_token(&realm, service.as_deref(), &scope)?;
                Some(format!("Bearer {token}"))
            }
        };
        match send(authorization) {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(401, _)) => Err(UpstreamError::Auth {
                url,
                reason: "the upstream refused the credentials or token".into(),
            }),
            Err(e) => Err(classify(&url, e)),
        }
    }

    fn basic_value(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, password)| {
            format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
        })
    }

    /// A cached token for `scope`, else basic credentials if the upstream
    /// wants them, else nothing (the upstream will challenge).
    fn authorization(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, until)) = tokens.get(scope) {
            if Instant::now() < *until {
                return Some(format!("Bearer {token}"));
            }
        }
        drop(tokens);
        if self.basic.load(Ordering::Relaxed) {
            return self.basic_value();
        }
        None
    }

    /// The Docker token flow: `GET realm?service=…&scope=…`, with basic
    /// credentials when configured (anonymous tokens otherwise).
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, UpstreamError> {
        let mut url = realm.to_owned();
        let mut separator = if realm.contains('?') { '&' } else { '?' };
        for (key, value) in [("service", service), ("scope", Some(scope))] {
            if let Some(value) = value {
                url.push(separator);
                url.push_str(key);
                url.push('=');
                url.push_str(&percent_encode(value));
                separator = '&';
            }
        }
        let mut request = self.agent.get(&url);
        if let Some(value) = self.basic_value() {
            request = request.set("Authorization", &value);
        }
        let response = request.call().map_err(|e| match e {
            ureq::Error::Status(status, _) => UpstreamError::Auth {
                url: realm.to_owned(),
                reason: format!("the token service answered {status}"),
            },
            other => classify(realm, other),
        })?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), 1 << 20),
            &mut text,
        )
        .map_err(|e| classify_io(realm, e))?;
        let body: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| UpstreamError::Auth {
                url: realm.to_owned(),
                reason: format!("the token service sent no JSON: {e}"),
            })?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Auth {
                url: realm.to_owned(),
                reason: "the token service's answer has no token".into(),
            })?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(1);
        let until = Instant::now() + Duration::from_secs(lifetime).saturating_sub(TOKEN_MARGIN);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.to_owned(), (token.clone(), until));
        Ok(token)
    }
}

fn classify(url: &str, error: ureq::Error) -> UpstreamError {
    match error {
        ureq::Error::Status(404, _) => UpstreamError::NotFound {
            url: url.to_owned(),
        },
        ureq::Error::Status(status, _) => UpstreamError::Status {
            status,
            url: url.to_owned(),
        },
        ureq::Error::Transport(t) => UpstreamError::Unreachable {
            url: url.to_owned(),
            reason: t.to_string(),
        },
    }
}

fn classify_io(url: &str, error: std::io::Error) -> UpstreamError {
    UpstreamError::Unreachable {
        url: url.to_owned(),
        reason: error.to_string(),
    }
}

/// RFC 3986 percent-encoding of a query value (unreserved characters pass).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Trusts the system's CA bundle plus `extra`.
fn tls_config(extra: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if let Ok(certs) = CertificateDer::pem_file_iter(system) {
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = extra {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("proxy.remoteca {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("proxy.remoteca {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("proxy.remoteca {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "proxy.remoteca {} holds no certificate",
                path.display()
            ));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::new(&UpstreamSettings {
            remote_url: url.into(),
            credentials: None,
            remote_ca: None,
        })
        .expect("upstream")
    }

    #[test]
    fn docker_hub_official_images_live_under_library() {
        let hub = upstream("https://registry-1.docker.io/");
        assert_eq!(hub.name_for("alpine"), "library/alpine");
        assert_eq!(hub.name_for("library/alpine"), "library/alpine");
        assert_eq!(hub.name_for("grafana/grafana"), "grafana/grafana");
        assert_eq!(hub.base(), "https://registry-1.docker.io");
        let other = upstream("http://127.0.0.1:5000");
        assert_eq!(other.name_for("alpine"), "alpine");
    }

    #[test]
    fn bad_remote_urls_are_refused_with_the_key_named() {
        for url in [
            "ftp://x",
            "registry-1.docker.io",
            "http://",
            "https://:5000",
        ] {
            let error = Upstream::new(&UpstreamSettings {
                remote_url: url.into(),
                credentials: None,
                remote_ca: None,
            })
            .err()
            .unwrap_or_default();
            assert!(error.contains("proxy.remoteurl"), "{url}: {error}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("repository:library/a b:pull,push"),
            "repository%3Alibrary%2Fa%20b%3Apull%2Cpush"
        );
        assert_eq!(percent_encode("registry.docker.io"), "registry.docker.io");
    }

    #[test]
    fn an_unreachable_upstream_is_an_outage() {
        let dead = upstream("http://127.0.0.1:1");
        let error = dead
            .request("GET", "a/b", "manifests/latest", &[])
            .err()
            .map(|e| (e.is_outage(), e.to_string()));
        let (outage, message) = error.unwrap_or_default();
        assert!(outage, "{message}");
        assert!(message.contains("unreachable"), "{message}");
    }
}
