//! Logging: the process log and the access log, as text or JSON
//! (`log.formatter`), at `log.level`. One access-log line per request with
//! method, path, status, bytes sent, duration, client address and user.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// How log lines are written (`log.formatter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formatter {
    /// `2026-11-26T19:32:05Z INFO message`.
    Text,
    /// One JSON object per line: `{"time","level","msg",...}`.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);
static ACCESS_LOG: AtomicBool = AtomicBool::new(true);

/// Installs the global logger. `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, formatter: Formatter, access_log: bool) {
    JSON.store(formatter == Formatter::Json, Ordering::Relaxed);
    ACCESS_LOG.store(access_log, Ordering::Relaxed);
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format(move |out, record| {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        match formatter {
            Formatter::Text => writeln!(out, "{time} {:<5} {}", record.level(), record.args()),
            Formatter::Json if record.target() == "access" => writeln!(out, "{}", record.args()),
            Formatter::Json => {
                let line = serde_json::json!({
                    "time": time.to_string(),
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "msg": record.args().to_string(),
                });
                writeln!(out, "{line}")
            }
        }
    });
    let _ = builder.try_init();
}

/// One request, as the access log records it.
pub struct AccessRecord<'a> {
    /// Client address (the peer, or the client a trusted proxy names).
    pub client: &'a str,
    /// Authenticated user, if any.
    pub user: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// Request target (path and query).
    pub target: &'a str,
    /// Response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Time from complete head to response written.
    pub duration: std::time::Duration,
    /// How a blob body went out ("splice" or "copy"), if there was one.
    pub body_path: &'a str,
    /// The spec error code the response carried, if it was an error.
    pub error: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// Writes the record to the access log (target `access`, level info).
    pub fn emit(&self) {
        if !ACCESS_LOG.load(Ordering::Relaxed)
            || !log::log_enabled!(target: "access", log::Level::Info)
        {
            return;
        }
        let millis = self.duration.as_secs_f64() * 1000.0;
        if JSON.load(Ordering::Relaxed) {
            let mut line = serde_json::json!({
                "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "level": "info",
                "msg": "request",
                "remote_addr": self.client,
                "user": self.user,
                "method": self.method,
                "uri": self.target,
                "status": self.status,
                "bytes": self.bytes,
                "duration_ms": (millis * 1000.0).round() / 1000.0,
            });
            if !self.body_path.is_empty() {
                line["body_path"] = self.body_path.into();
            }
            if let Some(code) = self.error {
                line["error"] = code.into();
            }
            log::info!(target: "access", "{line}");
        } else {
            log::info!(
                target: "access",
                "{} {} {} {} {} {} {:.3}ms{}{}{}{}",
                self.client,
                self.user.unwrap_or("-"),
                self.method,
                self.target,
                self.status,
                self.bytes,
                millis,
                if self.body_path.is_empty() { "" } else { " via " },
                self.body_path,
                if self.error.is_some() { " error=" } else { "" },
                self.error.unwrap_or("")
            );
        }
    }
}
