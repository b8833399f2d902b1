//! What every API handler shares: the settings fixed at start, the
//! per-loop context (`Ctx`), and the small helpers that turn names and
//! digests into typed values, build `Location` URLs and run blocking engine
//! calls off the loop.

use std::sync::Arc;

use berth_engine::{Digest, Engine, RepositoryName};
use berth_http::Limits;

use super::upload_state;
use crate::exchange::Request;
use crate::oci_error::{ApiError, ErrorCode};

/// Settings the API needs, fixed at start.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Whether DELETE of manifests, tags and blobs is allowed
    /// (`storage.delete.enabled`).
    pub delete_enabled: bool,
    /// Public base URL for Location headers (`http.host`), e.g. `https://r.example.com`.
    pub host: Option<String>,
    /// Send Location headers as paths only (`http.relativeurls`).
    pub relative_urls: bool,
    /// Signs upload state in Location URLs (`http.secret`).
    pub upload_state: upload_state::UploadStateCodec,
    /// Caps on open upload sessions, overall and per client
    /// (`http.limits.uploadsessionsmax`, `http.limits.uploadsessionsperclientmax`).
    pub upload_limits: berth_engine::UploadLimits,
}

/// Everything a connection needs to answer requests: shared by all
/// connections of one event loop.
pub struct Ctx {
    /// The storage engine (shared by all event loops).
    pub engine: Arc<Engine>,
    /// API settings.
    pub settings: ApiSettings,
    /// HTTP parsing limits.
    pub http_limits: Limits,
    /// Who may use the API.
    pub auth: crate::auth::Auth,
    /// The pull-through cache, when `proxy.remoteurl` is set.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
}

/// Parses a repository name or answers NAME_INVALID.
pub(super) fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    name.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::NameInvalid,
            format!("invalid repository name {name:?}: {e}"),
        )
        .with_detail(serde_json::json!({"name": name}))
    })
}

/// Parses a digest or answers DIGEST_INVALID.
pub(super) fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            format!("invalid digest {text:?}: {e}"),
        )
        .with_detail(serde_json::json!({"digest": text}))
    })
}

/// The URL clients should use for `path`: absolute unless relative URLs are
/// configured or no host is known. The scheme and host come from
/// `http.host`, else X-Forwarded-Proto/X-Forwarded-Host, else Host.
pub(super) fn location(ctx: &Ctx, request: &Request<'_>, path: &str) -> String {
    if ctx.settings.relative_urls {
        return path.to_owned();
    }
    if let Some(host) = &ctx.settings.host {
        return format!("{}{path}", host.trim_end_matches('/'));
    }
    let headers = &request.head.headers;
    let first = |name: &str| {
        headers
            .get(name)
            .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
    };
    let host = first("x-forwarded-host")
        .filter(|h| !h.is_empty())
        .or_else(|| first("host"));
    let own_scheme = if request.tls { "https" } else { "http" };
    let scheme = first("x-forwarded-proto")
        .filter(|p| p == "https" || p == "http")
        .unwrap_or_else(|| own_scheme.into());
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', ' ', '@']) => {
            format!("{scheme}://{host}{path}")
        }
        _ => path.to_owned(),
    }
}

/// Runs a blocking engine call (one that fsyncs) off the event loop.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, berth_engine::EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    match compio::runtime::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(ErrorCode::Unknown, "storage task panicked")),
    }
}
