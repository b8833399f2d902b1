//! Configuration: registry:2's `config.yml` keys and `REGISTRY_*`
//! environment overrides, resolved into a typed [`Config`].
//!
//! Sources, later ones winning: the embedded defaults, the YAML file (the
//! `serve` argument, else `REGISTRY_CONFIGURATION_PATH`), then every
//! `REGISTRY_<PATH>` variable, where `<PATH>` is the key path joined with
//! `_` (`REGISTRY_STORAGE_DELETE_ENABLED=true` sets `storage.delete.enabled`)
//! and the value is parsed as YAML.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

/// The defaults, as a registry:2-style config file. Used when no file is given.
pub const EMBEDDED_DEFAULT: &str = "\
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: false
http:
  addr: :5000
";

/// Which I/O driver the event loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, else epoll/poll.
    Auto,
    /// io_uring only; fail to start without it.
    IoUring,
    /// epoll/poll even where io_uring works.
    Poll,
}

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http.addr`: where to listen (`:5000` means every interface).
    pub listen: SocketAddr,
    /// `http.host`: the public base URL for Location headers.
    pub host: Option<String>,
    /// `http.relativeurls`: send Location headers as paths.
    pub relative_urls: bool,
    /// `http.secret`: signs upload state; shared by every node behind a
    /// load balancer. `None`: one is generated and kept in the data directory.
    pub http_secret: Option<String>,
    /// `storage.filesystem.rootdirectory`: the data directory.
    pub root_directory: PathBuf,
    /// `storage.delete.enabled`.
    pub delete_enabled: bool,
    /// `storage.gc.interval` (berth): run the online GC this often; `None` = never.
    pub gc_interval: Option<std::time::Duration>,
    /// `storage.gc.graceperiod` (berth): unreferenced blobs younger than this are kept.
    pub gc_grace_period: std::time::Duration,
    /// `storage.gc.deleteuntagged` (berth): the online GC also deletes untagged manifests.
    pub gc_delete_untagged: bool,
    /// `storage.maintenance.uploadpurging`: remove idle uploads older than
    /// `age` every `interval`; `None` when disabled.
    pub upload_purging: Option<UploadPurging>,
    /// `log.level`: error, warn, info or debug.
    pub log_level: String,
    /// `log.formatter`: text or json.
    pub log_formatter: crate::logging::Formatter,
    /// Not `log.accesslog.disabled`: one line per request.
    pub access_log: bool,
    /// `runtime.driver` (berth): auto, io_uring or poll.
    pub driver: DriverChoice,
    /// `runtime.threads` (berth): event loops; 0 means one per core.
    pub threads: usize,
    /// `http.draintimeout`: how long in-flight requests may finish after
    /// SIGTERM/SIGINT (a Go-style duration: `30s`, `2m`, `500ms`).
    pub drain_timeout: std::time::Duration,
    /// `http.limits.*` (berth): timeouts and the per-loop connection cap.
    pub conn_settings: crate::conn::ConnSettings,
    /// `http.limits.headbytesmax` (berth): largest request head (431 past it).
    pub head_bytes_max: usize,
    /// `http.limits.headersmax` (berth): most header fields in a request (431 past it).
    pub headers_max: usize,
    /// `http.limits.targetbytesmax` (berth): longest request-target (414 past it).
    pub target_bytes_max: usize,
    /// `http.tls.*`: serve HTTPS when a certificate is configured.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `auth.*`: who may use the API.
    pub auth: AuthConfig,
    /// `http.tls.letsencrypt.*`: certificates obtained over ACME.
    pub letsencrypt: Option<crate::acme::LetsEncryptSettings>,
    /// `proxy.*`: run as a pull-through cache of `proxy.remoteurl`.
    pub proxy: Option<crate::proxy::ProxySettings>,
    /// Keys present in the sources that berth does not use, for warnings.
    pub unknown_keys: Vec<String>,
}

/// `storage.maintenance.uploadpurging` (registry:2 defaults: enabled, 168h, 24h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    /// Sessions idle longer than this are removed.
    pub age: std::time::Duration,
    /// How often to look.
    pub interval: std::time::Duration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

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

/// Why the configuration cannot be used. Every message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("configuration file {path} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A key has a value of the wrong form.
    #[error("invalid configuration: {key} must be {expected}, got {got}")]
    Invalid {
        /// The dotted key path.
        key: &'static str,
        /// The expected form.
        expected: &'static str,
        /// What was found.
        got: String,
    },
}

/// Keys berth reads; anything else found in a source is reported as unknown.
const KNOWN_KEYS: &[&str] = &[
    "version",
    "log.level",
    "log.formatter",
    "log.accesslog.disabled",
    "storage.filesystem.rootdirectory",
    "storage.delete.enabled",
    "storage.gc.interval",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.gc.graceperiod",
    "storage.gc.deleteuntagged",
    "http.addr",
    "http.host",
    "http.relativeurls",
    "http.draintimeout",
    "http.secret",
    "http.trustedproxies",
    "http.limits.headbytesmax",
    "http.limits.headersmax",
    "http.limits.targetbytesmax",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "auth.token.realm",
    "auth.token.service",
    "auth.token.issuer",
    "auth.token.rootcertbundle",
    "auth.token.jwks",
    "auth.token.signingalgorithms",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.clientauth",
    "http.tls.minimumtls",
    "http.tls.ciphersuites",
    "http.tls.letsencrypt.cachefile",
    "http.tls.letsencrypt.email",
    "http.tls.letsencrypt.hosts",
    "http.tls.letsencrypt.directoryurl",
    "http.tls.letsencrypt.directoryca",
    "http.limits.headreadtimeoutms",
    "http.limits.idletimeoutms",
    "http.limits.bodyprogresstimeoutms",
    "http.limits.connectionsperloopmax",
    "runtime.driver",
    "runtime.threads",
    "proxy.remoteurl",
    "proxy.username",
    "proxy.password",
    "proxy.ttl",
    "proxy.tagttl",
    "proxy.maxsize",
    "proxy.evictioninterval",
    "proxy.localprefix",
    "proxy.remoteca",
];

impl Config {
    /// Loads the configuration from `file` (or the embedded default) and
    /// the given environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = parse_yaml(EMBEDDED_DEFAULT, "<embedded default>")?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file = file.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(k, _)| k == "REGISTRY_CONFIGURATION_PATH")
                .map(|(_, v)| PathBuf::from(v))
        });
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let overlay = parse_yaml(&text, &path.display().to_string())?;
            merge(&mut root, overlay);
        }
        for (name, value) in &env {
            let Some(key_path) = name.strip_prefix("REGISTRY_") else {
                continue;
            };
            if name == "REGISTRY_CONFIGURATION_PATH" || key_path.is_empty() {
                continue;
            }
            let parsed = serde_yaml_ng::from_str::<Value>(value)
                .unwrap_or_else(|_| Value::String(value.clone()));
            let parsed = if parsed.is_null() {
                Value::String(value.clone())
            } else {
                parsed
            };
            let keys: Vec<String> = key_path.split('_').map(str::to_ascii_lowercase).collect();
            set_path(&mut root, &keys, parsed);
        }
        Config::from_value(&root)
    }

    fn from_value(root: &Value) -> Result<Config, ConfigError> {
        let listen_text = string(root, "http.addr")?.unwrap_or_else(|| ":5000".into());
        let listen = parse_listen(&listen_text).ok_or(ConfigError::Invalid {
            key: "http.addr",
            expected: "HOST:PORT or :PORT",
            got: listen_text.clone(),
        })?;
        let driver = match string(root, "runtime.driver")?.as_deref() {
            None | Some("auto") => DriverChoice::Auto,
            Some("io_uring") | Some("iouring") => DriverChoice::IoUring,
            Some("poll") | Some("epoll") => DriverChoice::Poll,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "runtime.driver",
                    expected: "auto, io_uring or poll",
                    got: other.to_owned(),
                })
            }
        };
        let log_formatter = match string(root, "log.formatter")?.as_deref() {
            None | Some("") | Some("text") => crate::logging::Formatter::Text,
            Some("json") | Some("logstash") => crate::logging::Formatter::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log.formatter",
                    expected: "text or json",
                    got: other.to_owned(),
                })
            }
        };
        let access_log = !boolean(root, "log.accesslog.disabled")?.unwrap_or(false);
        let log_level = string(root, "log.level")?.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                expected: "error, warn, info or debug",
                got: log_level,
            });
        }
        let threads = match lookup(root, "runtime.threads") {
            None => 0,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= 1024)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "runtime.threads",
                    expected: "an integer from 0 (one per core) to 1024",
                    got: describe(v),
                })? as usize,
        };
        let root_directory = PathBuf::from(
            string(root, "storage.filesystem.rootdirectory")?
                .unwrap_or_else(|| "/var/lib/registry".into()),
        );
        let drain_timeout = match string(root, "http.draintimeout")? {
            None => std::time::Duration::from_secs(30),
            Some(text) => parse_duration(&text).ok_or(ConfigError::Invalid {
                key: "http.draintimeout",
                expected: "a duration such as 30s, 2m or 500ms",
                got: text,
            })?,
        };
        let defaults = crate::conn::ConnSettings::default();
        let millis = |key: &'static str,
                      default: std::time::Duration|
         -> Result<std::time::Duration, ConfigError> {
            Ok(match lookup(root, key) {
                None => default,
                Some(v) => std::time::Duration::from_millis(
                    v.as_u64()
                        .filter(|n| *n > 0 && *n <= 86_400_000)
                        .ok_or_else(|| ConfigError::Invalid {
                            key,
                            expected: "milliseconds from 1 to 86400000",
                            got: describe(v),
                        })?,
                ),
            })
        };
        let count = |key: &'static str, default: usize, max: u64| -> Result<usize, ConfigError> {
            Ok(match lookup(root, key) {
                None => default,
                Some(v) => v.as_u64().filter(|n| *n > 0 && *n <= max).ok_or_else(|| {
                    ConfigError::Invalid {
                        key,
                        expected: "a positive integer within its limit",
                        got: describe(v),
                    }
                })? as usize,
            })
        };
        let mut trusted_proxies = Vec::new();
        for text in string_list(root, "http.trustedproxies")? {
            trusted_proxies.push(text.parse().map_err(|_| ConfigError::Invalid {
                key: "http.trustedproxies",
                expected: "IP addresses or networks such as 10.0.0.0/8",
                got: text.clone(),
            })?);
        }
        let conn_settings = crate::conn::ConnSettings {
            trusted_proxies,
            head_read_timeout: millis("http.limits.headreadtimeoutms", defaults.head_read_timeout)?,
            idle_timeout: millis("http.limits.idletimeoutms", defaults.idle_timeout)?,
            body_progress_timeout: millis(
                "http.limits.bodyprogresstimeoutms",
                defaults.body_progress_timeout,
            )?,
            connections_per_loop_max: count(
                "http.limits.connectionsperloopmax",
                defaults.connections_per_loop_max,
                1 << 20,
            )?,
            ..defaults
        };
        let http_defaults = berth_http::Limits::default();
        let head_bytes_max = count(
            "http.limits.headbytesmax",
            http_defaults.head_bytes_max,
            1 << 20,
        )?;
        let headers_max = count("http.limits.headersmax", http_defaults.headers_max, 1024)?;
        let target_bytes_max = count(
            "http.limits.targetbytesmax",
            http_defaults.target_bytes_max,
            1 << 20,
        )?;
        let duration = |key: &'static str| -> Result<Option<std::time::Duration>, ConfigError> {
            match string(root, key)? {
                None => Ok(None),
                Some(text) => parse_duration(&text).map(Some).ok_or(ConfigError::Invalid {
                    key,
                    expected: "a duration such as 24h or 30m",
                    got: text,
                }),
            }
        };
        let gc_interval = duration("storage.gc.interval")?.filter(|d| !d.is_zero());
        let gc_grace_period =
            duration("storage.gc.graceperiod")?.unwrap_or(std::time::Duration::from_secs(3600));
        let gc_delete_untagged = boolean(root, "storage.gc.deleteuntagged")?.unwrap_or(false);
        let upload_purging =
            if boolean(root, "storage.maintenance.uploadpurging.enabled")?.unwrap_or(true) {
                Some(UploadPurging {
                    age: duration("storage.maintenance.uploadpurging.age")?
                        .unwrap_or(std::time::Duration::from_secs(168 * 3600)),
                    interval: duration("storage.maintenance.uploadpurging.interval")?
                        .filter(|d| !d.is_zero())
                        .unwrap_or(std::time::Duration::from_secs(24 * 3600)),
                    dry_run: boolean(root, "storage.maintenance.uploadpurging.dryrun")?
                        .unwrap_or(false),
                })
            } else {
                None
            };
        let tls = tls_settings(root)?;
        let letsencrypt = match string(root, "http.tls.letsencrypt.cachefile")?
            .filter(|c| !c.is_empty())
        {
            None if lookup(root, "http.tls.letsencrypt.hosts").is_some() => {
                return Err(ConfigError::Invalid {
                    key: "http.tls.letsencrypt.cachefile",
                    expected: "a file to keep the ACME account and certificate in",
                    got: "nothing".into(),
                })
            }
            None => None,
            Some(cache_file) => {
                if tls.is_some() {
                    return Err(ConfigError::Invalid {
                        key: "http.tls.letsencrypt",
                        expected:
                            "either http.tls.certificate/key or http.tls.letsencrypt, not both",
                        got: "both".into(),
                    });
                }
                let hosts = string_list(root, "http.tls.letsencrypt.hosts")?;
                if hosts.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "http.tls.letsencrypt.hosts",
                        expected: "the DNS names to obtain a certificate for",
                        got: "nothing".into(),
                    });
                }
                Some(crate::acme::LetsEncryptSettings {
                    cache_file: PathBuf::from(cache_file),
                    email: string(root, "http.tls.letsencrypt.email")?.filter(|e| !e.is_empty()),
                    hosts,
                    directory_url: string(root, "http.tls.letsencrypt.directoryurl")?
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| crate::acme::LETS_ENCRYPT.to_owned()),
                    directory_ca: string(root, "http.tls.letsencrypt.directoryca")?
                        .filter(|c| !c.is_empty())
                        .map(PathBuf::from),
                })
            }
        };
        let auth = auth_config(root)?;
        let proxy = proxy_settings(root)?;
        let mut unknown_keys = Vec::new();
        collect_unknown(root, String::new(), &mut unknown_keys);
        Ok(Config {
            listen,
            host: string(root, "http.host")?.filter(|h| !h.is_empty()),
            relative_urls: boolean(root, "http.relativeurls")?.unwrap_or(false),
            http_secret: string(root, "http.secret")?.filter(|s| !s.is_empty()),
            root_directory,
            delete_enabled: boolean(root, "storage.delete.enabled")?.unwrap_or(false),
            gc_interval,
            gc_grace_period,
            gc_delete_untagged,
            upload_purging,
            log_level,
            log_formatter,
            access_log,
            driver,
            threads,
            drain_timeout,
            conn_settings,
            head_bytes_max,
            headers_max,
            target_bytes_max,
            tls,
            auth,
            letsencrypt,
            proxy,
            unknown_keys,
        })
    }
}

/// A list of strings: a YAML sequence, or (from `REGISTRY_..._0`-style
/// environment overrides) a map whose keys are indexes.
fn string_list(root: &Value, key: &'static str) -> Result<Vec<String>, ConfigError> {
    let invalid = |got: &Value| ConfigError::Invalid {
        key,
        expected: "a list of strings",
        got: describe(got),
    };
    match lookup(root, key) {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(v)))
            .collect(),
        Some(Value::Mapping(map)) => {
            let mut indexed = Vec::new();
            for (k, v) in map {
                let index = k
                    .as_str()
                    .and_then(|k| k.parse::<usize>().ok())
                    .ok_or_else(|| invalid(k))?;
                indexed.push((
                    index,
                    v.as_str().map(str::to_owned).ok_or_else(|| invalid(v))?,
                ));
            }
            indexed.sort();
            Ok(indexed.into_iter().map(|(_, v)| v).collect())
        }
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(other) => Err(invalid(other)),
    }
}

fn auth_config(root: &Value) -> Result<AuthConfig, ConfigError> {
    let section = match lookup(root, "auth") {
        None => return Ok(AuthConfig::None),
        Some(Value::String(s)) if s.is_empty() => return Ok(AuthConfig::None),
        Some(Value::Mapping(m)) if m.is_empty() => return Ok(AuthConfig::None),
        Some(Value::Mapping(m)) => m,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "auth",
                expected: "a section naming one method (htpasswd)",
                got: describe(other),
            })
        }
    };
    let kinds: Vec<String> = section
        .keys()
        .map(|k| k.as_str().unwrap_or("?").to_owned())
        .collect();
    match kinds.as_slice() {
        [kind] if kind == "htpasswd" => {
            let realm = string(root, "auth.htpasswd.realm")?
                .filter(|r| !r.is_empty())
                .ok_or(ConfigError::Invalid {
                    key: "auth.htpasswd.realm",
                    expected: "the realm for the login challenge (REGISTRY_AUTH_HTPASSWD_REALM)",
                    got: "nothing".into(),
                })?;
            let path = string(root, "auth.htpasswd.path")?
                .filter(|p| !p.is_empty())
                .ok_or(ConfigError::Invalid {
                    key: "auth.htpasswd.path",
                    expected: "the htpasswd file (REGISTRY_AUTH_HTPASSWD_PATH)",
                    got: "nothing".into(),
                })?;
            Ok(AuthConfig::Htpasswd {
                realm,
                path: PathBuf::from(path),
            })
        }
        [kind] if kind == "token" => {
            let required = |key: &'static str, what: &'static str| -> Result<String, ConfigError> {
                string(root, key)?
                    .filter(|v| !v.is_empty())
                    .ok_or(ConfigError::Invalid {
                        key,
                        expected: what,
                        got: "nothing".into(),
                    })
            };
            let settings = crate::auth::token::TokenSettings {
                realm: required("auth.token.realm", "the token service URL")?,
                service: required("auth.token.service", "this registry's service name")?,
                issuer: required("auth.token.issuer", "the token issuer")?,
                root_cert_bundle: string(root, "auth.token.rootcertbundle")?
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
                jwks: string(root, "auth.token.jwks")?
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
                signing_algorithms: string_list(root, "auth.token.signingalgorithms")?,
            };
            if settings.root_cert_bundle.is_none() && settings.jwks.is_none() {
                return Err(ConfigError::Invalid {
                    key: "auth.token.rootcertbundle",
                    expected:
                        "a PEM certificate bundle (or auth.token.jwks) with the token signing keys",
                    got: "nothing".into(),
                });
            }
            Ok(AuthConfig::Token(settings))
        }
        [kind] => Err(ConfigError::Invalid {
            key: "auth",
            expected:
                "htpasswd or token (other methods are not supported; refusing to run unprotected)",
            got: kind.clone(),
        }),
        _ => Err(ConfigError::Invalid {
            key: "auth",
            expected: "exactly one method",
            got: kinds.join(", "),
        }),
    }
}

fn tls_settings(root: &Value) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
    use crate::tls::{ClientAuth, MinimumVersion, TlsSettings};
    let certificate = string(root, "http.tls.certificate")?.filter(|s| !s.is_empty());
    let key = string(root, "http.tls.key")?.filter(|s| !s.is_empty());
    let (certificate, key) = match (certificate, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (PathBuf::from(c), PathBuf::from(k)),
        (Some(_), None) => {
            return Err(ConfigError::Invalid {
                key: "http.tls.key",
                expected: "a PEM key file (http.tls.certificate is set)",
                got: "nothing".into(),
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "http.tls.certificate",
                expected: "a PEM certificate file (http.tls.key is set)",
                got: "nothing".into(),
            })
        }
    };
    let client_auth = match string(root, "http.tls.clientauth")?.as_deref() {
        None | Some("") | Some("require-and-verify-client-cert") => ClientAuth::RequireAndVerify,
        Some("verify-client-cert-if-given") => ClientAuth::VerifyIfGiven,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "http.tls.clientauth",
                expected: "require-and-verify-client-cert or verify-client-cert-if-given",
                got: other.to_owned(),
            })
        }
    };
    let minimum = match string(root, "http.tls.minimumtls")?.as_deref() {
        None | Some("") | Some("tls1.2") => MinimumVersion::Tls12,
        Some("tls1.3") => MinimumVersion::Tls13,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "http.tls.minimumtls",
                expected: "tls1.2 or tls1.3 (older versions are not offered)",
                got: other.to_owned(),
            })
        }
    };
    Ok(Some(TlsSettings {
        certificate,
        key,
        client_cas: string_list(root, "http.tls.clientcas")?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        client_auth,
        minimum,
        cipher_suites: string_list(root, "http.tls.ciphersuites")?,
    }))
}

impl Config {
    /// The effective settings as `key: value` lines in config.yml key
    /// syntax, secrets masked.
    pub fn effective(&self) -> String {
        let mut lines = vec![
            format!("log.level: {}", self.log_level),
            format!(
                "log.formatter: {}",
                match self.log_formatter {
                    crate::logging::Formatter::Text => "text",
                    crate::logging::Formatter::Json => "json",
                }
            ),
            format!("log.accesslog.disabled: {}", !self.access_log),
            format!(
                "storage.filesystem.rootdirectory: {}",
                self.root_directory.display()
            ),
            format!("storage.delete.enabled: {}", self.delete_enabled),
            format!(
                "storage.gc.interval: {}",
                self.gc_interval
                    .map(|d| format!("{d:?}"))
                    .unwrap_or_else(|| "off".into())
            ),
            format!("storage.gc.graceperiod: {:?}", self.gc_grace_period),
            format!("storage.gc.deleteuntagged: {}", self.gc_delete_untagged),
            match &self.upload_purging {
                None => "storage.maintenance.uploadpurging.enabled: false".to_string(),
                Some(p) => format!(
                    "storage.maintenance.uploadpurging: age {:?}, interval {:?}, dryrun {}",
                    p.age, p.interval, p.dry_run
                ),
            },
            format!("http.addr: {}", self.listen),
            format!("http.host: {}", self.host.as_deref().unwrap_or("")),
            format!("http.relativeurls: {}", self.relative_urls),
            format!(
                "http.secret: {}",
                if self.http_secret.is_some() {
                    "********"
                } else {
                    "(generated, kept in the data directory)"
                }
            ),
            format!("http.draintimeout: {:?}", self.drain_timeout),
            format!("http.limits.headbytesmax: {}", self.head_bytes_max),
            format!("http.limits.headersmax: {}", self.headers_max),
            format!("http.limits.targetbytesmax: {}", self.target_bytes_max),
            format!(
                "http.limits.headreadtimeoutms: {}",
                self.conn_settings.head_read_timeout.as_millis()
            ),
            format!(
                "http.limits.idletimeoutms: {}",
                self.conn_settings.idle_timeout.as_millis()
            ),
            format!(
                "http.limits.bodyprogresstimeoutms: {}",
                self.conn_settings.body_progress_timeout.as_millis()
            ),
            format!(
                "http.limits.connectionsperloopmax: {}",
                self.conn_settings.connections_per_loop_max
            ),
        ];
        if let Some(le) = &self.letsencrypt {
            lines.push(format!(
                "http.tls.letsencrypt.cachefile: {}",
                le.cache_file.display()
            ));
            lines.push(format!(
                "http.tls.letsencrypt.hosts: [{}]",
                le.hosts.join(", ")
            ));
            lines.push(format!(
                "http.tls.letsencrypt.directoryurl: {}",
                le.directory_url
            ));
        }
        match &self.tls {
            None if self.letsencrypt.is_some() => {}
            None => lines.push("http.tls: (none: plain HTTP)".into()),
            Some(tls) => {
                lines.push(format!(
                    "http.tls.certificate: {}",
                    tls.certificate.display()
                ));
                lines.push(format!("http.tls.key: {}", tls.key.display()));
                let cas: Vec<String> = tls
                    .client_cas
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                lines.push(format!("http.tls.clientcas: [{}]", cas.join(", ")));
                lines.push(format!("http.tls.clientauth: {:?}", tls.client_auth));
                lines.push(format!("http.tls.minimumtls: {:?}", tls.minimum));
                lines.push(format!(
                    "http.tls.ciphersuites: [{}]",
                    tls.cipher_suites.join(", ")
                ));
            }
        }
        match &self.auth {
            AuthConfig::None => lines.push("auth: (none: anonymous access)".into()),
            AuthConfig::Token(t) => {
                lines.push(format!("auth.token.realm: {}", t.realm));
                lines.push(format!("auth.token.service: {}", t.service));
                lines.push(format!("auth.token.issuer: {}", t.issuer));
                lines.push(format!(
                    "auth.token.rootcertbundle: {}",
                    t.root_cert_bundle
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
                lines.push(format!(
                    "auth.token.jwks: {}",
                    t.jwks
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
            AuthConfig::Htpasswd { realm, path } => {
                lines.push(format!("auth.htpasswd.realm: {realm}"));
                lines.push(format!("auth.htpasswd.path: {}", path.display()));
            }
        }
        match &self.proxy {
            None => lines.push("proxy: (none: not a pull-through cache)".into()),
            Some(p) => {
                lines.push(format!("proxy.remoteurl: {}", p.upstream.remote_url));
                if let Some((user, _)) = &p.upstream.credentials {
                    lines.push(format!("proxy.username: {user}"));
                    lines.push("proxy.password: ********".into());
                }
                lines.push(format!(
                    "proxy.ttl: {}",
                    p.limits
                        .max_age
                        .map(|d| format!("{d:?}"))
                        .unwrap_or_else(|| "0 (cached content never expires)".into())
                ));
                lines.push(format!("proxy.tagttl: {:?}", p.tag_ttl));
                lines.push(format!(
                    "proxy.maxsize: {}",
                    p.limits
                        .max_bytes
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "0 (no limit)".into())
                ));
                lines.push(format!("proxy.evictioninterval: {:?}", p.eviction_interval));
                lines.push(format!(
                    "proxy.localprefix: {}",
                    p.local_prefix
                        .as_deref()
                        .unwrap_or("(none: pushes refused)")
                ));
            }
        }
        lines.push(format!("runtime.driver: {:?}", self.driver));
        lines.push(format!("runtime.threads: {}", self.threads));
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    Ok(if value.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        value
    })
}

/// Overlays `overlay` onto `base`: maps merge key by key, anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (k, v) in overlay {
                let key = lowercase_key(&k);
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(key, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn lowercase_key(k: &Value) -> Value {
    match k {
        Value::String(s) => Value::String(s.to_ascii_lowercase()),
        other => other.clone(),
    }
}

/// Sets `keys` under `root`, turning scalars on the way into maps (so that
/// `REGISTRY_AUTH=htpasswd` then `REGISTRY_AUTH_HTPASSWD_PATH=...` both work).
fn set_path(root: &mut Value, keys: &[String], value: Value) {
    let Some((first, rest)) = keys.split_first() else {
        // A non-empty scalar set on a section selects its type
        // (`REGISTRY_AUTH=htpasswd`): keep that type's settings, whatever
        // order the variables are applied in. An empty one clears it.
        if let (Value::Mapping(map), Value::String(kind)) = (&mut *root, &value) {
            if !kind.is_empty() {
                let key = Value::String(kind.clone());
                let settings = map
                    .remove(&key)
                    .unwrap_or_else(|| Value::Mapping(Mapping::new()));
                map.clear();
                map.insert(key, settings);
                return;
            }
        }
        *root = value;
        return;
    };
    if !root.is_mapping() {
        let mut map = Mapping::new();
        if let Value::String(kind) = root {
            map.insert(Value::String(kind.clone()), Value::Mapping(Mapping::new()));
        }
        *root = Value::Mapping(map);
    }
    if let Value::Mapping(map) = root {
        let key = Value::String(first.clone());
        let child = map.entry(key).or_insert(Value::Null);
        set_path(child, rest, value);
    }
}

fn lookup<'v>(root: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted
        .split('.')
        .try_fold(root, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn describe(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn string(root: &Value, key: &'static str) -> Result<Option<String>, ConfigError> {
    match lookup(root, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ConfigError::Invalid {
            key,
            expected: "a string",
            got: describe(other),
        }),
    }
}

fn boolean(root: &Value, key: &'static str) -> Result<Option<bool>, ConfigError> {
    match lookup(root, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ConfigError::Invalid {
            key,
            expected: "true or false",
            got: describe(other),
        }),
    }
}

fn collect_unknown(v: &Value, prefix: String, out: &mut Vec<String>) {
    let Value::Mapping(map) = v else {
        if !prefix.is_empty() && !KNOWN_KEYS.contains(&prefix.as_str()) {
            out.push(prefix);
        }
        return;
    };
    if !prefix.is_empty() && KNOWN_KEYS.contains(&prefix.as_str()) {
        return;
    }
    for (k, child) in map {
        let name = k.as_str().map(str::to_owned).unwrap_or_else(|| describe(k));
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        collect_unknown(child, path, out);
    }
}

/// The `proxy` section: `None` unless `proxy.remoteurl` is set.
fn proxy_settings(root: &Value) -> Result<Option<crate::proxy::ProxySettings>, ConfigError> {
    let Some(remote_url) = string(root, "proxy.remoteurl")?.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let duration = |key: &'static str, default: u64| -> Result<std::time::Duration, ConfigError> {
        match string(root, key)? {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(text) => parse_duration(&text).ok_or(ConfigError::Invalid {
                key,
                expected: "a duration such as 168h, 10m or 0",
                got: text,
            }),
        }
    };
    let username = string(root, "proxy.username")?.filter(|u| !u.is_empty());
    let password = string(root, "proxy.password")?.unwrap_or_default();
    let max_age = duration("proxy.ttl", 168 * 3600)?;
    let max_bytes = match string(root, "proxy.maxsize")? {
        None => None,
        Some(text) => Some(parse_size(&text).ok_or(ConfigError::Invalid {
            key: "proxy.maxsize",
            expected: "a size in bytes such as 500GiB, 200GB or 1073741824 (0 for no limit)",
            got: text,
        })?),
    }
    .filter(|n| *n > 0);
    let eviction_interval = duration("proxy.evictioninterval", 60)?;
    if eviction_interval.is_zero() {
        return Err(ConfigError::Invalid {
            key: "proxy.evictioninterval",
            expected: "a positive duration",
            got: "0".into(),
        });
    }
    let settings = crate::proxy::ProxySettings {
        upstream: crate::proxy::upstream::UpstreamSettings {
            remote_url: remote_url.trim().to_owned(),
            credentials: username.map(|u| (u, password)),
            remote_ca: string(root, "proxy.remoteca")?
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        },
        tag_ttl: duration("proxy.tagttl", 60)?,
        limits: crate::proxy::cache::EvictionLimits {
            max_age: Some(max_age).filter(|d| !d.is_zero()),
            max_bytes,
        },
        eviction_interval,
        local_prefix: string(root, "proxy.localprefix")?
            .map(|p| p.trim().trim_matches('/').to_owned())
            .filter(|p| !p.is_empty()),
    };
    crate::proxy::upstream::Upstream::new(&settings.upstream).map_err(|message| {
        ConfigError::Invalid {
            key: "proxy.remoteurl",
            expected: "a usable upstream registry URL",
            got: message,
        }
    })?;
    Ok(Some(settings))
}

/// Parses a byte size: a plain number of bytes, or a number with a
/// decimal (`KB`, `MB`, `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`)
/// unit.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Parses a Go-style duration: one or more `<number><unit>` terms with units
/// `h`, `m`, `s`, `ms`, `us`, `ns` (e.g. `1m30s`), or `0`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e9).then(|| std::time::Duration::from_secs_f64(total))
}

/// Parses `:PORT`, `HOST:PORT` or `[V6]:PORT`.
fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    text.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_default_matches_registry2() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
        assert_eq!(c.root_directory, PathBuf::from("/var/lib/registry"));
        assert!(!c.delete_enabled);
        assert_eq!(c.driver, DriverChoice::Auto);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn environment_overrides_keys_by_path() {
        let c = Config::load(
            None,
            env(&[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:5001"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/tmp/x"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_RUNTIME_DRIVER", "poll"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(c.root_directory, PathBuf::from("/tmp/x"));
        assert!(c.delete_enabled);
        assert_eq!(c.driver, DriverChoice::Poll);
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, "version: 0.1\nhttp:\n  addr: 127.0.0.1:6000\n  secret: s\nstorage:\n  delete:\n    enabled: true\n").unwrap();
        let c = Config::load(Some(&path), env(&[("REGISTRY_HTTP_ADDR", ":7000")])).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert!(c.delete_enabled);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(c.http_secret.as_deref(), Some("s"));
    }

    #[test]
    fn durations_follow_go_syntax() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "30", "s", "1x", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let c = Config::load(None, env(&[("REGISTRY_HTTP_DRAINTIMEOUT", "5s")])).unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert!(Config::load(None, env(&[("REGISTRY_HTTP_DRAINTIMEOUT", "soon")])).is_err());
    }

    #[test]
    fn tls_settings_from_env_with_indexed_lists() {
        let c = Config::load(
            None,
            env(&[
                ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
                ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
                ("REGISTRY_HTTP_TLS_CLIENTCAS_1", "/certs/b.pem"),
                ("REGISTRY_HTTP_TLS_CLIENTCAS_0", "/certs/a.pem"),
                ("REGISTRY_HTTP_TLS_MINIMUMTLS", "tls1.3"),
            ]),
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
        assert_eq!(
            tls.client_cas,
            vec![PathBuf::from("/certs/a.pem"), PathBuf::from("/certs/b.pem")]
        );
        assert_eq!(tls.minimum, crate::tls::MinimumVersion::Tls13);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let err = Config::load(None, env(&[("REGISTRY_HTTP_TLS_CERTIFICATE", "/x")])).unwrap_err();
        assert!(err.to_string().contains("http.tls.key"), "{err}");
        let err = Config::load(
            None,
            env(&[
                ("REGISTRY_HTTP_TLS_CERTIFICATE", "/x"),
                ("REGISTRY_HTTP_TLS_KEY", "/y"),
                ("REGISTRY_HTTP_TLS_MINIMUMTLS", "tls1.0"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("http.tls.minimumtls"), "{err}");
    }

    #[test]
    fn auth_section_from_env_in_any_order() {
        let vars = [
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
        ];
        let expected = AuthConfig::Htpasswd {
            realm: "Registry Realm".into(),
            path: PathBuf::from("/auth/htpasswd"),
        };
        for order in [[0, 1, 2], [1, 0, 2], [2, 0, 1], [1, 2, 0]] {
            let c = Config::load(
                None,
                order
                    .iter()
                    .map(|&i| (vars[i].0.to_string(), vars[i].1.to_string())),
            )
            .unwrap();
            assert_eq!(c.auth, expected, "{order:?}");
            assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        }
        let err = Config::load(
            None,
            env(&[
                ("REGISTRY_AUTH", "htpasswd"),
                ("REGISTRY_AUTH_HTPASSWD_PATH", "/x"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("auth.htpasswd.realm"), "{err}");
        let err = Config::load(None, env(&[("REGISTRY_AUTH", "silly")])).unwrap_err();
        assert!(err.to_string().contains("auth"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, "auth:\n  htpasswd:\n    realm: r\n    path: /p\n").unwrap();
        assert_eq!(
            Config::load(Some(&path), env(&[("REGISTRY_AUTH", "")]))
                .unwrap()
                .auth,
            AuthConfig::None
        );
    }

    #[test]
    fn proxy_section_from_env_with_registry2_names_and_berth_extras() {
        let c = Config::load(
            None,
            env(&[
                ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
                ("REGISTRY_PROXY_USERNAME", "ci"),
                ("REGISTRY_PROXY_PASSWORD", "s3cret"),
                ("REGISTRY_PROXY_TTL", "72h"),
                ("REGISTRY_PROXY_TAGTTL", "30s"),
                ("REGISTRY_PROXY_MAXSIZE", "500GiB"),
                ("REGISTRY_PROXY_LOCALPREFIX", "/local/"),
            ]),
        )
        .expect("config");
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let p = c.proxy.clone().expect("proxy mode");
        assert_eq!(p.upstream.remote_url, "https://registry-1.docker.io");
        assert_eq!(p.upstream.credentials, Some(("ci".into(), "s3cret".into())));
        assert_eq!(
            p.limits.max_age,
            Some(std::time::Duration::from_secs(72 * 3600))
        );
        assert_eq!(p.limits.max_bytes, Some(500 << 30));
        assert_eq!(p.tag_ttl, std::time::Duration::from_secs(30));
        assert_eq!(p.local_prefix.as_deref(), Some("local"));
        let effective = c.effective();
        assert!(
            effective.contains("proxy.password: ********"),
            "{effective}"
        );
        assert!(!effective.contains("s3cret"), "{effective}");

        let defaults = Config::load(None, env(&[("REGISTRY_PROXY_REMOTEURL", "http://up:5000")]))
            .expect("config")
            .proxy
            .expect("proxy mode");
        assert_eq!(
            defaults.limits.max_age,
            Some(std::time::Duration::from_secs(168 * 3600))
        );
        assert_eq!(defaults.limits.max_bytes, None);
        assert_eq!(defaults.local_prefix, None);
        assert!(Config::load(None, env(&[]))
            .expect("config")
            .proxy
            .is_none());
    }

    #[test]
    fn bad_proxy_values_name_their_key() {
        for (key, value, named) in [
            (
                "REGISTRY_PROXY_REMOTEURL",
                "registry-1.docker.io",
                "proxy.remoteurl",
            ),
            ("REGISTRY_PROXY_TTL", "a week", "proxy.ttl"),
            ("REGISTRY_PROXY_MAXSIZE", "lots", "proxy.maxsize"),
            (
                "REGISTRY_PROXY_EVICTIONINTERVAL",
                "0",
                "proxy.evictioninterval",
            ),
        ] {
            let mut pairs = vec![(key, value)];
            if key != "REGISTRY_PROXY_REMOTEURL" {
                pairs.push(("REGISTRY_PROXY_REMOTEURL", "http://up:5000"));
            }
            let error = Config::load(None, env(&pairs)).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(named)),
                "{key}={value}: {error:?}"
            );
        }
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1073741824"), Some(1 << 30));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("2 GB"), Some(2_000_000_000));
        assert_eq!(parse_size("10KiB"), Some(10240));
        assert_eq!(parse_size("1.5GB"), None);
        assert_eq!(parse_size("5 apples"), None);
        assert_eq!(parse_size("99999999999TiB"), None, "overflow");
    }

    #[test]
    fn effective_config_masks_secrets() {
        let c = Config::load(None, env(&[("REGISTRY_HTTP_SECRET", "hunter2")])).unwrap();
        let text = c.effective();
        assert!(text.contains("http.secret: ********"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("http.addr: 0.0.0.0:5000"), "{text}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err =
            Config::load(None, env(&[("REGISTRY_STORAGE_DELETE_ENABLED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("storage.delete.enabled"), "{err}");
        let err = Config::load(None, env(&[("REGISTRY_HTTP_ADDR", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("http.addr"), "{err}");
        let err = Config::load(None, env(&[("REGISTRY_RUNTIME_DRIVER", "kqueue")])).unwrap_err();
        assert!(err.to_string().contains("runtime.driver"), "{err}");
        let err = Config::load(Some(Path::new("/nonexistent/config.yml")), env(&[])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/config.yml"), "{err}");
    }
}
