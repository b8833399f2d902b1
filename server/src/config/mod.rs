//! Configuration: registry:2's `config.yml` keys and `REGISTRY_*`
//! environment overrides, resolved into a typed [`Config`].
//!
//! Sources, later ones winning: the embedded defaults, the YAML file (the
//! `serve` argument, else `REGISTRY_CONFIGURATION_PATH`), then every
//! `REGISTRY_<PATH>` variable, where `<PATH>` is the key path joined with
//! `_` (`REGISTRY_STORAGE_DELETE_ENABLED=true` sets `storage.delete.enabled`)
//! and the value is parsed as YAML.
//!
//! Every key is one entry of the table in [`keys`]; each section of the
//! server reads its keys through `source::Source` into its own typed
//! struct (`http`, `tls`, `auth`, `storage`, `health`, `process` for log
//! and runtime, `proxy`), and [`Config`] composes them.

mod auth;
mod error;
mod health;
mod http;
pub mod keys;
mod process;
mod proxy;
mod source;
mod storage;
mod tls;
mod values;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub use auth::{AuthConfig, FailureSettings};
pub use error::ConfigError;
pub use health::HealthConfig;
pub use http::{BodyRate, DebugConfig, UploadLimits};
pub use process::DriverChoice;
pub use storage::UploadPurging;
pub use values::{parse_duration, parse_size};

use source::{merge, parse_yaml, set_path, Source};

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
    /// `http.limits.uploadsessionsmax`, `.uploadsessionsperclientmax` (berth):
    /// caps on open upload sessions.
    pub uploads: UploadLimits,
    /// `http.debug.*`: the debug listener.
    pub debug: DebugConfig,
    /// `http.tls.*`: serve HTTPS when a certificate is configured.
    pub tls: Option<crate::tls::TlsSettings>,
    /// `auth.*`: who may use the API.
    pub auth: AuthConfig,
    /// `auth.htpasswd.failuresmax`, `.failurewindow` (berth): failed logins
    /// allowed per user and per client address.
    pub login_failures: FailureSettings,
    /// `http.tls.letsencrypt.*`: certificates obtained over ACME.
    pub letsencrypt: Option<crate::acme::LetsEncryptSettings>,
    /// `proxy.*`: run as a pull-through cache of `proxy.remoteurl`.
    pub proxy: Option<crate::proxy::ProxySettings>,
    /// `health.storagedriver.*`: the background storage health probe.
    pub health: HealthConfig,
    /// Keys present in the sources that berth does not use, for warnings.
    pub unknown_keys: Vec<String>,
    /// `key: value` for every key, secrets masked (see [`Config::effective`]).
    effective: Vec<String>,
}

impl Config {
    /// Loads the configuration from `file` (or the embedded default) and
    /// the given environment.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file = file.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(k, _)| k == "REGISTRY_CONFIGURATION_PATH")
                .map(|(_, v)| PathBuf::from(v))
        });
        let file_text = match &file {
            None => None,
            Some(path) => Some((
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?,
                path.display().to_string(),
            )),
        };
        let mut root = parse_yaml(EMBEDDED_DEFAULT, "<embedded default>")?;
        if let Some((text, origin)) = &file_text {
            merge(&mut root, parse_yaml(text, origin)?);
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

    /// The configuration given as config.yml text over the embedded
    /// default, without any environment (`origin` names it in errors).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut root = parse_yaml(EMBEDDED_DEFAULT, "<embedded default>")?;
        merge(&mut root, parse_yaml(text, origin)?);
        Config::from_value(&root)
    }

    fn from_value(root: &Value) -> Result<Config, ConfigError> {
        Config::from_source(&Source::new(root))
    }

    /// Each section reads its keys from `src`; `Config` composes them.
    fn from_source(src: &Source) -> Result<Config, ConfigError> {
        let http = http::parse(src)?;
        let log = process::parse_log(src)?;
        let runtime = process::parse_runtime(src)?;
        let storage = storage::parse(src)?;
        let (tls, letsencrypt) = tls::parse(src)?;
        let auth = auth::parse(src)?;
        let login_failures = auth::parse_login_failures(src)?;
        let proxy = proxy::parse(src)?;
        let health = health::parse(src)?;
        let limits = http.limits;
        Ok(Config {
            listen: http.listen,
            host: http.host,
            relative_urls: http.relative_urls,
            http_secret: http.secret,
            root_directory: storage.root_directory,
            delete_enabled: storage.delete_enabled,
            gc_interval: storage.gc_interval,
            gc_grace_period: storage.gc_grace_period,
            gc_delete_untagged: storage.gc_delete_untagged,
            upload_purging: storage.upload_purging,
            log_level: log.level,
            log_formatter: log.formatter,
            access_log: log.access_log,
            driver: runtime.driver,
            threads: runtime.threads,
            drain_timeout: http.drain_timeout,
            conn_settings: crate::conn::ConnSettings {
                trusted_proxies: http.trusted_proxies,
                head_read_timeout: limits.head_read_timeout,
                idle_timeout: limits.idle_timeout,
                body_progress_timeout: limits.body_progress_timeout,
                connections_per_loop_max: limits.connections_per_loop_max,
                discard_body_bytes_max: limits.discard_body_bytes_max,
                body_bytes_per_second_min: limits.body_rate.map_or(0, |r| r.bytes_per_second_min),
                body_rate_window: limits
                    .body_rate
                    .map_or(crate::conn::ConnSettings::default().body_rate_window, |r| {
                        r.window
                    }),
                descriptors_reserved: limits.descriptors_reserved,
            },
            head_bytes_max: limits.head.head_bytes_max,
            headers_max: limits.head.headers_max,
            target_bytes_max: limits.head.target_bytes_max,
            uploads: limits.uploads,
            debug: http.debug,
            tls,
            auth,
            login_failures,
            letsencrypt,
            proxy,
            health,
            unknown_keys: src.unknown_keys(),
            effective: src.effective(),
        })
    }

    /// The effective settings as `key: value` lines in config.yml key
    /// syntax, one per key of the table, secrets masked.
    pub fn effective(&self) -> String {
        let mut out = self.effective.join("\n");
        out.push('\n');
        out
    }

    /// The limits of request heads (`http.limits.headbytesmax`,
    /// `.headersmax`, `.targetbytesmax`).
    pub fn head_limits(&self) -> berth_http::Limits {
        berth_http::Limits {
            head_bytes_max: self.head_bytes_max,
            headers_max: self.headers_max,
            target_bytes_max: self.target_bytes_max,
        }
    }
}
