//! The offline maintenance commands behind `berth garbage-collect`, `berth
//! scrub` and `berth config check`: open the store (or check the
//! configuration), run, and write the report the CLI prints. Progress and
//! start lines go to stderr; reports to the writer given.

use std::io::Write;

use berth_engine::{Engine, EngineError};

use crate::config::Config;
use crate::server::StartError;

/// Why a maintenance command failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The data directory cannot be opened (or another process holds it).
    #[error("cannot open the data directory {root}: {source}")]
    Store {
        /// `storage.filesystem.rootdirectory`.
        root: std::path::PathBuf,
        /// Why.
        source: EngineError,
    },
    /// The collection failed part way.
    #[error("garbage collection failed: {0}")]
    Gc(EngineError),
    /// The scrub could not run to the end.
    #[error("scrub failed: {0}")]
    Scrub(EngineError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl MaintenanceError {
    /// A second line telling the operator what to do, when there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            MaintenanceError::Store {
                source: EngineError::Locked(_),
                ..
            } => Some("stop the server first, or use its online GC (storage.gc.interval)"),
            _ => None,
        }
    }
}

/// A one-line progress bar on stderr, redrawn at most ten times a second
/// (only when stderr is a terminal; otherwise a line every 10%).
pub struct ProgressBar {
    label: &'static str,
    shown: Option<std::time::Instant>,
    last_tenth: u64,
    terminal: bool,
}

impl ProgressBar {
    /// A bar labelled `label`.
    pub fn new(label: &'static str) -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            label,
            shown: None,
            last_tenth: u64::MAX,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `done` of `total` bytes.
    pub fn show(&mut self, done: u64, total: u64) {
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

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }
}

/// Opens the store a maintenance command works on.
pub fn open_store(config: &Config) -> Result<Engine, MaintenanceError> {
    Engine::open(&config.root_directory).map_err(|source| MaintenanceError::Store {
        root: config.root_directory.clone(),
        source,
    })
}

/// `berth garbage-collect`: deletes (or with `dry_run` lists) what no
/// manifest references and compacts, writing one line per deletion and a
/// summary to `out`.
pub fn garbage_collect(
    config: &Config,
    dry_run: bool,
    delete_untagged: bool,
    out: &mut dyn Write,
) -> Result<(), MaintenanceError> {
    let engine = open_store(config)?;
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
    let report = engine
        .garbage_collect(&options)
        .map_err(MaintenanceError::Gc)?;
    let verb = if dry_run { "would delete " } else { "deleted " };
    for m in &report.manifests_deleted {
        writeln!(out, "{verb}manifest {}@{}", m.repo, m.digest)?;
    }
    for b in &report.blobs_deleted {
        writeln!(out, "{verb}blob {b}")?;
    }
    writeln!(
        out,
        "{} manifests, {} repository links, {} blobs ({} bytes) {}; {} links kept within the grace period; {} segments compacted, {} bytes reclaimed",
        report.manifests_deleted.len(),
        report.links_removed.len(),
        report.blobs_deleted.len(),
        report.bytes_deleted,
        if dry_run { "would be deleted" } else { "deleted" },
        report.links_kept_in_grace.len(),
        report.segments_compacted.len(),
        report.bytes_reclaimed
    )?;
    Ok(())
}

/// `berth scrub`: verifies every stored record and file, writing each
/// problem with the repositories and tags it affects, then a summary, to
/// `out`. `Ok(true)` when nothing is damaged.
pub fn scrub(config: &Config, out: &mut dyn Write) -> Result<bool, MaintenanceError> {
    let engine = open_store(config)?;
    eprintln!("berth: scrubbing {}", config.root_directory.display());
    let mut bar = ProgressBar::new("scrub");
    let result = engine.scrub_with_progress(&mut |done, total| bar.show(done, total));
    bar.finish();
    let report = result.map_err(MaintenanceError::Scrub)?;
    for problem in &report.problems {
        let digest = problem
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "(unreadable digest)".into());
        writeln!(
            out,
            "DAMAGED {digest}: {:?} at {:?}{}",
            problem.kind,
            problem.location,
            if problem.intact_copy {
                " (an intact copy remains)"
            } else {
                ""
            }
        )?;
        for r in &problem.references {
            writeln!(
                out,
                "  repository {}: tags [{}], manifests [{}]",
                r.repo,
                r.tags.join(", "),
                r.manifests
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }
    writeln!(
        out,
        "checked {} segments, {} records, {} files, {} bytes: {} problems",
        report.segments_checked,
        report.records_checked,
        report.files_checked,
        report.bytes_checked,
        report.problems.len()
    )?;
    Ok(report.problems.is_empty())
}

/// `berth config check`: writes the effective settings (secrets masked)
/// from `source` to `out`, warns on stderr about unused keys, and checks
/// that the TLS files and the htpasswd file can be used.
pub fn check_config(config: &Config, source: &str, out: &mut dyn Write) -> Result<(), StartError> {
    // A failed write to stdout (a closed pipe) is not a configuration error.
    let _ = writeln!(
        out,
        "# effective configuration: {source} with REGISTRY_* overrides"
    );
    let _ = write!(out, "{}", config.effective());
    let _ = out.flush();
    for key in &config.unknown_keys {
        eprintln!("berth: warning: configuration key {key} is not used by berth; ignored");
    }
    if let Some(tls) = &config.tls {
        crate::tls::server_config(tls)?;
    }
    if let crate::config::AuthConfig::Htpasswd { realm, path } = &config.auth {
        crate::auth::htpasswd::Htpasswd::open(path, realm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &std::path::Path) -> Config {
        Config::load(
            None,
            [(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
                root.display().to_string(),
            )],
        )
        .expect("a valid configuration")
    }

    #[test]
    fn gc_and_scrub_of_an_empty_store_report_nothing_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path());
        let mut out = Vec::new();
        garbage_collect(&config, true, false, &mut out).expect("gc runs");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("0 manifests, 0 repository links, 0 blobs (0 bytes) would be deleted"),
            "{text}"
        );
        let mut out = Vec::new();
        assert!(scrub(&config, &mut out).expect("scrub runs"), "clean");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with(": 0 problems\n"), "{text}");
    }

    #[test]
    fn a_store_in_use_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path());
        let _held = open_store(&config).expect("first open");
        let error = garbage_collect(&config, false, false, &mut Vec::new()).expect_err("refused");
        assert!(matches!(error, MaintenanceError::Store { .. }), "{error:?}");
        assert!(error
            .hint()
            .is_some_and(|h| h.contains("storage.gc.interval")));
    }

    #[test]
    fn config_check_names_a_missing_htpasswd_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing-htpasswd");
        let config = Config::load(
            None,
            [
                ("REGISTRY_AUTH_HTPASSWD_REALM".to_owned(), "r".to_owned()),
                (
                    "REGISTRY_AUTH_HTPASSWD_PATH".to_owned(),
                    missing.display().to_string(),
                ),
            ],
        )
        .expect("a valid configuration");
        let mut out = Vec::new();
        let error = check_config(&config, "test", &mut out).expect_err("refused");
        assert!(error.to_string().contains("missing-htpasswd"), "{error}");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("# effective configuration: test with"),
            "{text}"
        );
        assert!(text.contains("auth.htpasswd.realm: r"), "{text}");
    }
}
