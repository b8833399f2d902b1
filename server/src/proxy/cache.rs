//! What the pull-through cache holds and when each item was last pulled,
//! for eviction by age (`proxy.ttl`) and by size (`proxy.maxsize`), least
//! recently pulled first, never while a pull is in flight.
//!
//! The record is kept in memory and saved to `<data>/proxy-cache` (one
//! `digest length last-pull-unix-seconds` line per item, replaced
//! atomically). Losing it (a crash between saves) only makes the lost
//! items look freshly pulled: eviction errs towards keeping.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::Digest;

/// One cached item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    len: u64,
    last_pull: u64,
    /// Pulls being served right now.
    pins: u32,
}

/// The cache's record of its items.
#[derive(Default)]
pub struct CacheIndex {
    entries: HashMap<Digest, Entry>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Limits for [`CacheIndex::plan_eviction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionLimits {
    /// Items not pulled for this long go (`proxy.ttl`); `None` keeps them.
    pub max_age: Option<Duration>,
    /// While the items total more than this, the least recently pulled go
    /// (`proxy.maxsize`); `None`: no size limit.
    pub max_bytes: Option<u64>,
}

impl CacheIndex {
    /// Records a pull of `digest` (of `len` bytes) at `now`.
    pub fn touch(&mut self, digest: &Digest, len: u64, now: u64) {
        let entry = self.entries.entry(digest.clone()).or_insert(Entry {
            len,
            last_pull: now,
            pins: 0,
        });
        entry.len = len;
        entry.last_pull = entry.last_pull.max(now);
    }

    /// Forgets items (after they were evicted).
    pub fn remove(&mut self, digests: &[Digest]) {
        for d in digests {
            self.entries.remove(d);
        }
    }

    /// Every recorded digest.
    pub fn digests(&self) -> Vec<Digest> {
        self.entries.keys().cloned().collect()
    }

    /// Drops the records of `digests` that no pull holds (content that is
    /// not stored: a failed fetch, or removed by other means).
    pub fn remove_unpinned(&mut self, digests: &[Digest]) {
        for d in digests {
            if self.entries.get(d).is_some_and(|e| e.pins == 0) {
                self.entries.remove(d);
            }
        }
    }

    /// Total bytes of the recorded items.
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.len).sum()
    }

    /// Number of recorded items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What to evict at `now`: every unpinned item older than the age
    /// limit, then unpinned items least recently pulled first until the
    /// rest fits the size limit. Pinned items (pulls in flight) are never
    /// chosen, even if the cache stays over its size limit.
    pub fn plan_eviction(&self, now: u64, limits: EvictionLimits) -> Vec<Digest> {
        let mut candidates: Vec<(&Digest, &Entry)> = self.entries.iter().collect();
        candidates.sort_by(|a, b| a.1.last_pull.cmp(&b.1.last_pull).then(a.0.cmp(b.0)));
        let mut total = self.total_bytes();
        let mut out = Vec::new();
        for (digest, entry) in candidates {
            if entry.pins > 0 {
                continue;
            }
            let too_old = limits
                .max_age
                .is_some_and(|age| now.saturating_sub(entry.last_pull) >= age.as_secs());
            let over_size = limits.max_bytes.is_some_and(|max| total > max);
            if too_old || over_size {
                total -= entry.len;
                out.push(digest.clone());
            }
        }
        out
    }

    /// The record as text, one `digest length last-pull` line per item.
    pub fn encode(&self) -> String {
        let mut lines: Vec<String> = self
            .entries
            .iter()
            .map(|(d, e)| format!("{d} {} {}\n", e.len, e.last_pull))
            .collect();
        lines.sort();
        lines.concat()
    }

    /// Parses [`CacheIndex::encode`]'s text; malformed lines are skipped.
    pub fn decode(text: &str) -> CacheIndex {
        let mut index = CacheIndex::default();
        for line in text.lines() {
            let mut fields = line.split(' ');
            let parsed = (|| {
                let digest: Digest = fields.next()?.parse().ok()?;
                let len = fields.next()?.parse().ok()?;
                let last_pull = fields.next()?.parse().ok()?;
                fields.next().is_none().then_some((digest, len, last_pull))
            })();
            if let Some((digest, len, last_pull)) = parsed {
                index.touch(&digest, len, last_pull);
            }
        }
        index
    }
}

/// The shared record plus where it is saved.
pub struct Cache {
    index: Mutex<CacheIndex>,
    path: PathBuf,
}

/// Holds a pull in flight: the item cannot be evicted until every pin on
/// it is dropped, and dropping records the pull's end as its last use.
pub struct PullPin {
    cache: Arc<Cache>,
    digest: Digest,
}

impl std::fmt::Debug for PullPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PullPin({})", self.digest)
    }
}

impl Drop for PullPin {
    fn drop(&mut self) {
        let mut index = self.cache.lock();
        if let Some(entry) = index.entries.get_mut(&self.digest) {
            entry.pins = entry.pins.saturating_sub(1);
            entry.last_pull = entry.last_pull.max(unix_now());
        }
    }
}

impl Cache {
    /// Loads the record saved under `data_dir` (an empty one if none).
    pub fn load(data_dir: &Path) -> Cache {
        let path = data_dir.join("proxy-cache");
        let index = fs::read_to_string(&path)
            .map(|text| CacheIndex::decode(&text))
            .unwrap_or_default();
        Cache {
            index: Mutex::new(index),
            path,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a pull of `digest` starting now and pins it until the
    /// returned guard is dropped.
    pub fn pin(self: &Arc<Self>, digest: &Digest, len: u64) -> PullPin {
        let mut index = self.lock();
        index.touch(digest, len, unix_now());
        if let Some(entry) = index.entries.get_mut(digest) {
            entry.pins += 1;
        }
        PullPin {
            cache: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Runs `f` on the record.
    pub fn with<T>(&self, f: impl FnOnce(&mut CacheIndex) -> T) -> T {
        f(&mut self.lock())
    }

    /// Saves the record atomically (write, fsync, rename).
    pub fn save(&self) -> io::Result<()> {
        let text = self.lock().encode();
        let tmp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn index(items: &[(u8, u64, u64)]) -> CacheIndex {
        let mut index = CacheIndex::default();
        for (n, len, at) in items {
            index.touch(&d(*n), *len, *at);
        }
        index
    }

    #[test]
    fn age_limit_evicts_what_was_not_pulled_recently() {
        let index = index(&[(1, 10, 100), (2, 10, 500), (3, 10, 950)]);
        let limits = EvictionLimits {
            max_age: Some(Duration::from_secs(400)),
            max_bytes: None,
        };
        assert_eq!(index.plan_eviction(1000, limits), vec![d(1), d(2)]);
    }

    #[test]
    fn size_limit_evicts_least_recently_pulled_first() {
        let index = index(&[(1, 50, 300), (2, 50, 100), (3, 50, 200)]);
        let limits = EvictionLimits {
            max_age: None,
            max_bytes: Some(60),
        };
        assert_eq!(index.plan_eviction(1000, limits), vec![d(2), d(3)]);
        let roomy = EvictionLimits {
            max_age: None,
            max_bytes: Some(150),
        };
        assert!(index.plan_eviction(1000, roomy).is_empty());
    }

    #[test]
    fn pinned_items_are_never_evicted_and_unpinning_counts_as_a_pull() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(Cache::load(dir.path()));
        cache.with(|i| i.touch(&d(1), 10, 1));
        let pin = cache.pin(&d(1), 10);
        cache.with(|i| {
            if let Some(e) = i.entries.get_mut(&d(1)) {
                e.last_pull = 1;
            }
        });
        let limits = EvictionLimits {
            max_age: Some(Duration::from_secs(10)),
            max_bytes: Some(0),
        };
        assert!(cache
            .with(|i| i.plan_eviction(unix_now(), limits))
            .is_empty());
        drop(pin);
        let now = unix_now();
        assert!(
            cache.with(|i| i.plan_eviction(now, limits)) == vec![d(1)],
            "size limit still applies once unpinned"
        );
        let age_only = EvictionLimits {
            max_age: Some(Duration::from_secs(10)),
            max_bytes: None,
        };
        assert!(
            cache.with(|i| i.plan_eviction(now, age_only)).is_empty(),
            "the pull's end refreshed its age"
        );
    }

    #[test]
    fn records_of_content_not_stored_are_dropped_unless_pulled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(Cache::load(dir.path()));
        cache.with(|i| {
            i.touch(&d(1), 10, 1);
            i.touch(&d(2), 10, 1);
        });
        let pin = cache.pin(&d(3), 10);
        let not_stored = |i: &CacheIndex| -> Vec<Digest> {
            i.digests()
                .into_iter()
                .filter(|digest| *digest != d(1))
                .collect()
        };
        cache.with(|i| i.remove_unpinned(&not_stored(i)));
        assert_eq!(
            cache.with(|i| i.len()),
            2,
            "d(1) is stored, d(3) is being pulled"
        );
        drop(pin);
        cache.with(|i| i.remove_unpinned(&not_stored(i)));
        assert_eq!(cache.with(|i| i.total_bytes()), 10);
    }

    #[test]
    fn the_record_round_trips_and_skips_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::load(dir.path());
        cache.with(|i| {
            i.touch(&d(1), 10, 100);
            i.touch(&d(2), 20, 200);
        });
        cache.save().expect("save");
        let mut text = fs::read_to_string(dir.path().join("proxy-cache")).expect("read");
        text.push_str("garbage line\nsha256:zz 1 2\n");
        let decoded = CacheIndex::decode(&text);
        assert_eq!(decoded.encode(), cache.with(|i| i.encode()));
        assert_eq!(decoded.total_bytes(), 30);
    }
}
