//! The bytes of recently served manifests, kept in memory so that a hot
//! manifest (every job of a CI fleet pulls the same few) is answered
//! without a read, a checksum or a copy of its own.
//!
//! Entries are keyed by digest, so they never go stale: a digest names one
//! byte string forever. Whether a repository may serve a manifest is
//! decided by the metadata state before the cache is consulted, so a
//! deleted manifest is never served from here. Memory is bounded by
//! [`CACHE_BYTES`]; a manifest larger than [`ENTRY_BYTES_MAX`] is not kept,
//! and when an entry does not fit, arbitrary entries (a hash map's order)
//! make room, which for a working set larger than the budget degrades to
//! reading from the store, never worse.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::digest::RawDigest;

/// Most manifest bytes the cache holds.
pub const CACHE_BYTES: usize = 8 << 20;

/// Largest manifest the cache keeps (a sixteenth of the budget).
pub const ENTRY_BYTES_MAX: usize = CACHE_BYTES / 16;

/// Manifest bytes by digest, at most [`CACHE_BYTES`] of them.
#[derive(Default)]
pub struct ManifestCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<RawDigest, Arc<[u8]>>,
    /// Sum of the entries' lengths.
    bytes: usize,
}

impl ManifestCache {
    /// The cached bytes of `digest`, if any.
    pub fn get(&self, digest: &RawDigest) -> Option<Arc<[u8]>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.entries.get(digest).cloned()
    }

    /// Keeps `bytes` as the manifest `digest` (the caller has verified
    /// them), making room if needed; a manifest over [`ENTRY_BYTES_MAX`] is
    /// not kept.
    pub fn insert(&self, digest: RawDigest, bytes: Arc<[u8]>) {
        if bytes.len() > ENTRY_BYTES_MAX {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.entries.contains_key(&digest) {
            return;
        }
        while inner.bytes + bytes.len() > CACHE_BYTES {
            let Some(victim) = inner.entries.keys().next().copied() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&victim) {
                inner.bytes -= gone.len();
            }
        }
        inner.bytes += bytes.len();
        inner.entries.insert(digest, bytes);
    }

    /// Bytes held (for tests and metrics).
    pub fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn key(i: u32) -> RawDigest {
        Digest::sha256_of(&i.to_le_bytes()).to_raw()
    }

    #[test]
    fn entries_come_back_and_the_budget_holds() {
        let cache = ManifestCache::default();
        let piece = ENTRY_BYTES_MAX;
        for i in 0..40u32 {
            cache.insert(key(i), vec![i as u8; piece].into());
            assert!(cache.bytes() <= CACHE_BYTES);
            // The newest entry is always kept.
            assert_eq!(cache.get(&key(i)).unwrap()[0], i as u8);
        }
        assert_eq!(cache.bytes(), CACHE_BYTES);
        let kept = (0..40u32).filter(|i| cache.get(&key(*i)).is_some()).count();
        assert_eq!(kept, CACHE_BYTES / piece);
    }

    #[test]
    fn an_oversized_manifest_is_not_kept_and_a_repeat_insert_counts_once() {
        let cache = ManifestCache::default();
        cache.insert(key(1), vec![0u8; ENTRY_BYTES_MAX + 1].into());
        assert!(cache.get(&key(1)).is_none());
        cache.insert(key(2), vec![0u8; 100].into());
        cache.insert(key(2), vec![0u8; 100].into());
        assert_eq!(cache.bytes(), 100);
    }
}
