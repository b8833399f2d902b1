//! `berth`: the command-line entry point.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berth::api::ApiSettings;
use berth::config::Config;
use berth::runtime::{self, ServeOptions};
use clap::{Parser, Subcommand};

/// berth: a fast, crash-safe container image registry, drop-in compatible
/// with registry:2 (Docker Registry HTTP API v2 / OCI Distribution v1.1).
#[derive(Parser)]
#[command(name = "berth", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    ///
    /// With no CONFIG, berth uses its embedded default: listen on :5000 and
    /// keep data under /var/lib/registry, like registry:2. Any config key can
    /// be overridden with a REGISTRY_* variable naming its path, e.g.
    /// REGISTRY_HTTP_ADDR=127.0.0.1:5000,
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/srv/registry,
    /// REGISTRY_STORAGE_DELETE_ENABLED=true, REGISTRY_RUNTIME_DRIVER=poll
    /// (force the epoll fallback instead of io_uring).
    Serve {
        /// A registry:2-style config.yml (default: $REGISTRY_CONFIGURATION_PATH,
        /// else the embedded default).
        config: Option<PathBuf>,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a configuration (file, REGISTRY_* variables and defaults
    /// combined, as `serve` would) and print the effective settings with
    /// secrets masked. Exits 2 with a message naming the key if invalid.
    Check {
        /// A registry:2-style config.yml (default: $REGISTRY_CONFIGURATION_PATH,
        /// else the embedded default).
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Config { action: ConfigAction::Check { config } } => check_config(config),
    }
}

fn check_config(config_path: Option<PathBuf>) -> ExitCode {
    match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => {
            print!("{}", config.effective());
            for key in &config.unknown_keys {
                eprintln!("berth: warning: configuration key {key} is not used by berth; ignored");
            }
            if let Some(tls) = &config.tls {
                if let Err(e) = berth::tls::server_config(tls) {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(2)
        }
    }
}

/// The secret kept in `<root>/http-secret` (created with 32 random bytes,
/// mode 0600, on first use), so upload URLs stay valid across restarts.
fn generated_secret(root: &std::path::Path) -> std::io::Result<Vec<u8>> {
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
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&secret)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret)
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    berth::logging::init(&config.log_level, config.log_formatter, config.access_log);
    for key in &config.unknown_keys {
        log::warn!("configuration key {key} is not used by berth; ignored");
    }
    let engine = match berth_engine::Engine::open(&config.root_directory) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("berth: cannot open the data directory {}: {e}", config.root_directory.display());
            return ExitCode::from(1);
        }
    };
    let report = engine.open_report();
    if report.torn_tail_bytes > 0 {
        log::warn!("metadata log: dropped a torn tail of {} bytes (a write cut short by a crash)", report.torn_tail_bytes);
    }
    log::info!("store opened: {} metadata records, {} upload sessions resumed", report.records, report.uploads_resumed);
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        config.threads
    };
    let secret = match &config.http_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => match generated_secret(&config.root_directory) {
            Ok(secret) => {
                log::warn!(
                    "No HTTP secret provided (http.secret): using one generated and kept in the data directory. \
                     Behind a load balancer, configure the same http.secret on every node or uploads will fail."
                );
                secret
            }
            Err(e) => {
                eprintln!("berth: cannot create the generated http secret in {}: {e}", config.root_directory.display());
                return ExitCode::from(1);
            }
        },
    };
    let tls = match &config.tls {
        None => None,
        Some(settings) => match berth::tls::server_config(settings) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let options = ServeOptions {
        engine: Arc::new(engine),
        settings: ApiSettings {
            delete_enabled: config.delete_enabled,
            host: config.host.clone(),
            relative_urls: config.relative_urls,
            upload_state: berth::api::upload_state::UploadStateCodec::new(&secret),
        },
        driver: config.driver,
        threads,
        drain_timeout: config.drain_timeout,
        conn_settings: config.conn_settings.clone(),
        http_limits: berth_http::Limits { head_bytes_max: config.head_bytes_max, ..Default::default() },
        tls,
    };
    match runtime::serve(config.listen, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(1)
        }
    }
}
