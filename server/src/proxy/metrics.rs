//! The pull-through cache's counters (hits, misses, coalesced requests,
//! upstream traffic, errors, stale answers, evictions) and their Prometheus
//! text.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the cache's work, exported at `/debug/metrics`.
#[derive(Default)]
pub struct ProxyMetrics {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) upstream_requests: AtomicU64,
    pub(super) upstream_bytes: AtomicU64,
    pub(super) upstream_errors: AtomicU64,
    pub(super) stale_served: AtomicU64,
    pub(super) evicted_items: AtomicU64,
    pub(super) evicted_bytes: AtomicU64,
}

impl ProxyMetrics {
    /// A request served from the cache.
    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    /// A request that needed upstream.
    pub fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    /// A request that joined a fetch already running.
    pub fn count_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }
    /// A request sent upstream.
    pub fn count_upstream_request(&self) {
        self.upstream_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Body bytes received from upstream.
    pub fn add_upstream_bytes(&self, n: u64) {
        self.upstream_bytes.fetch_add(n, Ordering::Relaxed);
    }
    /// A failed upstream fetch.
    pub fn count_upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// A stale tag served because upstream was down.
    pub fn count_stale(&self) {
        self.stale_served.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &AtomicU64); 9] = [
            (
                "berth_proxy_hits_total",
                "requests served from the cache",
                &self.hits,
            ),
            (
                "berth_proxy_misses_total",
                "requests that needed upstream",
                &self.misses,
            ),
            (
                "berth_proxy_coalesced_total",
                "blob requests that joined an upstream fetch already running",
                &self.coalesced,
            ),
            (
                "berth_proxy_upstream_requests_total",
                "requests sent upstream",
                &self.upstream_requests,
            ),
            (
                "berth_proxy_upstream_bytes_total",
                "blob bytes received from upstream",
                &self.upstream_bytes,
            ),
            (
                "berth_proxy_upstream_errors_total",
                "upstream fetches that failed",
                &self.upstream_errors,
            ),
            (
                "berth_proxy_stale_served_total",
                "cached tags served stale while upstream was down",
                &self.stale_served,
            ),
            (
                "berth_proxy_evicted_items_total",
                "blobs and manifests evicted",
                &self.evicted_items,
            ),
            (
                "berth_proxy_evicted_bytes_total",
                "bytes evicted",
                &self.evicted_bytes,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            write_counter(&mut out, name, help, value.load(Ordering::Relaxed));
        }
        out
    }
}

/// Appends one counter in the Prometheus text format.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    ));
}
