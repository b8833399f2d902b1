//! htpasswd (bcrypt) basic authentication, as registry:2 does it.
//!
//! - The file holds `user:$2y$…` lines (also `$2a$`, `$2b$`); anything else
//!   is refused at start with the file and line number, as registry:2
//!   supports only bcrypt.
//! - It is re-read when it changes (checked at most once a second); a
//!   reload that fails keeps the previous entries and logs why.
//! - Verified credentials are cached, keyed by user, a SHA-256 of the
//!   password under a per-process random key, and the stored hash: a changed
//!   password or file never matches an old entry, and bcrypt is paid once.
//! - An unknown user still costs one bcrypt verification against a dummy
//!   hash, so response time does not reveal which users exist.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

/// Entries kept in the verified-credential cache before it is cleared.
const CACHE_ENTRIES_MAX: usize = 10_000;
/// How often the file's mtime and size are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `user:<bcrypt hash>`.
    #[error("htpasswd file {path} line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: &'static str,
    },
}

/// Parses htpasswd text into user → bcrypt hash.
pub fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message| HtpasswdError::Line { path: path.to_owned(), line: index + 1, message };
        let (user, hash) = line.split_once(':').ok_or_else(|| error("expected user:hash"))?;
        if user.is_empty() {
            return Err(error("empty user name"));
        }
        let bcrypt = ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60;
        if !bcrypt {
            return Err(error("only bcrypt hashes ($2y$, $2a$, $2b$; htpasswd -B) are supported"));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Loaded {
    users: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// An htpasswd credential store shared by every event loop.
pub struct Htpasswd {
    path: PathBuf,
    realm: String,
    loaded: RwLock<Loaded>,
    cache: Mutex<HashSet<[u8; 32]>>,
    cache_key: [u8; 32],
    dummy_hash: String,
}

/// The outcome of checking credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The user is who they say.
    Allowed(String),
    /// Missing, malformed or wrong credentials.
    Denied,
}

impl Htpasswd {
    /// Loads `path`; fails (naming the file and line) if it is unusable.
    pub fn open(path: &Path, realm: &str) -> Result<Arc<Htpasswd>, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.to_owned(), source })?;
        let users = parse(path, &text)?;
        let mut cache_key = [0u8; 32];
        let _ = getrandom::getrandom(&mut cache_key);
        let dummy_hash = bcrypt::hash_with_result("berth-dummy-password", 5)
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .unwrap_or_default();
        Ok(Arc::new(Htpasswd {
            path: path.to_owned(),
            realm: realm.to_owned(),
            loaded: RwLock::new(Loaded { users, stamp: stamp(path), checked: Instant::now() }),
            cache: Mutex::new(HashSet::new()),
            cache_key,
            dummy_hash,
        }))
    }

    /// The realm for the `WWW-Authenticate` challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn maybe_reload(&self) {
        {
            let Ok(loaded) = self.loaded.read() else { return };
            if loaded.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let Ok(mut loaded) = self.loaded.write() else { return };
        if loaded.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        loaded.checked = Instant::now();
        let now = stamp(&self.path);
        if now == loaded.stamp {
            return;
        }
        loaded.stamp = now;
        match std::fs::read_to_string(&self.path).map_err(|source| HtpasswdError::Read { path: self.path.clone(), source }).and_then(|t| parse(&self.path, &t)) {
            Ok(users) => {
                log::info!("htpasswd file {} reloaded: {} users", self.path.display(), users.len());
                loaded.users = users;
            }
            Err(e) => log::error!("htpasswd reload failed, keeping the previous users: {e}"),
        }
    }

    fn cache_entry(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Checks a user and password. Returns `Ok` at once from the cache, or
    /// `Err(job)`: a bcrypt verification to run off the event loop.
    pub fn check_cached(self: &Arc<Self>, user: &str, password: &str) -> Result<Verdict, VerifyJob> {
        self.maybe_reload();
        let hash = self.loaded.read().ok().and_then(|l| l.users.get(user).cloned());
        if let Some(hash) = &hash {
            let entry = self.cache_entry(user, password, hash);
            if self.cache.lock().is_ok_and(|c| c.contains(&entry)) {
                return Ok(Verdict::Allowed(user.to_owned()));
            }
        }
        Err(VerifyJob { store: self.clone(), user: user.to_owned(), password: password.to_owned(), hash })
    }
}

/// A pending bcrypt verification (blocking; run it on a blocking pool).
pub struct VerifyJob {
    store: Arc<Htpasswd>,
    user: String,
    password: String,
    hash: Option<String>,
}

impl VerifyJob {
    /// Runs bcrypt and caches a success.
    pub fn run(self) -> Verdict {
        match &self.hash {
            Some(hash) => {
                if bcrypt::verify(&self.password, hash).unwrap_or(false) {
                    let entry = self.store.cache_entry(&self.user, &self.password, hash);
                    if let Ok(mut cache) = self.store.cache.lock() {
                        if cache.len() >= CACHE_ENTRIES_MAX {
                            cache.clear();
                        }
                        cache.insert(entry);
                    }
                    Verdict::Allowed(self.user)
                } else {
                    Verdict::Denied
                }
            }
            None => {
                // Same cost as a real user, so timing does not reveal who exists.
                let _ = bcrypt::verify(&self.password, &self.store.dummy_hash);
                Verdict::Denied
            }
        }
    }
}

/// An Apache-compatible `user:$2y$...` line for `password` at `cost`.
pub fn hash_line(user: &str, password: &str, cost: u32) -> Result<String, String> {
    if user.contains(':') {
        return Err("the user name may not contain ':'".into());
    }
    let parts = bcrypt::hash_with_result(password, cost).map_err(|e| format!("bcrypt: {e}"))?;
    Ok(format!("{user}:{}", parts.format_for_version(bcrypt::Version::TwoY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bcrypt_lines_and_names_bad_ones() {
        let line = hash_line("alice", "pw", 4).unwrap();
        let users = parse(Path::new("f"), &format!("# comment\n\n{line}\n")).unwrap();
        assert!(users["alice"].starts_with("$2y$04$"));
        let err = parse(Path::new("f"), "bob:{SHA}abc\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("bcrypt"), "{err}");
        let err = parse(Path::new("f"), &format!("{line}\nnocolon\n")).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn verifies_caches_and_invalidates_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, hash_line("alice", "old", 4).unwrap() + "\n").unwrap();
        let store = Htpasswd::open(&path, "realm").unwrap();
        let job = store.check_cached("alice", "old").unwrap_err();
        assert_eq!(job.run(), Verdict::Allowed("alice".into()));
        assert_eq!(store.check_cached("alice", "old").ok(), Some(Verdict::Allowed("alice".into())), "second check is cached");
        assert_eq!(store.check_cached("alice", "wrong").unwrap_err().run(), Verdict::Denied);
        assert_eq!(store.check_cached("mallory", "old").unwrap_err().run(), Verdict::Denied);
        // The password changes in the file: the cached entry no longer matches.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, hash_line("alice", "new", 4).unwrap() + "\n# changed\n").unwrap();
        store.loaded.write().unwrap().checked = Instant::now() - RELOAD_CHECK * 2;
        assert!(store.check_cached("alice", "old").is_err(), "stale cache entry used");
        assert_eq!(store.check_cached("alice", "old").unwrap_err().run(), Verdict::Denied);
        assert_eq!(store.check_cached("alice", "new").unwrap_err().run(), Verdict::Allowed("alice".into()));
    }
}
