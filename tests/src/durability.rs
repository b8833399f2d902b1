//! Helpers for the durability scenarios (`crash_consistency`, `disk_full`):
//! a seeded PRNG, deterministic blob contents, and HTTP calls that return
//! transport failures instead of panicking (the server is killed or the
//! disk fills up while they run). Everything here talks to the registry
//! over its HTTP API only; nothing reads its data directory.

use sha2::{Digest as _, Sha256};

use crate::http::HttpResponse;
pub use crate::http::{agent, try_request, TransportError};
use crate::images::XorShift;

/// xorshift64* PRNG: tiny, deterministic for a given seed, good enough for
/// choosing operations and filling blobs.
#[derive(Clone, Debug)]
pub struct Rng(XorShift);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(XorShift::new(seed ^ 0x9E37_79B9_7F4A_7C15));
        // Decorrelate nearby seeds.
        for _ in 0..4 {
            r.next_u64();
        }
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// A seed from the environment variable `var` (decimal or 0x-hex), else
/// from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(text) if !text.trim().is_empty() => {
            let t = text.trim();
            let parsed = match t.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{var}={text:?} is not a u64: {e}"))
        }
        _ => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// The content of a test blob: `size` bytes generated from `seed`
/// (so a model only needs to keep `(seed, size)`).
pub fn blob_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(size);
    out
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Makes a `Location` header absolute against `base` (`http://host:port`).
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    }
}

/// Appends `key=value` to a URL that may already have a query.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The first `errors[].code` of a JSON error body, if it is one.
pub fn error_code(response: &HttpResponse) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    v["errors"][0]["code"].as_str().map(String::from)
}

/// First byte offset where `got` and `want` differ (or the shorter length).
pub fn first_difference(got: &[u8], want: &[u8]) -> usize {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()))
}

/// An OCI image manifest with `config` and `layers` (digest, size), plus an
/// annotation that makes its digest unique.
pub fn image_manifest(config: (&str, usize), layers: &[(String, usize)], nonce: &str) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, size)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
        "annotations": {"berth.test/nonce": nonce}
    }))
    .expect("json")
}

/// An OCI index over `children` (digest, size), with a unique annotation.
pub fn image_index(children: &[(String, usize)], nonce: &str) -> Vec<u8> {
    let manifests: Vec<_> = children
        .iter()
        .map(|(d, size)| {
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size,
                               "platform": {"architecture": "amd64", "os": "linux"}})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": {"berth.test/nonce": nonce}
    }))
    .expect("json")
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The descriptors a manifest body references: `(digest, size, is_manifest)`
/// for an index's children, config and layers for an image.
pub fn references(manifest: &[u8]) -> Vec<(String, u64, bool)> {
    let v: serde_json::Value = match serde_json::from_slice(manifest) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut add = |d: &serde_json::Value, is_manifest: bool| {
        if let (Some(digest), Some(size)) = (d["digest"].as_str(), d["size"].as_u64()) {
            out.push((digest.to_string(), size, is_manifest));
        }
    };
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            add(c, true);
        }
    }
    if v["config"].is_object() {
        add(&v["config"], false);
    }
    if let Some(layers) = v["layers"].as_array() {
        for l in layers {
            add(l, false);
        }
    }
    out
}
