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
    /// With no CONFIG, berth reads $REGISTRY_CONFIGURATION_PATH, else its
    /// embedded default: listen on :5000 and keep data under
    /// /var/lib/registry, like registry:2. The container image runs
    /// `berth serve /etc/docker/registry/config.yml`. Any config key can
    /// be overridden with a REGISTRY_* variable naming its path, e.g.
    /// REGISTRY_HTTP_ADDR=127.0.0.1:5000,
    /// REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/srv/registry,
    /// REGISTRY_STORAGE_DELETE_ENABLED=true, REGISTRY_RUNTIME_DRIVER=poll
    /// (force the epoll fallback instead of io_uring),
    /// REGISTRY_PROXY_REMOTEURL=https://registry-1.docker.io (run as a
    /// pull-through cache).
    Serve {
        /// A registry:2-style config.yml (default: $REGISTRY_CONFIGURATION_PATH,
        /// else the embedded default).
        config: Option<PathBuf>,
    },
    /// Print an htpasswd line: `berth htpasswd -Bbn USER PASSWORD` (also
    /// runs as `htpasswd` when invoked under that name).
    #[command(disable_help_flag = true)]
    Htpasswd {
        /// Apache htpasswd flags and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Delete blobs no manifest references and compact storage (registry:2's
    /// command; run it with the server stopped, or configure the online GC
    /// with storage.gc.interval).
    GarbageCollect {
        /// Report what would be deleted; change nothing.
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Also delete manifests that no tag names (and what only they reference).
        #[arg(short = 'm', long)]
        delete_untagged: bool,
        /// A registry:2-style config.yml (default: $REGISTRY_CONFIGURATION_PATH,
        /// else the embedded default).
        config: Option<PathBuf>,
    },
    /// Verify every stored blob's checksum and digest; report damage with the
    /// repositories and tags it affects. Exits 1 if anything is damaged.
    Scrub {
        /// A registry:2-style config.yml.
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
    /// Print every configuration key berth reads as the README's Markdown
    /// table (key, REGISTRY_* variable, default, meaning; "(berth)" marks
    /// berth's own keys). `scripts/config-table` puts it into README.md.
    Keys,
}

fn main() -> ExitCode {
    // Invoked as `htpasswd` (the image links it), behave like Apache's
    // htpasswd for the registry:2 guide's `--entrypoint htpasswd ... -Bbn`.
    let mut args: Vec<String> = std::env::args().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if invoked_as == "htpasswd" {
        return htpasswd(&args[1..]);
    }
    if args.get(1).map(String::as_str) == Some("htpasswd") {
        args.remove(0);
        return htpasswd(&args[1..]);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Config {
            action: ConfigAction::Check { config },
        } => check_config(config),
        Command::Config {
            action: ConfigAction::Keys,
        } => {
            print!("{}", berth::config::keys::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Htpasswd { args } => htpasswd(&args),
        Command::GarbageCollect {
            dry_run,
            delete_untagged,
            config,
        } => garbage_collect(config, dry_run, delete_untagged),
        Command::Scrub { config } => scrub(config),
    }
}

/// A one-line progress bar on stderr, redrawn at most ten times a second
/// (only when stderr is a terminal; otherwise a line every 10%).
struct ProgressBar {
    label: &'static str,
    shown: Option<std::time::Instant>,
    last_tenth: u64,
    terminal: bool,
}

impl ProgressBar {
    fn new(label: &'static str) -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            label,
            shown: None,
            last_tenth: u64::MAX,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        let fraction = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        if self.terminal {
            if self
                .shown
                .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(100))
                && done < total
            {
                return;
            }
            self.shown = Some(std::time::Instant::now());
            let filled = (fraction * 30.0) as usize;
            eprint!(
                "\r{} [{}{}] {:5.1}% {} / {} MiB",
                self.label,
                "#".repeat(filled.min(30)),
                " ".repeat(30 - filled.min(30)),
                fraction * 100.0,
                done >> 20,
                total >> 20
            );
        } else {
            let tenth = (fraction * 10.0) as u64;
            if tenth != self.last_tenth {
                self.last_tenth = tenth;
                eprintln!(
                    "{}: {:.0}% ({} of {} MiB)",
                    self.label,
                    fraction * 100.0,
                    done >> 20,
                    total >> 20
                );
            }
        }
    }

    fn finish(&mut self) {
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }
}

/// Opens the store a maintenance command works on, or explains why not.
fn open_store(config_path: Option<PathBuf>) -> Result<(Config, berth_engine::Engine), ExitCode> {
    let config = Config::load(config_path.as_deref(), std::env::vars()).map_err(|e| {
        eprintln!("berth: {e}");
        ExitCode::from(2)
    })?;
    let engine = berth_engine::Engine::open(&config.root_directory).map_err(|e| {
        eprintln!(
            "berth: cannot open the data directory {}: {e}",
            config.root_directory.display()
        );
        if matches!(e, berth_engine::EngineError::Locked(_)) {
            eprintln!("berth: stop the server first, or use its online GC (storage.gc.interval)");
        }
        ExitCode::from(1)
    })?;
    Ok((config, engine))
}

fn garbage_collect(config_path: Option<PathBuf>, dry_run: bool, delete_untagged: bool) -> ExitCode {
    let (config, engine) = match open_store(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    eprintln!(
        "berth: garbage-collecting {}{}",
        config.root_directory.display(),
        if dry_run { " (dry run)" } else { "" }
    );
    let options = berth_engine::GcOptions {
        dry_run,
        delete_untagged,
        grace_period: config.gc_grace_period,
        ..Default::default()
    };
    match engine.garbage_collect(&options) {
        Ok(report) => {
            for m in &report.manifests_deleted {
                println!(
                    "{}manifest {}@{}",
                    if dry_run { "would delete " } else { "deleted " },
                    m.repo,
                    m.digest
                );
            }
            for b in &report.blobs_deleted {
                println!(
                    "{}blob {b}",
                    if dry_run { "would delete " } else { "deleted " }
                );
            }
            println!(
                "{} manifests, {} repository links, {} blobs ({} bytes) {}; {} links kept within the grace period; {} segments compacted, {} bytes reclaimed",
                report.manifests_deleted.len(),
                report.links_removed.len(),
                report.blobs_deleted.len(),
                report.bytes_deleted,
                if dry_run { "would be deleted" } else { "deleted" },
                report.links_kept_in_grace.len(),
                report.segments_compacted.len(),
                report.bytes_reclaimed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: garbage collection failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn scrub(config_path: Option<PathBuf>) -> ExitCode {
    let (config, engine) = match open_store(config_path) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    eprintln!("berth: scrubbing {}", config.root_directory.display());
    let mut bar = ProgressBar::new("scrub");
    let result = engine.scrub_with_progress(&mut |done, total| bar.show(done, total));
    bar.finish();
    match result {
        Ok(report) => {
            for problem in &report.problems {
                let digest = problem
                    .digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "(unreadable digest)".into());
                println!(
                    "DAMAGED {digest}: {:?} at {:?}{}",
                    problem.kind,
                    problem.location,
                    if problem.intact_copy {
                        " (an intact copy remains)"
                    } else {
                        ""
                    }
                );
                for r in &problem.references {
                    println!(
                        "  repository {}: tags [{}], manifests [{}]",
                        r.repo,
                        r.tags.join(", "),
                        r.manifests
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            println!(
                "checked {} segments, {} records, {} files, {} bytes: {} problems",
                report.segments_checked,
                report.records_checked,
                report.files_checked,
                report.bytes_checked,
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("berth: scrub failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes the index snapshot every ten minutes, so a restart after a crash
/// scans at most ten minutes of writes.
fn schedule_index_snapshots(engine: Arc<berth_engine::Engine>) {
    let spawned = std::thread::Builder::new()
        .name("berth-snapshot".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(600));
            if let Err(e) = engine.write_index_snapshot() {
                log::warn!("index snapshot failed: {e}");
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the index snapshot thread: {e}");
    }
}

/// Removes idle upload sessions every `interval` on its own thread.
fn schedule_upload_purging(
    engine: Arc<berth_engine::Engine>,
    purging: berth::config::UploadPurging,
) {
    let spawned = std::thread::Builder::new()
        .name("berth-upload-purge".into())
        .spawn(move || loop {
            std::thread::sleep(purging.interval);
            match engine.purge_uploads(purging.age, purging.dry_run) {
                Ok(purged) if purged.is_empty() => {}
                Ok(purged) => log::info!(
                    "upload purging: {} {} sessions idle longer than {:?}",
                    if purging.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    },
                    purged.len(),
                    purging.age
                ),
                Err(e) => log::error!("upload purging failed: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the upload purging thread: {e}");
    }
}

/// Evicts cached content past the proxy's limits every
/// `proxy.evictioninterval`, on its own thread.
fn schedule_proxy_eviction(engine: Arc<berth_engine::Engine>, proxy: Arc<berth::proxy::Proxy>) {
    let interval = proxy.settings().eviction_interval;
    let spawned = std::thread::Builder::new()
        .name("berth-proxy-evict".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            if let Err(e) = proxy.evict(&engine) {
                log::error!("proxy: eviction failed: {e}");
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the proxy eviction thread: {e}");
    }
}

/// Runs the online GC every `interval` on its own thread.
fn schedule_gc(
    engine: Arc<berth_engine::Engine>,
    interval: std::time::Duration,
    grace_period: std::time::Duration,
    delete_untagged: bool,
) {
    let spawned = std::thread::Builder::new().name("berth-gc".into()).spawn(move || loop {
        std::thread::sleep(interval);
        let options = berth_engine::GcOptions { delete_untagged, grace_period, ..Default::default() };
        match engine.garbage_collect(&options) {
            Ok(r) => log::info!(
                "online GC: {} blobs ({} bytes) deleted, {} segments compacted, {} bytes reclaimed",
                r.blobs_deleted.len(), r.bytes_deleted, r.segments_compacted.len(), r.bytes_reclaimed
            ),
            Err(e) => log::error!("online GC failed: {e}"),
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the online GC thread: {e}");
    }
}

/// `htpasswd -Bbn [-C COST] USER PASSWORD`, the subset of Apache's htpasswd
/// registry deployments use (see `berth::auth::htpasswd::cli`).
fn htpasswd(args: &[String]) -> ExitCode {
    use berth::auth::htpasswd::{cli, CliError, CLI_USAGE};
    match cli(args) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(CliError::Help) => {
            println!("{CLI_USAGE}");
            ExitCode::SUCCESS
        }
        Err(CliError::Usage(message)) => {
            eprintln!("htpasswd: {message}\n{CLI_USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check_config(config_path: Option<PathBuf>) -> ExitCode {
    match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => {
            let source = config_path
                .or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the embedded default".into());
            println!("# effective configuration: {source} with REGISTRY_* overrides");
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
            if let berth::config::AuthConfig::Htpasswd { realm, path } = &config.auth {
                if let Err(e) = berth::auth::htpasswd::Htpasswd::open(path, realm) {
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

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    berth::logging::init(&config.log_level, config.log_formatter, config.access_log);
    // Credentials are checked before the store is opened: a bad htpasswd
    // file or token key stops the start with one line naming it.
    let auth = match &config.auth {
        berth::config::AuthConfig::None => berth::auth::Auth::Anonymous,
        berth::config::AuthConfig::Token(settings) => {
            match berth::auth::token::TokenAuth::new(settings.clone()) {
                Ok(tokens) => berth::auth::Auth::Token(Arc::new(tokens)),
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        berth::config::AuthConfig::Htpasswd { realm, path } => {
            match berth::auth::htpasswd::Htpasswd::open(path, realm) {
                Ok(store) => berth::auth::Auth::Htpasswd(store),
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    match (
        &config_path,
        std::env::var_os("REGISTRY_CONFIGURATION_PATH"),
    ) {
        (Some(path), _) => log::info!(
            "configuration: {} with REGISTRY_* overrides",
            path.display()
        ),
        (None, Some(path)) => log::info!(
            "configuration: {} with REGISTRY_* overrides",
            PathBuf::from(path).display()
        ),
        (None, None) => log::info!("configuration: embedded default with REGISTRY_* overrides"),
    }
    for key in &config.unknown_keys {
        log::warn!("configuration key {key} is not used by berth; ignored");
    }
    let engine = match berth_engine::Engine::open(&config.root_directory) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!(
                "berth: cannot open the data directory {}: {e}",
                config.root_directory.display()
            );
            return ExitCode::from(1);
        }
    };
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
    let threads = if config.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
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
                eprintln!(
                    "berth: cannot create the generated http secret in {}: {e}",
                    config.root_directory.display()
                );
                return ExitCode::from(1);
            }
        },
    };
    let tls = match (&config.tls, &config.letsencrypt) {
        (Some(settings), _) => Some(berth::tls::server_config(settings).map_err(|e| e.to_string())),
        (None, Some(letsencrypt)) => {
            Some(berth::acme::start(letsencrypt.clone()).map_err(|e| e.to_string()))
        }
        (None, None) => None,
    };
    let tls = match tls.transpose() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = Arc::new(engine);
    if let Some(interval) = config.gc_interval {
        log::info!(
            "online GC every {interval:?} (grace period {:?})",
            config.gc_grace_period
        );
        schedule_gc(
            engine.clone(),
            interval,
            config.gc_grace_period,
            config.gc_delete_untagged,
        );
    }
    let proxy = match &config.proxy {
        None => None,
        Some(settings) => {
            match berth::proxy::Proxy::new(settings.clone(), &config.root_directory) {
                Ok(proxy) => {
                    let proxy = Arc::new(proxy);
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
                    schedule_proxy_eviction(engine.clone(), proxy.clone());
                    Some(proxy)
                }
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let proxy_at_exit = proxy.clone();
    let engine_at_exit = engine.clone();
    schedule_index_snapshots(engine.clone());
    if let Some(purging) = config.upload_purging {
        schedule_upload_purging(engine.clone(), purging);
    }
    let options = ServeOptions {
        engine,
        settings: ApiSettings {
            delete_enabled: config.delete_enabled,
            host: config.host.clone(),
            relative_urls: config.relative_urls,
            upload_state: berth::api::upload_state::UploadStateCodec::new(&secret),
            // The defaults until `http.limits.uploadsessions*` are read.
            upload_limits: berth_engine::UploadLimits::default(),
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
        proxy,
    };
    match runtime::serve(config.listen, options) {
        Ok(()) => {
            if let Some(proxy) = proxy_at_exit {
                if let Err(e) = proxy.cache.save() {
                    log::warn!("proxy: cannot save the cache record: {e}");
                }
            }
            // Drained: save the segment index so the next start skips the scan.
            match engine_at_exit.write_index_snapshot() {
                Ok(entries) => log::info!("index snapshot written ({entries} entries)"),
                Err(e) => log::warn!(
                    "index snapshot not written ({e}); the next start scans the segments"
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(1)
        }
    }
}
