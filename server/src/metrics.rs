//! The registry's metrics in the Prometheus text format: one renderer, called
//! by the debug listener (`/debug/metrics` and the Prometheus path). Reads
//! counters and gauges kept elsewhere; owns none.

use std::sync::atomic::Ordering;

use berth_engine::Engine;

use crate::health::Health;
use crate::proxy::Proxy;

/// Every series: blob bytes sent by splice or copy, upload bytes piped and
/// written with direct I/O, manifest cache bytes, the pull-through cache's
/// counters (when it runs) and the storage health probe's counters.
pub fn render(engine: &Engine, proxy: Option<&Proxy>, health: Option<&Health>) -> String {
    let mut text = String::new();
    let uploads = berth_engine::upload_counters();
    for (name, help, value) in [
        (
            "berth_blob_bytes_spliced_total",
            "blob body bytes sent by splice (zero-copy)",
            crate::conn::BLOB_BYTES_SPLICED.load(Ordering::Relaxed),
        ),
        (
            "berth_blob_bytes_copied_total",
            "blob body bytes sent by read and write",
            crate::conn::BLOB_BYTES_COPIED.load(Ordering::Relaxed),
        ),
        (
            "berth_upload_bytes_piped_total",
            "upload body bytes received, hashed and written in parallel (large bodies)",
            uploads.bytes_piped,
        ),
        (
            "berth_upload_bytes_direct_total",
            "upload body bytes written to disk with direct I/O (no page-cache copy)",
            uploads.bytes_direct,
        ),
        (
            "berth_auth_bcrypt_verifications_total",
            "htpasswd bcrypt verifications run (cached and refused logins run none)",
            crate::auth::htpasswd::BCRYPT_VERIFICATIONS.load(Ordering::Relaxed),
        ),
        (
            "berth_auth_logins_refused_total",
            "htpasswd logins refused (429) past the failed-login limit",
            crate::auth::failures::LOGINS_REFUSED.load(Ordering::Relaxed),
        ),
    ] {
        crate::proxy::write_counter(&mut text, name, help, value);
    }
    let cached = engine.manifest_cache_bytes();
    text.push_str(&format!(
        "# HELP berth_manifest_cache_bytes manifest bytes held in memory for serving\n\
         # TYPE berth_manifest_cache_bytes gauge\nberth_manifest_cache_bytes {cached}\n"
    ));
    if let Some(proxy) = proxy {
        text.push_str(&proxy.metrics.render());
    }
    if let Some(health) = health {
        text.push_str(&health.render_metrics());
    }
    text
}
