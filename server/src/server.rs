//! A registry server from a [`Config`]: [`Server::build`] sets up
//! credentials, the store, the upload secret, TLS, the pull-through cache
//! and the debug listener's socket (every failure a [`StartError`] naming
//! the problem); [`Server::run`] starts the background schedulers and the
//! debug listener, serves until SIGTERM/SIGINT, then saves what a restart
//! needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_engine::{Engine, EngineError};

use crate::api::ApiSettings;
use crate::auth::Auth;
use crate::config::{AuthConfig, Config};
use crate::debug::DebugService;
use crate::health::Health;
use crate::proxy::Proxy;
use crate::runtime::{self, ServeError, ServeOptions};
use crate::schedulers::{self, GcSchedule};

/// Why the server cannot start (or stopped with an error). One line each,
/// naming the file, key or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `auth.htpasswd`: the file is missing or does not parse.
    #[error(transparent)]
    Htpasswd(#[from] crate::auth::htpasswd::HtpasswdError),
    /// `auth.token`: a key source or setting is unusable.
    #[error(transparent)]
    Token(#[from] crate::auth::token::TokenSetupError),
    /// The data directory cannot be opened (missing, unwritable, damaged
    /// beyond recovery, or held by another process).
    #[error("cannot open the data directory {root}: {source}")]
    Store {
        /// `storage.filesystem.rootdirectory`.
        root: PathBuf,
        /// Why.
        source: EngineError,
    },
    /// No `http.secret` and the generated one cannot be kept.
    #[error("cannot create the generated http secret in {root}: {source}")]
    Secret {
        /// The data directory.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `http.tls.*`: the certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `http.tls.letsencrypt.*`: ACME could not start.
    #[error(transparent)]
    Acme(#[from] crate::acme::AcmeError),
    /// `proxy.*`: the pull-through cache could not be set up.
    #[error("{0}")]
    Proxy(String),
    /// `http.debug.addr` cannot be listened on.
    #[error("cannot listen on {addr} (http.debug.addr): {source}")]
    DebugListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The public listeners or event loops failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl StartError {
    /// The process exit status for this failure: 2 for configuration that
    /// cannot be used (credentials, TLS, proxy), 1 for the environment
    /// (store, secret file, ports).
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Htpasswd(_)
            | StartError::Token(_)
            | StartError::Tls(_)
            | StartError::Acme(_)
            | StartError::Proxy(_) => 2,
            StartError::Store { .. }
            | StartError::Secret { .. }
            | StartError::DebugListen { .. }
            | StartError::Serve(_) => 1,
        }
    }
}

/// A server ready to run: everything that can fail at start has been done.
pub struct Server {
    config: Config,
    engine: Arc<Engine>,
    proxy: Option<Arc<Proxy>>,
    health: Arc<Health>,
    debug_listener: Option<std::net::TcpListener>,
    options: ServeOptions,
}

impl Server {
    /// Sets up everything `config` asks for, in the order that gives the
    /// clearest error: credentials before the store is opened, then the
    /// store, the upload secret, TLS, the pull-through cache and the debug
    /// listener's socket. Starts no thread of its own (ACME may).
    pub fn build(config: Config) -> Result<Server, StartError> {
        let auth = match &config.auth {
            AuthConfig::None => Auth::Anonymous,
            AuthConfig::Token(settings) => Auth::Token(Arc::new(
                crate::auth::token::TokenAuth::new(settings.clone())?,
            )),
            AuthConfig::Htpasswd { realm, path } => Auth::Htpasswd(
                crate::auth::htpasswd::Htpasswd::open_with(path, realm, config.login_failures)?,
            ),
        };
        for key in &config.unknown_keys {
            log::warn!("configuration key {key} is not used by berth; ignored");
        }
        let engine = open_store(&config.root_directory)?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.threads
        };
        let secret = match &config.http_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                let secret = generated_secret(&config.root_directory).map_err(|source| {
                    StartError::Secret {
                        root: config.root_directory.clone(),
                        source,
                    }
                })?;
                log::warn!(
                    "No HTTP secret provided (http.secret): using one generated and kept in the data directory. \
                     Behind a load balancer, configure the same http.secret on every node or uploads will fail."
                );
                secret
            }
        };
        let tls = match (&config.tls, &config.letsencrypt) {
            (Some(settings), _) => Some(crate::tls::server_config(settings)?),
            (None, Some(letsencrypt)) => Some(crate::acme::start(letsencrypt.clone())?),
            (None, None) => None,
        };
        let engine = Arc::new(engine);
        let proxy = match &config.proxy {
            None => None,
            Some(settings) => {
                let proxy = Proxy::new(settings.clone(), &config.root_directory)
                    .map_err(StartError::Proxy)?;
                log::info!(
                    "pull-through cache of {} (tags trusted for {:?}; content kept {} since its last pull{})",
                    settings.upstream.remote_url,
                    settings.tag_ttl,
                    settings
                        .limits
                        .max_age
                        .map(|d| format!("{d:?}"))
                        .unwrap_or_else(|| "forever".into()),
                    settings
                        .limits
                        .max_bytes
                        .map(|n| format!(", at most {n} bytes"))
                        .unwrap_or_default()
                );
                Some(Arc::new(proxy))
            }
        };
        let debug_listener = match config.debug.addr {
            None => None,
            Some(addr) => Some(
                crate::debug::bind(addr)
                    .map_err(|source| StartError::DebugListen { addr, source })?,
            ),
        };
        let health = Arc::new(Health::new(config.health, &config.root_directory));
        let options = ServeOptions {
            engine: engine.clone(),
            settings: ApiSettings {
                delete_enabled: config.delete_enabled,
                host: config.host.clone(),
                relative_urls: config.relative_urls,
                upload_state: crate::api::upload_state::UploadStateCodec::new(&secret),
                upload_limits: config.uploads,
            },
            driver: config.driver,
            threads,
            drain_timeout: config.drain_timeout,
            conn_settings: config.conn_settings.clone(),
            http_limits: berth_http::Limits {
                head_bytes_max: config.head_bytes_max,
                headers_max: config.headers_max,
                target_bytes_max: config.target_bytes_max,
            },
            tls,
            auth,
            proxy: proxy.clone(),
        };
        Ok(Server {
            config,
            engine,
            proxy,
            health,
            debug_listener,
            options,
        })
    }

    /// The store.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The storage health verdict (probed once `run` starts).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The debug listener's bound address (`http.debug.addr`, with the
    /// port filled in when it was 0), if one is configured.
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.debug_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Starts the schedulers and the debug listener, serves on `http.addr`
    /// until SIGTERM/SIGINT has drained the event loops, then saves the
    /// pull-through cache's record and the index snapshot.
    pub fn run(self) -> Result<(), StartError> {
        let Server {
            config,
            engine,
            proxy,
            health,
            debug_listener,
            options,
        } = self;
        if let Some(interval) = config.gc_interval {
            schedulers::gc(
                engine.clone(),
                GcSchedule {
                    interval,
                    grace_period: config.gc_grace_period,
                    delete_untagged: config.gc_delete_untagged,
                },
            );
        }
        if let Some(proxy) = &proxy {
            schedulers::proxy_eviction(engine.clone(), proxy.clone());
        }
        schedulers::index_snapshots(engine.clone());
        if let Some(purging) = config.upload_purging {
            schedulers::upload_purging(engine.clone(), purging);
        }
        schedulers::health_probe(health.clone());
        if let Some(listener) = debug_listener {
            let addr = listener.local_addr().ok();
            let service = DebugService {
                engine: engine.clone(),
                proxy: proxy.clone(),
                health,
                prometheus_path: config
                    .debug
                    .prometheus_enabled
                    .then(|| config.debug.prometheus_path.clone()),
            };
            match crate::debug::spawn(listener, Arc::new(service)) {
                Ok(()) => {
                    if let Some(addr) = addr {
                        log::info!("debug listener on {addr} (/debug/health, /debug/metrics)");
                    }
                }
                Err(e) => log::error!("cannot start the debug listener: {e}"),
            }
        }
        runtime::serve(config.listen, options)?;
        if let Some(proxy) = proxy {
            if let Err(e) = proxy.cache.save() {
                log::warn!("proxy: cannot save the cache record: {e}");
            }
        }
        // Drained: save the segment index so the next start skips the scan.
        match engine.write_index_snapshot() {
            Ok(entries) => log::info!("index snapshot written ({entries} entries)"),
            Err(e) => {
                log::warn!("index snapshot not written ({e}); the next start scans the segments")
            }
        }
        Ok(())
    }
}

/// Opens the store and logs what recovery did.
fn open_store(root: &Path) -> Result<Engine, StartError> {
    let engine = Engine::open(root).map_err(|source| StartError::Store {
        root: root.to_owned(),
        source,
    })?;
    let report = engine.open_report();
    if report.torn_tail_bytes > 0 {
        log::warn!(
            "metadata log: dropped a torn tail of {} bytes (a write cut short by a crash)",
            report.torn_tail_bytes
        );
    }
    if report.unacknowledged_records_dropped > 0 {
        log::warn!(
            "metadata log: dropped {} records whose blob bytes a crash lost (never acknowledged)",
            report.unacknowledged_records_dropped
        );
    }
    log::info!(
        "store opened: {} metadata records, {} upload sessions resumed",
        report.records,
        report.uploads_resumed
    );
    Ok(engine)
}

/// The secret kept in `<root>/http-secret` (created with 32 random bytes,
/// mode 0600, on first use), so upload URLs stay valid across restarts.
fn generated_secret(root: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join("http-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut secret = vec![0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = root.join("http-secret.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn config(dir: &Path, extra: &[(&str, String)]) -> Config {
        let mut env = vec![
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
                dir.join("data").display().to_string(),
            ),
            ("REGISTRY_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Config::load(None, env).expect("a valid configuration")
    }

    #[test]
    fn a_missing_htpasswd_file_is_a_start_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-htpasswd");
        let config = config(
            dir.path(),
            &[
                ("REGISTRY_AUTH_HTPASSWD_REALM", "r".into()),
                ("REGISTRY_AUTH_HTPASSWD_PATH", missing.display().to_string()),
            ],
        );
        let error = Server::build(config).err().expect("the start fails");
        assert!(matches!(error, StartError::Htpasswd(_)), "{error:?}");
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("no-such-htpasswd"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(
            !dir.path().join("data").exists(),
            "credentials are checked before the store is created"
        );
    }

    #[test]
    fn a_store_held_by_another_server_is_a_start_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Server::build(config(dir.path(), &[])).expect("the first start");
        let error = Server::build(config(dir.path(), &[]))
            .err()
            .expect("the second start fails");
        assert!(matches!(error, StartError::Store { .. }), "{error:?}");
        assert_eq!(error.exit_code(), 1);
        assert!(
            error
                .to_string()
                .starts_with("cannot open the data directory "),
            "{error}"
        );
        drop(first);
    }

    #[test]
    fn a_busy_debug_address_is_a_start_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = busy.local_addr().expect("addr").to_string();
        let error = Server::build(config(dir.path(), &[("REGISTRY_HTTP_DEBUG_ADDR", addr)]))
            .err()
            .expect("the start fails");
        assert!(matches!(error, StartError::DebugListen { .. }), "{error:?}");
        assert!(error.to_string().contains("http.debug.addr"), "{error}");
        assert!(error.to_string().contains("in use"), "{error}");
    }

    #[test]
    fn a_built_server_has_its_store_secret_and_debug_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::build(config(
            dir.path(),
            &[("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0".into())],
        ))
        .expect("the start succeeds");
        let secret = std::fs::read(dir.path().join("data/http-secret")).expect("secret kept");
        assert_eq!(secret.len(), 32);
        let addr = server.debug_addr().expect("a debug listener");
        assert_ne!(addr.port(), 0);
        // Bound, not yet served: a connection is accepted by the kernel.
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /debug/health HTTP/1.1\r\n\r\n")
            .expect("send");
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        assert!(s.read(&mut buf).is_err(), "nothing answers before run()");
        assert_eq!(server.health().report().0, 200);
    }
}
