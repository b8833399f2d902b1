//! `berth`: the command-line entry point. Parses the CLI and calls the
//! library: `serve` builds and runs a [`berth::server::Server`]; the
//! maintenance commands (`garbage-collect`, `scrub`, `config check`,
//! `htpasswd`) open the store or check the configuration and print.

use std::path::PathBuf;
use std::process::ExitCode;

use berth::config::Config;
use berth::maintenance;
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
    /// pull-through cache). Health and metrics are served only on the
    /// debug listener (REGISTRY_HTTP_DEBUG_ADDR=127.0.0.1:5001: /debug/health,
    /// /debug/metrics), never on the API port. `berth config keys` lists
    /// every key.
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

/// Loads the configuration as `serve` would, or says why not (exit 2).
fn load_config(config_path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(config_path, std::env::vars()).map_err(|e| {
        eprintln!("berth: {e}");
        ExitCode::from(2)
    })
}

/// Prints a maintenance command's failure (and its hint); exit 1.
fn maintenance_failed(e: &maintenance::MaintenanceError) -> ExitCode {
    eprintln!("berth: {e}");
    if let Some(hint) = e.hint() {
        eprintln!("berth: {hint}");
    }
    ExitCode::from(1)
}

fn garbage_collect(config_path: Option<PathBuf>, dry_run: bool, delete_untagged: bool) -> ExitCode {
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match maintenance::garbage_collect(&config, dry_run, delete_untagged, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => maintenance_failed(&e),
    }
}

fn scrub(config_path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match maintenance::scrub(&config, &mut std::io::stdout()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => maintenance_failed(&e),
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
    let config = match load_config(config_path.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let source = config_path
        .or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the embedded default".into());
    match maintenance::check_config(&config, &source, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
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
