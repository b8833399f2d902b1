//! The pull-through cache (`proxy.remoteurl`): berth as a mirror of an
//! upstream registry for CI fleets.
//!
//! - Blobs and manifests by digest are immutable: fetched once, kept until
//!   evicted by age (`proxy.ttl`, counted from the last pull) or size
//!   (`proxy.maxsize`, least recently pulled first), never while pulled.
//! - A missing blob is fetched by one upstream request however many
//!   clients ask at once, and streamed to all of them as it lands
//!   ([`fetch`]).
//! - Tags are trusted for `proxy.tagttl`, then revalidated with a HEAD
//!   upstream; when upstream is down a cached tag is served stale (with a
//!   `Warning` header and a log line).
//!
//! This module is the cache's machinery and talks to upstream (blocking
//! calls: run them off the event loops); `api::proxied` maps requests onto
//! it.

pub mod cache;
pub mod fetch;
mod metrics;
pub mod upstream;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_BYTES_MAX, OCI_INDEX, OCI_MANIFEST,
};
use berth_engine::{Digest, Engine, Reference, RepositoryName, StoredManifest};

use cache::{Cache, EvictionLimits};
use fetch::{FetchFailure, Inflight};
pub use metrics::{write_counter, ProxyMetrics};
use upstream::{Upstream, UpstreamError, UpstreamSettings};

/// Manifest types asked of upstream, most specific first.
pub const MANIFEST_ACCEPT: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The `proxy` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// `proxy.remoteurl`, `proxy.username`, `proxy.password`, `proxy.remoteca`.
    pub upstream: UpstreamSettings,
    /// `proxy.tagttl` (berth): how long a tag is trusted before revalidation.
    pub tag_ttl: Duration,
    /// `proxy.ttl` (age since last pull) and `proxy.maxsize`.
    pub limits: EvictionLimits,
    /// `proxy.evictioninterval` (berth): how often eviction runs.
    pub eviction_interval: Duration,
    /// `proxy.localprefix` (berth): repositories under this prefix are
    /// local (pushable, never proxied). `None`: every push is refused.
    pub local_prefix: Option<String>,
}

/// The pull-through cache.
pub struct Proxy {
    settings: ProxySettings,
    upstream: Arc<Upstream>,
    /// Blob fetches in flight.
    pub inflight: Arc<Inflight>,
    /// What is cached and when it was last pulled.
    pub cache: Arc<Cache>,
    /// When each (repository, tag) was last confirmed upstream.
    fresh_tags: Mutex<HashMap<(String, String), Instant>>,
    /// One upstream manifest fetch per (repository, reference) at a time.
    manifest_flights: Mutex<HashMap<String, Arc<futures_util::lock::Mutex<()>>>>,
    /// Counters.
    pub metrics: Arc<ProxyMetrics>,
}

impl Proxy {
    /// Sets up the cache over the data directory `data_dir`. Fails with a
    /// message naming the setting when the upstream URL or CA is unusable.
    pub fn new(settings: ProxySettings, data_dir: &std::path::Path) -> Result<Proxy, String> {
        let upstream = Arc::new(Upstream::new(&settings.upstream)?);
        Ok(Proxy {
            settings,
            upstream,
            inflight: Arc::new(Inflight::default()),
            cache: Arc::new(Cache::load(data_dir)),
            fresh_tags: Mutex::new(HashMap::new()),
            manifest_flights: Mutex::new(HashMap::new()),
            metrics: Arc::new(ProxyMetrics::default()),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The upstream client.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Whether `repo` is local (under `proxy.localprefix`): pushed to
    /// directly, never fetched from upstream.
    pub fn is_local(&self, repo: &str) -> bool {
        self.settings.local_prefix.as_deref().is_some_and(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            repo == prefix
                || repo
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether the tag was confirmed upstream within `proxy.tagttl`.
    pub fn tag_is_fresh(&self, repo: &RepositoryName, tag: &str) -> bool {
        let fresh = self.fresh_tags.lock().unwrap_or_else(|p| p.into_inner());
        fresh
            .get(&(repo.to_string(), tag.to_owned()))
            .is_some_and(|at| at.elapsed() < self.settings.tag_ttl)
    }

    /// Records that upstream confirmed the tag now.
    pub fn mark_tag_fresh(&self, repo: &RepositoryName, tag: &str) {
        self.fresh_tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((repo.to_string(), tag.to_owned()), Instant::now());
    }

    /// The lock serialising upstream fetches of one manifest reference.
    pub fn manifest_flight(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Arc<futures_util::lock::Mutex<()>> {
        let mut flights = self
            .manifest_flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if flights.len() > 4096 {
            flights.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        flights
            .entry(format!("{repo}:{reference}"))
            .or_default()
            .clone()
    }

    /// HEAD of a manifest upstream: the digest it names (blocking).
    pub fn head_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Digest>, UpstreamError> {
        self.metrics.count_upstream_request();
        let response = self.upstream.request(
            "HEAD",
            repo.as_str(),
            &format!("manifests/{reference}"),
            MANIFEST_ACCEPT,
        )?;
        Ok(response
            .header("docker-content-digest")
            .and_then(|d| d.trim().parse().ok()))
    }

    /// Fetches a manifest from upstream, verifies it and stores it in the
    /// cache under `reference` (blocking).
    pub fn fetch_manifest(
        &self,
        engine: &Engine,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<StoredManifest, FetchFailure> {
        self.metrics.count_upstream_request();
        let response = self.upstream.request(
            "GET",
            repo.as_str(),
            &format!("manifests/{reference}"),
            MANIFEST_ACCEPT,
        )?;
        let content_type = response
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned());
        let announced: Option<Digest> = response
            .header("docker-content-digest")
            .and_then(|d| d.trim().parse().ok());
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MANIFEST_BYTES_MAX as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                FetchFailure::Outage(format!(
                    "upstream stopped sending manifest {reference}: {e}"
                ))
            })?;
        if body.len() > MANIFEST_BYTES_MAX {
            return Err(FetchFailure::Invalid(format!(
                "upstream's manifest {reference} is larger than {MANIFEST_BYTES_MAX} bytes"
            )));
        }
        self.metrics.add_upstream_bytes(body.len() as u64);
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => announced,
        };
        if let Some(expected) = expected {
            let actual = Digest::of(expected.algorithm(), &body);
            if actual != expected {
                return Err(FetchFailure::Invalid(format!(
                    "upstream sent manifest bytes whose digest is {actual}, not {expected}"
                )));
            }
        }
        let stored = engine
            .cache_manifest(repo, reference, content_type.as_deref(), &body)
            .map_err(|e| match e {
                berth_engine::EngineError::ManifestInvalid(e) => FetchFailure::Invalid(format!(
                    "upstream sent an invalid manifest {reference}: {e}"
                )),
                other => FetchFailure::Storage(other.to_string()),
            })?;
        self.cache
            .with(|c| c.touch(&stored.digest, body.len() as u64, cache::unix_now()));
        if let Reference::Tag(tag) = reference {
            self.mark_tag_fresh(repo, tag.as_str());
        }
        Ok(stored)
    }

    /// HEAD of a blob upstream: its length (blocking).
    pub fn head_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, UpstreamError> {
        self.metrics.count_upstream_request();
        let response =
            self.upstream
                .request("HEAD", repo.as_str(), &format!("blobs/{digest}"), &[])?;
        Ok(response
            .header("content-length")
            .and_then(|v| v.trim().parse().ok()))
    }

    /// The upstream's tag list for `repo`, passed through with its `Link`
    /// header (blocking).
    pub fn tags_list(
        &self,
        repo: &RepositoryName,
        query: &str,
    ) -> Result<(Vec<u8>, Option<String>), UpstreamError> {
        self.metrics.count_upstream_request();
        let tail = if query.is_empty() {
            "tags/list".to_owned()
        } else {
            format!("tags/list?{query}")
        };
        let response = self.upstream.request("GET", repo.as_str(), &tail, &[])?;
        let link = response.header("link").map(str::to_owned);
        let url = response.get_url().to_owned();
        let mut body = Vec::new();
        response
            .into_reader()
            .take(16 << 20)
            .read_to_end(&mut body)
            .map_err(|e| UpstreamError::Unreachable {
                url,
                reason: e.to_string(),
            })?;
        Ok((body, link))
    }

    /// Evicts what the limits say must go (blocking): removes it from the
    /// store and the record, then saves the record. Returns what went.
    pub fn evict(&self, engine: &Engine) -> berth_engine::Result<berth_engine::EvictReport> {
        let now = cache::unix_now();
        // Records of content no longer stored (a failed fetch) go; the
        // store is asked outside the record's lock (it may stat files).
        let recorded = self.cache.with(|c| c.digests());
        let gone: Vec<Digest> = recorded
            .into_iter()
            .filter(|d| !engine.blob_stored(d))
            .collect();
        self.cache.with(|c| c.remove_unpinned(&gone));
        let victims = self
            .cache
            .with(|c| c.plan_eviction(now, self.settings.limits));
        let report = if victims.is_empty() {
            berth_engine::EvictReport::default()
        } else {
            let report = engine.evict(&victims)?;
            self.cache.with(|c| c.remove(&victims));
            self.metrics
                .evicted_items
                .fetch_add(victims.len() as u64, Ordering::Relaxed);
            self.metrics
                .evicted_bytes
                .fetch_add(report.bytes, Ordering::Relaxed);
            log::info!(
                "proxy: evicted {} items ({} bytes) not pulled recently",
                victims.len(),
                report.bytes
            );
            report
        };
        if let Err(e) = self.cache.save() {
            log::warn!("proxy: cannot save the cache record: {e}");
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(local_prefix: Option<&str>) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        Proxy::new(
            ProxySettings {
                upstream: UpstreamSettings {
                    remote_url: "http://127.0.0.1:1".into(),
                    credentials: None,
                    remote_ca: None,
                },
                tag_ttl: Duration::from_secs(60),
                limits: EvictionLimits {
                    max_age: None,
                    max_bytes: None,
                },
                eviction_interval: Duration::from_secs(60),
                local_prefix: local_prefix.map(str::to_owned),
            },
            dir.path(),
        )
        .expect("proxy")
    }

    #[test]
    fn local_prefix_matches_whole_path_components() {
        let p = proxy(Some("local/"));
        assert!(p.is_local("local"));
        assert!(p.is_local("local/app"));
        assert!(!p.is_local("localapp"));
        assert!(!p.is_local("library/local"));
        assert!(!proxy(None).is_local("local/app"));
    }

    #[test]
    fn tags_are_fresh_only_after_confirmation() {
        let p = proxy(None);
        let repo: RepositoryName = "library/alpine".parse().expect("name");
        assert!(!p.tag_is_fresh(&repo, "3"));
        p.mark_tag_fresh(&repo, "3");
        assert!(p.tag_is_fresh(&repo, "3"));
        assert!(!p.tag_is_fresh(&repo, "4"));
    }

    #[test]
    fn metrics_render_as_prometheus_counters() {
        let p = proxy(None);
        p.metrics.count_hit();
        p.metrics.add_upstream_bytes(42);
        let text = p.metrics.render();
        assert!(text.contains("berth_proxy_hits_total 1\n"), "{text}");
        assert!(
            text.contains("berth_proxy_upstream_bytes_total 42\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE berth_proxy_coalesced_total counter\n"),
            "{text}"
        );
    }
}
