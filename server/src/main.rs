//! `berth`: the command-line entry point. Parses the CLI and calls the
//! library: `serve` builds and runs a [`berth::server::Server`]; the
//! maintenance commands (`garbage-collect`, `scrub`, `config check`,
//! `htpasswd`) open the store or check the configuration and print.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::config::Config;
use berth::server::Server;
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

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth: {e}");
            return ExitCode::from(2);
        }
    };
    berth::logging::init(&config.log_level, config.log_formatter, config.access_log);
    let source = config_path
        .or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded default".into());
    // Credentials are checked first: a bad htpasswd file or token key stops
    // the start with one line naming it, before anything else is logged.
    let server = Server::build(config);
    if server.is_ok() {
        log::info!("configuration: {source} with REGISTRY_* overrides");
    }
    match server.and_then(Server::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
