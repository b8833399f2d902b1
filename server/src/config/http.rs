//! The `http` section (without `http.tls`): listen address, URLs, the
//! upload-state secret, drain timeout, trusted proxies, `http.limits` and
//! `http.debug`.

use std::net::SocketAddr;
use std::time::Duration;

/// Caps on open upload sessions (`http.limits.uploadsessionsmax`,
/// `.uploadsessionsperclientmax`): the engine's own type, which enforces them.
pub use berth_engine::UploadLimits;

use super::error::ConfigError;
use super::source::{required, Source};

/// `http.*` as read.
pub(super) struct HttpSection {
    pub listen: SocketAddr,
    pub host: Option<String>,
    pub relative_urls: bool,
    pub secret: Option<String>,
    pub drain_timeout: Duration,
    pub trusted_proxies: Vec<crate::conn::IpNet>,
    pub limits: HttpLimits,
    pub debug: DebugConfig,
}

/// `http.limits.*` as read.
pub(super) struct HttpLimits {
    pub head: berth_http::Limits,
    pub head_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_progress_timeout: Duration,
    pub connections_per_loop_max: usize,
    pub uploads: UploadLimits,
    pub discard_body_bytes_max: u64,
    pub descriptors_reserved: u64,
    pub body_rate: Option<BodyRate>,
}

/// The minimum request body rate (`http.limits.bodybytespersecondmin`,
/// `.bodyratewindowms`): a body averaging less over the window is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRate {
    /// Bytes per second, more than 0.
    pub bytes_per_second_min: u64,
    /// The window the average is taken over.
    pub window: Duration,
}

/// `http.debug.*`: where `/debug/health` and `/debug/metrics` are served
/// (never on the public port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugConfig {
    /// `http.debug.addr`: the debug listener's address; `None` = no listener.
    /// Never the public port.
    pub addr: Option<SocketAddr>,
    /// `http.debug.prometheus.enabled`: also serve the metrics at `prometheus_path`.
    pub prometheus_enabled: bool,
    /// `http.debug.prometheus.path` (default `/metrics`): starts with `/`,
    /// holds no `?` or space, and is not under `/debug/health`.
    pub prometheus_path: String,
}

pub(super) fn parse(src: &Source) -> Result<HttpSection, ConfigError> {
    let listen = required("http.addr", src.addr("http.addr")?)?;
    let mut trusted_proxies = Vec::new();
    for text in src.list("http.trustedproxies")? {
        trusted_proxies.push(text.parse().map_err(|_| {
            ConfigError::invalid(
                "http.trustedproxies",
                "IP addresses or networks such as 10.0.0.0/8",
                &text,
            )
        })?);
    }
    Ok(HttpSection {
        listen,
        host: src.text("http.host")?,
        relative_urls: src.flag("http.relativeurls")?,
        secret: src.text("http.secret")?,
        drain_timeout: required("http.draintimeout", src.duration("http.draintimeout")?)?,
        trusted_proxies,
        limits: parse_limits(src)?,
        debug: parse_debug(src, listen)?,
    })
}

fn parse_limits(src: &Source) -> Result<HttpLimits, ConfigError> {
    let millis = |key: &'static str| required(key, src.duration(key)?);
    let per_client = "http.limits.uploadsessionsperclientmax";
    let mut uploads = UploadLimits {
        sessions_max: src.count("http.limits.uploadsessionsmax")?,
        sessions_per_client_max: src.count(per_client)?,
    };
    if src.raw(per_client).is_none() {
        // Only the total was lowered: the default per-client cap follows it.
        uploads.sessions_per_client_max = uploads.sessions_per_client_max.min(uploads.sessions_max);
    }
    if uploads.sessions_per_client_max > uploads.sessions_max {
        return Err(ConfigError::invalid(
            "http.limits.uploadsessionsperclientmax",
            "at most http.limits.uploadsessionsmax",
            uploads.sessions_per_client_max,
        ));
    }
    let bytes_per_second_min = src.int("http.limits.bodybytespersecondmin")?;
    let window = millis("http.limits.bodyratewindowms")?;
    Ok(HttpLimits {
        head: berth_http::Limits {
            head_bytes_max: src.count("http.limits.headbytesmax")?,
            headers_max: src.count("http.limits.headersmax")?,
            target_bytes_max: src.count("http.limits.targetbytesmax")?,
        },
        head_read_timeout: millis("http.limits.headreadtimeoutms")?,
        idle_timeout: millis("http.limits.idletimeoutms")?,
        body_progress_timeout: millis("http.limits.bodyprogresstimeoutms")?,
        connections_per_loop_max: src.count("http.limits.connectionsperloopmax")?,
        uploads,
        discard_body_bytes_max: src.int("http.limits.discardbodybytesmax")?,
        descriptors_reserved: src.int("http.limits.descriptorsreserved")?,
        body_rate: (bytes_per_second_min > 0).then_some(BodyRate {
            bytes_per_second_min,
            window,
        }),
    })
}

fn parse_debug(src: &Source, listen: SocketAddr) -> Result<DebugConfig, ConfigError> {
    let addr = src.addr("http.debug.addr")?;
    let clashes = |a: SocketAddr| {
        a.port() == listen.port()
            && a.port() != 0
            && (a.ip() == listen.ip() || a.ip().is_unspecified() || listen.ip().is_unspecified())
    };
    if addr.is_some_and(clashes) {
        return Err(ConfigError::invalid(
            "http.debug.addr",
            "another port than http.addr (/debug/* is never served on the public port)",
            addr.map(|a| a.to_string()).unwrap_or_default(),
        ));
    }
    let path = src.text("http.debug.prometheus.path")?.unwrap_or_default();
    if !path.starts_with('/') || path.contains(['?', ' ']) || path.starts_with("/debug/health") {
        return Err(ConfigError::invalid(
            "http.debug.prometheus.path",
            "a path starting with / (no ? or space, not /debug/health)",
            path,
        ));
    }
    Ok(DebugConfig {
        addr,
        prometheus_enabled: src.flag("http.debug.prometheus.enabled")?,
        prometheus_path: path,
    })
}
