//! htpasswd (bcrypt) basic authentication, as registry:2 does it.
//!
//! - The file holds `user:$2y$…` lines (also `$2a$`, `$2b$`); anything else
//!   is refused at start with the file and line number, as registry:2
//!   supports only bcrypt.
//! - It is re-read when it changes (checked at most once a second); a
//!   reload that fails keeps the previous entries and logs why.
//! - Verified credentials are cached, keyed by an HMAC-SHA-256 (under a
//!   per-process random key) of the user, the password and the stored hash:
//!   a changed password or file never matches an old entry, and bcrypt is
//!   paid once per credential, not per request.
//! - An unknown user still costs one bcrypt verification at the cost the
//!   file's users have, so response time does not reveal who exists.
//! - Failed credentials are remembered and failed logins limited per user
//!   and client address (`failures.rs`); a cached good credential is
//!   answered before any limit applies.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::failures::{Admission, FailureLimiter, FailureSettings, TABLE_ENTRIES_MAX};
use crate::filestamp::{file_stamp, FileStamp};

/// bcrypt verifications run (real users and decoys), for
/// `berth_auth_bcrypt_verifications_total`.
pub static BCRYPT_VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

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
    /// The operating system gave no random bytes for the cache key.
    #[error("cannot get random bytes for the htpasswd credential cache: {0}")]
    Random(String),
}

/// A bcrypt hash berth verifies against when the user is unknown and the
/// file gives no cost to copy (an empty file): `$2y$05$`, Apache's default.
const DUMMY_HASH: &str = "$2y$05$ihYyaHhd4IempfjxEzUcpOZCfNDZlFuYmIg5YXr4aLHwhkN6QHrye";

/// Whether `hash` is a bcrypt hash registry:2 accepts (`$2y$`, `$2a$` or
/// `$2b$`, cost 4 to 31, well-formed salt and digest).
fn is_bcrypt(hash: &str) -> bool {
    ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p))
        && hash
            .parse::<bcrypt::HashParts>()
            .is_ok_and(|parts| (4..=31).contains(&parts.get_cost()))
}

/// Parses htpasswd text into user → bcrypt hash.
pub fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, HtpasswdError> {
    let mut users = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message| HtpasswdError::Line {
            path: path.to_owned(),
            line: index + 1,
            message,
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| error("expected user:hash"))?;
        if user.is_empty() {
            return Err(error("empty user name"));
        }
        if !is_bcrypt(hash) {
            return Err(error("not a bcrypt hash: only bcrypt ($2y$, $2a$, $2b$; htpasswd -B) is supported, as in registry:2"));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// The hash an unknown user's password is verified against: one of the
/// file's own hashes at the cost most of its users have (the result is
/// thrown away), so an unknown user takes as long as a known one.
fn decoy(users: &HashMap<String, String>) -> String {
    let mut by_cost: HashMap<u32, (usize, &String)> = HashMap::new();
    for hash in users.values() {
        if let Ok(parts) = hash.parse::<bcrypt::HashParts>() {
            let slot = by_cost.entry(parts.get_cost()).or_insert((0, hash));
            slot.0 += 1;
            slot.1 = slot.1.min(hash);
        }
    }
    by_cost
        .into_iter()
        .max_by_key(|(cost, (count, _))| (*count, *cost))
        .map(|(_, (_, hash))| hash.clone())
        .unwrap_or_else(|| DUMMY_HASH.to_owned())
}

struct Loaded {
    users: HashMap<String, String>,
    decoy: String,
    stamp: Option<FileStamp>,
    checked: Instant,
}

/// An htpasswd credential store shared by every event loop.
pub struct Htpasswd {
    path: PathBuf,
    realm: String,
    loaded: RwLock<Loaded>,
    cache: Mutex<HashSet<[u8; 32]>>,
    cache_key: [u8; 32],
    failures: FailureLimiter,
}

/// The outcome of checking credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The user is who they say.
    Allowed(String),
    /// Missing, malformed or wrong credentials.
    Denied,
    /// Too many failed logins for this user or from this address: refused
    /// without checking the password (429).
    Limited {
        /// When the limiting window ends.
        retry_after: Duration,
    },
}

impl Htpasswd {
    /// Loads `path` with the default failed-login limits; fails (naming the
    /// file and line) if it is unusable.
    pub fn open(path: &Path, realm: &str) -> Result<Arc<Htpasswd>, HtpasswdError> {
        Self::open_with(path, realm, FailureSettings::default())
    }

    /// Loads `path` with the given failed-login limits.
    pub fn open_with(
        path: &Path,
        realm: &str,
        failures: FailureSettings,
    ) -> Result<Arc<Htpasswd>, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_owned(),
            source,
        })?;
        let stamp = file_stamp(path);
        let users = parse(path, &text)?;
        let mut cache_key = [0u8; 32];
        getrandom::getrandom(&mut cache_key).map_err(|e| HtpasswdError::Random(e.to_string()))?;
        log::info!(
            "htpasswd auth: {} users from {} (realm {realm:?})",
            users.len(),
            path.display()
        );
        Ok(Arc::new(Htpasswd {
            path: path.to_owned(),
            realm: realm.to_owned(),
            loaded: RwLock::new(Loaded {
                decoy: decoy(&users),
                users,
                stamp,
                checked: Instant::now(),
            }),
            cache: Mutex::new(HashSet::new()),
            cache_key,
            failures: FailureLimiter::new(failures, TABLE_ENTRIES_MAX),
        }))
    }

    /// The realm for the `WWW-Authenticate` challenge.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn maybe_reload(&self) {
        {
            let Ok(loaded) = self.loaded.read() else {
                return;
            };
            if loaded.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let Ok(mut loaded) = self.loaded.write() else {
            return;
        };
        if loaded.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        loaded.checked = Instant::now();
        let now = file_stamp(&self.path);
        if now == loaded.stamp {
            return;
        }
        loaded.stamp = now;
        match std::fs::read_to_string(&self.path)
            .map_err(|source| HtpasswdError::Read {
                path: self.path.clone(),
                source,
            })
            .and_then(|t| parse(&self.path, &t))
        {
            Ok(users) => {
                log::info!(
                    "htpasswd file {} reloaded: {} users",
                    self.path.display(),
                    users.len()
                );
                loaded.decoy = decoy(&users);
                loaded.users = users;
            }
            Err(e) => log::error!("htpasswd reload failed, keeping the previous users: {e}"),
        }
    }

    /// The failed-login limits in force.
    pub fn failure_settings(&self) -> FailureSettings {
        self.failures.settings()
    }

    /// The cache key for a credential (verified good, or remembered as
    /// failed; `hash` is empty for an unknown user): an HMAC, so the cache
    /// holds nothing a memory dump could brute-force passwords from offline.
    fn cache_entry(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for part in [user, password, hash] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks a user and password from `client`. Returns `Ok` at once from
    /// the cache (a good credential), the remembered failures (`Denied`) or
    /// the limits (`Limited`), or `Err(job)`: a bcrypt verification to run
    /// off the event loop.
    pub fn check_cached(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Verdict, Box<VerifyJob>> {
        self.maybe_reload();
        let (hash, decoy) = match self.loaded.read() {
            Ok(loaded) => match loaded.users.get(user) {
                Some(hash) => (Some(hash.clone()), String::new()),
                None => (None, loaded.decoy.clone()),
            },
            Err(_) => (None, DUMMY_HASH.to_owned()),
        };
        let credential = self.cache_entry(user, password, hash.as_deref().unwrap_or(""));
        if hash.is_some() && self.cache.lock().is_ok_and(|c| c.contains(&credential)) {
            return Ok(Verdict::Allowed(user.to_owned()));
        }
        match self
            .failures
            .admit(user, client, &credential, Instant::now())
        {
            Admission::KnownBad => return Ok(Verdict::Denied),
            Admission::Limited { retry_after } => return Ok(Verdict::Limited { retry_after }),
            Admission::Verify => {}
        }
        Err(Box::new(VerifyJob {
            store: self.clone(),
            user: user.to_owned(),
            password: password.to_owned(),
            hash,
            decoy,
            client,
            credential,
        }))
    }
}

/// A pending bcrypt verification (blocking; run it on a blocking pool).
pub struct VerifyJob {
    store: Arc<Htpasswd>,
    user: String,
    password: String,
    hash: Option<String>,
    /// For an unknown user: the hash to spend the same time on.
    decoy: String,
    /// Where the attempt came from.
    client: IpAddr,
    /// The credential's cache key.
    credential: [u8; 32],
}

impl VerifyJob {
    /// Runs bcrypt, caches a success and remembers a failure.
    pub fn run(self) -> Verdict {
        BCRYPT_VERIFICATIONS.fetch_add(1, Ordering::Relaxed);
        let good = match &self.hash {
            Some(hash) => bcrypt::verify(&self.password, hash).unwrap_or(false),
            None => {
                // Same cost as a real user, so timing does not reveal who
                // exists; the outcome is ignored.
                let _ = bcrypt::verify(&self.password, &self.decoy);
                false
            }
        };
        self.store.failures.verified(
            &self.user,
            self.client,
            &self.credential,
            good,
            Instant::now(),
        );
        if !good {
            return Verdict::Denied;
        }
        if let Ok(mut cache) = self.store.cache.lock() {
            if cache.len() >= CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(self.credential);
        }
        Verdict::Allowed(self.user)
    }
}

/// An Apache-compatible `user:$2y$...` line for `password` at `cost`.
pub fn hash_line(user: &str, password: &str, cost: u32) -> Result<String, String> {
    if user.is_empty() {
        return Err("the user name may not be empty".into());
    }
    if user.contains(':') {
        return Err("the user name may not contain ':'".into());
    }
    if user.chars().any(char::is_control) || user.trim() != user {
        return Err(
            "the user name may not contain control characters or surrounding spaces".into(),
        );
    }
    if user.len() > 255 {
        return Err("the user name is longer than 255 bytes".into());
    }
    let parts = bcrypt::hash_with_result(password, cost).map_err(|e| format!("bcrypt: {e}"))?;
    Ok(format!(
        "{user}:{}",
        parts.format_for_version(bcrypt::Version::TwoY)
    ))
}

/// Usage of the `htpasswd` subset berth implements.
pub const CLI_USAGE: &str = "usage: htpasswd -Bbn [-C COST] USER PASSWORD
  -B  bcrypt (the only hash registry:2 and berth accept)
  -b  take the password from the command line
  -n  print the line instead of updating a file
  -C  bcrypt cost, 4 to 17 (default 5, as Apache)";

/// Why `htpasswd` arguments were not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    /// `-h` or `--help`: print [`CLI_USAGE`] and succeed.
    Help,
    /// Anything else: print this and [`CLI_USAGE`], exit 2.
    Usage(String),
}

/// Runs the `htpasswd -Bbn [-C COST] USER PASSWORD` subset of Apache's
/// htpasswd (what registry deployment guides use): flags may be clustered
/// (`-Bbn`, `-nbB`, `-BbnC 10`) or separate (`-B -b -n -C10`), `--` ends
/// them. Returns what Apache prints: the line and an empty line.
pub fn cli(args: &[String]) -> Result<String, CliError> {
    let mut flags = HashSet::new();
    let mut cost = 5u32;
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next_if(|a| a.starts_with('-') && a.len() > 1) {
        if arg == "--" {
            break;
        }
        if arg == "--help" || arg == "-h" {
            return Err(CliError::Help);
        }
        let letters = &arg[1..];
        for (at, letter) in letters.char_indices() {
            match letter {
                'B' | 'b' | 'n' => {
                    flags.insert(letter);
                }
                'C' => {
                    // The cost is the rest of this argument or the next one.
                    let rest = &letters[at + 1..];
                    let value = if rest.is_empty() { iter.next().map(String::as_str) } else { Some(rest) };
                    cost = value
                        .and_then(|c| c.parse::<u32>().ok())
                        .filter(|c| (4..=17).contains(c))
                        .ok_or_else(|| CliError::Usage("-C needs a bcrypt cost from 4 to 17".into()))?;
                    break;
                }
                'c' | 'i' | 'D' | 'v' => {
                    return Err(CliError::Usage(format!(
                        "-{letter} (updating or checking a file) is not supported: berth only prints lines (-n); redirect them into the file"
                    )))
                }
                'm' | '2' | '5' | 'd' | 's' | 'p' => {
                    return Err(CliError::Usage(format!("-{letter} selects a hash registry:2 cannot check; use -B (bcrypt)")))
                }
                other => return Err(CliError::Usage(format!("unsupported option -{other}"))),
            }
        }
    }
    let positional: Vec<&String> = iter.collect();
    for (flag, why) in [
        (
            'B',
            "-B (bcrypt) is required: registry:2 accepts only bcrypt",
        ),
        (
            'n',
            "-n is required: berth prints the line, it does not update files",
        ),
        (
            'b',
            "-b is required: berth takes the password from the command line",
        ),
    ] {
        if !flags.contains(&flag) {
            return Err(CliError::Usage(why.into()));
        }
    }
    let [user, password] = positional[..] else {
        return Err(CliError::Usage(format!(
            "expected USER and PASSWORD, got {} arguments",
            positional.len()
        )));
    };
    let line = hash_line(user, password, cost).map_err(CliError::Usage)?;
    Ok(format!("{line}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address the unit tests' attempts come from.
    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Apache's `htpasswd -Bbn testuser testpassword` (apache2-utils 2.4).
    const APACHE_LINE: &str =
        "testuser:$2y$05$4dZd3NcCWIIXFgKoczn5/egNqtwXP5iBIb56rhzGC1ouFn6UNNlDm";

    fn expire_reload_check(store: &Htpasswd) {
        store.loaded.write().unwrap().checked = Instant::now() - RELOAD_CHECK * 2;
    }

    #[test]
    fn parses_bcrypt_lines_and_names_bad_ones() {
        let line = hash_line("alice", "pw", 4).unwrap();
        let users = parse(Path::new("f"), &format!("# comment\n\n  {line}  \r\n")).unwrap();
        assert!(users["alice"].starts_with("$2y$04$"));
        let err = parse(
            Path::new("/etc/htpasswd"),
            "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/etc/htpasswd") && err.contains("line 1") && err.contains("bcrypt"),
            "{err}"
        );
        let err = parse(Path::new("f"), &format!("{line}\nnocolon\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("user:hash"), "{err}");
        let err = parse(
            Path::new("f"),
            &format!("\n\n{}\n", line.replacen("alice", "", 1)),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3") && err.contains("empty user"),
            "{err}"
        );
        // MD5 (Apache's default without -B), crypt, plain text, $2x$, a
        // truncated hash and an impossible cost are refused.
        let hash = &users["alice"];
        for bad in [
            "u:$apr1$HC7.gkVq$2YvQ4hVfOWC6gJ9Cp6YQ0/".to_string(),
            "u:rqXexS6ZhobKA".to_string(),
            "u:password".to_string(),
            format!("u:{}", hash.replacen("$2y$", "$2x$", 1)),
            format!("u:{}", &hash[..59]),
            format!("u:{}", hash.replacen("$04$", "$99$", 1)),
            format!("u:{}", hash.replacen("$04$", "$03$", 1)),
        ] {
            let err = parse(Path::new("f"), &bad).unwrap_err().to_string();
            assert!(
                err.contains("line 1") && err.contains("bcrypt"),
                "{bad}: {err}"
            );
        }
        // All three bcrypt prefixes registry:2 accepts; a later line for the
        // same user wins, as in registry:2.
        for prefix in ["$2a$", "$2b$"] {
            let text = format!("{line}\nalice:{}\n", hash.replacen("$2y$", prefix, 1));
            assert!(parse(Path::new("f"), &text).unwrap()["alice"].starts_with(prefix));
        }
        let users = parse(Path::new("f"), &format!("{APACHE_LINE}\n\n")).unwrap();
        assert!(
            bcrypt::verify("testpassword", &users["testuser"]).unwrap(),
            "Apache's line verifies"
        );
        assert!(is_bcrypt(DUMMY_HASH));
    }

    #[test]
    fn hash_lines_are_apache_compatible() {
        let line = hash_line("testuser", "testpassword", 5).unwrap();
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(user, "testuser");
        assert!(hash.starts_with("$2y$05$") && hash.len() == 60, "{line}");
        assert!(bcrypt::verify("testpassword", hash).unwrap());
        assert!(hash_line("a:b", "pw", 4).is_err());
        assert!(hash_line("", "pw", 4).is_err());
        assert!(hash_line("a\nb", "pw", 4).is_err());
        assert!(
            hash_line("u", "pw", 3).is_err(),
            "cost below bcrypt's minimum"
        );
        assert!(hash_line("u", "pass:with:colons", 4).is_ok());
    }

    #[test]
    fn the_cli_takes_the_flag_spellings_apache_does() {
        let run = |args: &[&str]| cli(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        for args in [
            &["-Bbn", "testuser", "testpassword"][..],
            &["-nbB", "testuser", "testpassword"],
            &["-B", "-b", "-n", "testuser", "testpassword"],
            &["-bn", "-B", "--", "testuser", "testpassword"],
        ] {
            let out = run(args).unwrap();
            assert!(
                out.starts_with("testuser:$2y$05$")
                    && out.ends_with("\n\n")
                    && out.len() == "testuser:".len() + 60 + 2,
                "{args:?}: {out:?}"
            );
            let hash = out.trim_end().split_once(':').unwrap().1;
            assert!(bcrypt::verify("testpassword", hash).unwrap());
        }
        for args in [
            &["-Bbn", "-C", "4", "u", "p"][..],
            &["-BbnC", "4", "u", "p"],
            &["-BbnC4", "u", "p"],
            &["-C4", "-Bbn", "u", "p"],
        ] {
            assert!(run(args).unwrap().starts_with("u:$2y$04$"), "{args:?}");
        }
        // A password that looks like a flag, after the user name.
        let out = run(&["-Bbn", "u", "-secret"]).unwrap();
        assert!(bcrypt::verify("-secret", out.trim_end().split_once(':').unwrap().1).unwrap());
        assert_eq!(run(&["--help"]), Err(CliError::Help));
        for (args, expect) in [
            (&["-bn", "u", "p"][..], "-B"),
            (&["-Bb", "u", "p"], "-n"),
            (&["-Bn", "u"], "-b"),
            (&["-cBb", "file", "u", "p"], "-c"),
            (&["-Bbnm", "u", "p"], "-m"),
            (&["-Bbnx", "u", "p"], "-x"),
            (&["-Bbn", "-C", "3", "u", "p"], "cost"),
            (&["-Bbn", "-C", "18", "u", "p"], "cost"),
            (&["-Bbn", "-C"], "cost"),
            (&["-Bbn", "u"], "USER and PASSWORD"),
            (&["-Bbn", "u", "p", "extra"], "USER and PASSWORD"),
            (&["-Bbn", "a:b", "p"], "':'"),
        ] {
            match run(args) {
                Err(CliError::Usage(message)) => {
                    assert!(message.contains(expect), "{args:?}: {message}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn verifies_caches_and_invalidates_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, hash_line("alice", "old", 4).unwrap() + "\n").unwrap();
        let store = Htpasswd::open(&path, "realm").unwrap();
        let job = store.check_cached("alice", "old", CLIENT).unwrap_err();
        assert_eq!(job.run(), Verdict::Allowed("alice".into()));
        assert_eq!(
            store.check_cached("alice", "old", CLIENT).ok(),
            Some(Verdict::Allowed("alice".into())),
            "second check is cached"
        );
        assert_eq!(
            store
                .check_cached("alice", "wrong", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Denied
        );
        assert_eq!(
            store.check_cached("alice", "wrong", CLIENT).ok(),
            Some(Verdict::Denied),
            "a failure is remembered: no second bcrypt"
        );
        assert_eq!(
            store
                .check_cached("mallory", "old", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Denied
        );
        assert_eq!(
            store
                .check_cached("Alice", "old", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Denied,
            "user names are case-sensitive"
        );
        // The password changes in the file: the cached entry no longer matches.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            &path,
            hash_line("alice", "new", 4).unwrap() + "\n# changed\n",
        )
        .unwrap();
        expire_reload_check(&store);
        assert!(
            store.check_cached("alice", "old", CLIENT).is_err(),
            "stale cache entry used"
        );
        assert_eq!(
            store
                .check_cached("alice", "old", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Denied
        );
        assert_eq!(
            store
                .check_cached("alice", "new", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Allowed("alice".into())
        );
        // The user is removed: even the cached credential stops working.
        assert!(store.check_cached("alice", "new", CLIENT).is_ok());
        std::fs::write(&path, hash_line("bob", "pw", 4).unwrap() + "\n").unwrap();
        expire_reload_check(&store);
        assert_eq!(
            store
                .check_cached("alice", "new", CLIENT)
                .unwrap_err()
                .run(),
            Verdict::Denied
        );
    }

    #[test]
    fn wrong_passwords_are_limited_but_cached_good_credentials_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, hash_line("alice", "pw", 4).unwrap() + "\n").unwrap();
        let settings = FailureSettings {
            failures_max: 3,
            failure_window: Duration::from_secs(60),
        };
        let store = Htpasswd::open_with(&path, "realm", settings).unwrap();
        assert_eq!(store.failure_settings(), settings);
        let good = IpAddr::from([192, 0, 2, 1]);
        let attacker = IpAddr::from([192, 0, 2, 66]);
        assert_eq!(
            store.check_cached("alice", "pw", good).unwrap_err().run(),
            Verdict::Allowed("alice".into())
        );
        let before = BCRYPT_VERIFICATIONS.load(Ordering::Relaxed);
        for i in 0..3 {
            let job = store.check_cached("alice", &format!("guess{i}"), attacker);
            assert_eq!(job.unwrap_err().run(), Verdict::Denied);
        }
        // The same wrong password again, and then anything else: no bcrypt.
        for password in ["guess0", "guess9", "pw-not"] {
            match store.check_cached("alice", password, attacker) {
                Ok(Verdict::Limited { retry_after }) => {
                    assert!(retry_after <= Duration::from_secs(60))
                }
                other => panic!("{password}: {:?}", other.map_err(|_| "a job")),
            }
        }
        // The user is limited from every address, but her cached
        // credential still passes.
        assert!(matches!(
            store.check_cached("alice", "other", good),
            Ok(Verdict::Limited { .. })
        ));
        assert_eq!(
            store.check_cached("alice", "pw", good).ok(),
            Some(Verdict::Allowed("alice".into()))
        );
        // Only the three guesses ran bcrypt (other tests may run some too,
        // so at least three, and the limited attempts ran none here).
        assert!(BCRYPT_VERIFICATIONS.load(Ordering::Relaxed) >= before + 3);
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, hash_line("alice", "pw", 4).unwrap() + "\n").unwrap();
        let store = Htpasswd::open(&path, "realm").unwrap();
        std::fs::write(&path, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
        expire_reload_check(&store);
        assert_eq!(
            store.check_cached("alice", "pw", CLIENT).unwrap_err().run(),
            Verdict::Allowed("alice".into())
        );
        std::fs::remove_file(&path).unwrap();
        expire_reload_check(&store);
        assert_eq!(
            store.check_cached("alice", "pw", CLIENT).ok(),
            Some(Verdict::Allowed("alice".into()))
        );
        // Fixed again: the new file is read.
        std::fs::write(&path, hash_line("bob", "pw2", 4).unwrap() + "\n").unwrap();
        expire_reload_check(&store);
        assert_eq!(
            store.check_cached("bob", "pw2", CLIENT).unwrap_err().run(),
            Verdict::Allowed("bob".into())
        );
        assert_eq!(
            store.check_cached("alice", "pw", CLIENT).unwrap_err().run(),
            Verdict::Denied
        );
    }

    #[test]
    fn the_reload_check_runs_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, hash_line("alice", "pw", 4).unwrap() + "\n").unwrap();
        let store = Htpasswd::open(&path, "realm").unwrap();
        std::fs::write(&path, hash_line("bob", "pw", 4).unwrap() + "\n").unwrap();
        // Within the second after the load the file is not looked at.
        assert!(store.loaded.read().unwrap().users.contains_key("alice"));
        let _ = store.check_cached("bob", "pw", CLIENT);
        assert!(store.loaded.read().unwrap().checked.elapsed() < RELOAD_CHECK);
        assert!(
            store.loaded.read().unwrap().users.contains_key("alice"),
            "re-read within a second"
        );
    }

    #[test]
    fn open_names_an_unreadable_file() {
        let err = Htpasswd::open(Path::new("/nonexistent/berth/htpasswd"), "r")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/berth/htpasswd"), "{err}");
    }

    #[test]
    fn unknown_users_cost_what_known_users_cost() {
        let users: HashMap<String, String> = [
            ("a", hash_line("a", "x", 4).unwrap()),
            ("b", hash_line("b", "x", 6).unwrap()),
            ("c", hash_line("c", "x", 6).unwrap()),
        ]
        .into_iter()
        .map(|(u, line)| (u.to_string(), line.split_once(':').unwrap().1.to_string()))
        .collect();
        assert!(decoy(&users).starts_with("$2y$06$"), "the most common cost");
        assert_eq!(decoy(&HashMap::new()), DUMMY_HASH);
    }
}
