//! The `proxy` section: run as a pull-through cache of `proxy.remoteurl`.

use std::path::PathBuf;

use super::error::ConfigError;
use super::source::{required, Source};

/// `None` unless `proxy.remoteurl` is set.
pub(super) fn parse(src: &Source) -> Result<Option<crate::proxy::ProxySettings>, ConfigError> {
    let Some(remote_url) = src
        .text("proxy.remoteurl")?
        .filter(|u| !u.trim().is_empty())
    else {
        return Ok(None);
    };
    let duration = |key: &'static str| required(key, src.duration(key)?);
    let username = src.text("proxy.username")?;
    let password = src.text("proxy.password")?.unwrap_or_default();
    let max_age = duration("proxy.ttl")?;
    let max_bytes = Some(src.int("proxy.maxsize")?).filter(|n| *n > 0);
    let eviction_interval = src.positive_duration("proxy.evictioninterval")?;
    let settings = crate::proxy::ProxySettings {
        upstream: crate::proxy::upstream::UpstreamSettings {
            remote_url: remote_url.trim().to_owned(),
            credentials: username.map(|u| (u, password)),
            remote_ca: src.text("proxy.remoteca")?.map(PathBuf::from),
        },
        tag_ttl: duration("proxy.tagttl")?,
        limits: crate::proxy::cache::EvictionLimits {
            max_age: Some(max_age).filter(|d| !d.is_zero()),
            max_bytes,
        },
        eviction_interval,
        local_prefix: src
            .text("proxy.localprefix")?
            .map(|p| p.trim().trim_matches('/').to_owned())
            .filter(|p| !p.is_empty()),
    };
    crate::proxy::upstream::Upstream::new(&settings.upstream).map_err(|message| {
        ConfigError::invalid("proxy.remoteurl", "a usable upstream registry URL", message)
    })?;
    Ok(Some(settings))
}
