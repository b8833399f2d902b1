//! Failed Basic logins: remembered briefly and limited per user and per
//! client address, so wrong passwords cannot make the server spend its
//! cores on bcrypt and starve good logins.
//!
//! - A failed credential is remembered (by a keyed hash of user, password
//!   and stored hash, never the password) for one window: trying it again
//!   costs no bcrypt, and is answered 401 without counting again (a client
//!   retrying a stale password, or polling for a user being added, costs
//!   nothing and is not locked out by it).
//! - Each user and each client address gets `failures_max` failed
//!   verifications per `failure_window` (a fixed window from its first
//!   failure): the limit bounds the bcrypt work wrong passwords cause. An
//!   attempt that would start a verification counts against both limits
//!   before bcrypt runs (and is refunded if it succeeds), so concurrent
//!   attempts cannot overshoot. Past the limit an attempt is refused
//!   without bcrypt; the caller answers 429. Credentials already verified
//!   good (the credential cache) never reach this module, so a legitimate
//!   user keeps working during an attack.
//! - An address is counted by network: an IPv4 address (also IPv4-mapped
//!   IPv6) as itself, an IPv6 address by its /64, which one client
//!   typically holds whole.
//! - Every table has a fixed capacity; when one is full the window that
//!   started first is evicted.
//! - One log line per burst: when a user or an address reaches the limit
//!   in a window, not per request.
//!
//! Pure apart from the logger: every method takes the time, so tests drive
//! it with an injected clock.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Logins refused because a user or an address was past its limit
/// (`berth_auth_logins_refused_total`).
pub static LOGINS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Windows each table holds (users, addresses, remembered credentials).
pub const TABLE_ENTRIES_MAX: usize = 4096;
/// Distinct other parties (addresses of a user, users of an address) a
/// window counts for its log line; beyond this it says "at least".
const DISTINCT_MAX: usize = 16;

/// How many failed logins are allowed, and over what time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureSettings {
    /// Failed logins per user and per client address in one window
    /// (`auth.htpasswd.failuresmax`); 0 turns the limit off (failures are
    /// still remembered).
    pub failures_max: u32,
    /// The window (`auth.htpasswd.failurewindow`); also how long a failed
    /// credential is remembered.
    pub failure_window: Duration,
}

impl Default for FailureSettings {
    fn default() -> Self {
        FailureSettings {
            failures_max: 10,
            failure_window: Duration::from_secs(60),
        }
    }
}

/// What may happen to a login attempt that the credential cache did not
/// answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run bcrypt; report the outcome with [`FailureLimiter::verified`].
    Verify,
    /// This exact credential failed within the window: it is wrong, no
    /// bcrypt needed.
    KnownBad,
    /// The user or the address is past its limit: refuse without bcrypt.
    Limited {
        /// When the limiting window ends.
        retry_after: Duration,
    },
}

/// One key's failures in its current window.
#[derive(Debug)]
struct Window {
    start: Instant,
    failures: u32,
    /// Hashes of the other parties seen (addresses for a user, users for an
    /// address), at most [`DISTINCT_MAX`].
    distinct: Vec<u64>,
    /// Which insertion this is (matches one entry of the order queue).
    seq: u64,
}

/// A fixed-capacity map from key to its current window; when full, the
/// window that started first is evicted.
struct WindowTable<K> {
    capacity: usize,
    slots: HashMap<K, Window>,
    /// Keys in the order their windows started, with the window's `seq`;
    /// entries whose window has since been replaced or removed are stale
    /// and skipped.
    order: VecDeque<(K, u64)>,
    next_seq: u64,
}

impl<K: Hash + Eq + Clone> WindowTable<K> {
    fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a window table needs room for one key");
        WindowTable {
            capacity,
            slots: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// The key's window if it has not ended at `now` (an ended one is
    /// dropped).
    fn live(&mut self, key: &K, now: Instant, window: Duration) -> Option<&mut Window> {
        let ended = self
            .slots
            .get(key)
            .is_some_and(|w| now.saturating_duration_since(w.start) >= window);
        if ended {
            self.slots.remove(key);
            return None;
        }
        self.slots.get_mut(key)
    }

    /// The key's live window, or a new one starting at `now`.
    fn entry(&mut self, key: &K, now: Instant, window: Duration) -> &mut Window {
        if self.live(key, now, window).is_none() {
            while self.slots.len() >= self.capacity {
                self.evict_oldest();
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.slots.insert(
                key.clone(),
                Window {
                    start: now,
                    failures: 0,
                    distinct: Vec::new(),
                    seq,
                },
            );
            self.order.push_back((key.clone(), seq));
            if self.order.len() > 2 * self.capacity {
                let slots = &self.slots;
                self.order
                    .retain(|(k, seq)| slots.get(k).is_some_and(|w| w.seq == *seq));
            }
        }
        debug_assert!(self.slots.len() <= self.capacity);
        match self.slots.get_mut(key) {
            Some(window) => window,
            None => unreachable!("the window was just inserted"),
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.slots.get(&key).is_some_and(|w| w.seq == seq) {
                self.slots.remove(&key);
                return;
            }
        }
        // Every live slot has its entry in the queue, so a full table
        // always finds one; an empty queue means an empty table.
        assert!(self.slots.is_empty(), "window table lost track of a key");
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

struct State {
    users: WindowTable<u64>,
    addresses: WindowTable<IpAddr>,
    remembered: WindowTable<[u8; 32]>,
}

/// Remembers failed credentials and limits failed logins (see the module
/// documentation). Shared by every event loop.
pub struct FailureLimiter {
    settings: FailureSettings,
    hasher: RandomState,
    state: Mutex<State>,
}

impl FailureLimiter {
    /// A limiter whose tables hold at most `capacity` windows each.
    pub fn new(settings: FailureSettings, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            settings,
            hasher: RandomState::new(),
            state: Mutex::new(State {
                users: WindowTable::new(capacity),
                addresses: WindowTable::new(capacity),
                remembered: WindowTable::new(capacity),
            }),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> FailureSettings {
        self.settings
    }

    /// Decides what to do with an attempt by `user` from `client` whose
    /// keyed credential hash is `credential`. A [`Admission::Verify`]
    /// counts as a failure for the user and the address (refunded if the
    /// verification succeeds); a [`Admission::KnownBad`] costs nothing and
    /// is not counted again.
    pub fn admit(
        &self,
        user: &str,
        client: IpAddr,
        credential: &[u8; 32],
        now: Instant,
    ) -> Admission {
        let FailureSettings {
            failures_max,
            failure_window: window,
        } = self.settings;
        let client = network(client);
        let user_key = self.hasher.hash_one(user);
        let address_key = self.hasher.hash_one(client);
        let Ok(mut state) = self.state.lock() else {
            // A panic elsewhere poisoned the lock: verify, as before
            // limiting existed.
            return Admission::Verify;
        };
        if failures_max > 0 {
            let mut retry_after = None;
            if let Some(w) = state.users.live(&user_key, now, window) {
                if w.failures >= failures_max {
                    retry_after =
                        Some(window.saturating_sub(now.saturating_duration_since(w.start)));
                }
            }
            if let Some(w) = state.addresses.live(&client, now, window) {
                if w.failures >= failures_max {
                    let left = window.saturating_sub(now.saturating_duration_since(w.start));
                    retry_after = Some(retry_after.map_or(left, |r: Duration| r.max(left)));
                }
            }
            if let Some(retry_after) = retry_after {
                LOGINS_REFUSED.fetch_add(1, Ordering::Relaxed);
                return Admission::Limited { retry_after };
            }
        }
        if state.remembered.live(credential, now, window).is_some() {
            return Admission::KnownBad;
        }
        let by_user = count_failure(&mut state.users, user_key, address_key, now, window);
        let by_address = count_failure(&mut state.addresses, client, user_key, now, window);
        if failures_max > 0 && by_user.0 == failures_max {
            log::warn!(
                "htpasswd: {} failed logins for user {:?} from {} addresses in the last {}; refusing more until the window ends",
                by_user.0,
                printable(user),
                distinct_text(by_user.1),
                humantime::format_duration(window)
            );
        }
        if failures_max > 0 && by_address.0 == failures_max {
            log::warn!(
                "htpasswd: {} failed logins from {client} for {} users in the last {}; refusing more until the window ends",
                by_address.0,
                distinct_text(by_address.1),
                humantime::format_duration(window)
            );
        }
        Admission::Verify
    }

    /// Reports the outcome of a verification [`FailureLimiter::admit`]
    /// allowed: a success gives back the failure it was counted as, a
    /// failure is remembered.
    pub fn verified(
        &self,
        user: &str,
        client: IpAddr,
        credential: &[u8; 32],
        good: bool,
        now: Instant,
    ) {
        let window = self.settings.failure_window;
        let client = network(client);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if good {
            let user_key = self.hasher.hash_one(user);
            if let Some(w) = state.users.live(&user_key, now, window) {
                w.failures = w.failures.saturating_sub(1);
            }
            if let Some(w) = state.addresses.live(&client, now, window) {
                w.failures = w.failures.saturating_sub(1);
            }
        } else {
            state.remembered.entry(credential, now, window);
            let user_key = self.hasher.hash_one(user);
            note_party(&mut state.users, &user_key, self.hasher.hash_one(client));
            note_party(&mut state.addresses, &client, user_key);
        }
    }

    /// Windows held per table (users, addresses, remembered credentials).
    pub fn table_sizes(&self) -> (usize, usize, usize) {
        match self.state.lock() {
            Ok(s) => (s.users.len(), s.addresses.len(), s.remembered.len()),
            Err(_) => (0, 0, 0),
        }
    }
}

/// The address failures are counted under: IPv4 (and IPv4-mapped IPv6)
/// as is, IPv6 by its /64 prefix.
fn network(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Counts one failure (or verification under way) for `key`, with `other`
/// as the party it came from or went to; returns the window's failures and
/// the distinct parties that failed, counting `other` as one.
fn count_failure<K: Hash + Eq + Clone>(
    table: &mut WindowTable<K>,
    key: K,
    other: u64,
    now: Instant,
    window: Duration,
) -> (u32, usize) {
    let w = table.entry(&key, now, window);
    w.failures = w.failures.saturating_add(1);
    let parties = w.distinct.len() + usize::from(!w.distinct.contains(&other));
    (w.failures, parties.min(DISTINCT_MAX))
}

/// Records `other` among the parties of `key`'s window that failed (a
/// success is not a party to a burst).
fn note_party<K: Hash + Eq>(table: &mut WindowTable<K>, key: &K, other: u64) {
    if let Some(w) = table.slots.get_mut(key) {
        if w.distinct.len() < DISTINCT_MAX && !w.distinct.contains(&other) {
            w.distinct.push(other);
        }
    }
}

fn distinct_text(count: usize) -> String {
    if count >= DISTINCT_MAX {
        format!("at least {count}")
    } else {
        count.to_string()
    }
}

/// A user name for a log line: at most 64 characters, no control
/// characters (the name is whatever the client sent).
fn printable(user: &str) -> String {
    user.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn cred(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn limiter(max: u32) -> FailureLimiter {
        FailureLimiter::new(
            FailureSettings {
                failures_max: max,
                failure_window: Duration::from_secs(60),
            },
            TABLE_ENTRIES_MAX,
        )
    }

    /// Fails `n` distinct credentials for `user` from `client`, reporting
    /// each verification as failed.
    fn fail(l: &FailureLimiter, user: &str, client: IpAddr, first: u8, n: u8, now: Instant) {
        for i in first..first + n {
            assert_eq!(l.admit(user, client, &cred(i), now), Admission::Verify);
            l.verified(user, client, &cred(i), false, now);
        }
    }

    #[test]
    fn the_defaults_are_ten_a_minute() {
        let s = FailureSettings::default();
        assert_eq!(
            (s.failures_max, s.failure_window),
            (10, Duration::from_secs(60))
        );
    }

    #[test]
    fn a_failed_credential_is_remembered_for_the_window() {
        let l = limiter(100);
        let t0 = Instant::now();
        assert_eq!(l.admit("u", A, &cred(1), t0), Admission::Verify);
        l.verified("u", A, &cred(1), false, t0);
        assert_eq!(
            l.admit("u", A, &cred(1), t0 + Duration::from_secs(59)),
            Admission::KnownBad
        );
        assert_eq!(
            l.admit("u", B, &cred(2), t0),
            Admission::Verify,
            "another credential"
        );
        assert_eq!(
            l.admit("u", A, &cred(1), t0 + Duration::from_secs(60)),
            Admission::Verify,
            "forgotten after the window"
        );
    }

    #[test]
    fn a_user_past_the_limit_is_refused_from_any_address_until_the_window_ends() {
        let l = limiter(3);
        let t0 = Instant::now();
        fail(&l, "alice", A, 0, 2, t0);
        fail(&l, "alice", B, 10, 1, t0 + Duration::from_secs(10));
        let refused_before = LOGINS_REFUSED.load(Ordering::Relaxed);
        assert_eq!(
            l.admit(
                "alice",
                IpAddr::from([198, 51, 100, 7]),
                &cred(20),
                t0 + Duration::from_secs(20)
            ),
            Admission::Limited {
                retry_after: Duration::from_secs(40)
            }
        );
        assert!(LOGINS_REFUSED.load(Ordering::Relaxed) > refused_before);
        // Another user from a fresh address is not affected.
        assert_eq!(
            l.admit("bob", IpAddr::from([198, 51, 100, 8]), &cred(21), t0),
            Admission::Verify
        );
        // The window started at the first failure; after it, attempts run again.
        assert_eq!(
            l.admit(
                "alice",
                IpAddr::from([198, 51, 100, 7]),
                &cred(22),
                t0 + Duration::from_secs(60)
            ),
            Admission::Verify
        );
    }

    #[test]
    fn an_address_past_the_limit_is_refused_for_every_user() {
        let l = limiter(3);
        let t0 = Instant::now();
        for (i, user) in ["a", "b", "c"].iter().enumerate() {
            fail(&l, user, A, i as u8, 1, t0);
        }
        assert!(matches!(
            l.admit("d", A, &cred(9), t0),
            Admission::Limited { .. }
        ));
        assert_eq!(
            l.admit("d", B, &cred(9), t0),
            Admission::Verify,
            "other addresses still verify"
        );
    }

    #[test]
    fn repeated_known_bad_credentials_cost_nothing_and_are_not_counted_again() {
        let l = limiter(3);
        let t0 = Instant::now();
        fail(&l, "u", A, 1, 1, t0);
        // A client polling with the same wrong password is not locked out.
        for _ in 0..20 {
            assert_eq!(l.admit("u", A, &cred(1), t0), Admission::KnownBad);
        }
        fail(&l, "u", A, 2, 2, t0);
        // Three verifications failed: now everything is refused.
        assert!(matches!(
            l.admit("u", A, &cred(1), t0),
            Admission::Limited { .. }
        ));
    }

    #[test]
    fn concurrent_attempts_cannot_overshoot_and_a_success_is_refunded() {
        let l = limiter(3);
        let t0 = Instant::now();
        // Three verifications start before any finishes: the fourth is refused.
        for i in 0..3 {
            assert_eq!(l.admit("u", A, &cred(i), t0), Admission::Verify);
        }
        assert!(matches!(
            l.admit("u", A, &cred(3), t0),
            Admission::Limited { .. }
        ));
        // One of them was the right password: its count is given back.
        l.verified("u", A, &cred(0), true, t0);
        assert_eq!(l.admit("u", A, &cred(4), t0), Admission::Verify);
        assert!(matches!(
            l.admit("u", A, &cred(5), t0),
            Admission::Limited { .. }
        ));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let l = limiter(2);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        fail(&l, "x", a, 0, 1, t0);
        fail(&l, "y", b, 1, 1, t0);
        assert!(matches!(
            l.admit("z", a, &cred(2), t0),
            Admission::Limited { .. }
        ));
        assert_eq!(
            l.admit("z", other, &cred(2), t0),
            Admission::Verify,
            "another /64"
        );
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
        fail(&l, "p", v4, 3, 1, t0);
        fail(&l, "q", mapped, 4, 1, t0);
        assert!(matches!(
            l.admit("r", v4, &cred(5), t0),
            Admission::Limited { .. }
        ));
        assert_eq!(network("192.0.2.10".parse().unwrap()), v4);
    }

    #[test]
    fn a_zero_limit_only_remembers() {
        let l = limiter(0);
        let t0 = Instant::now();
        fail(&l, "u", A, 0, 50, t0);
        assert_eq!(l.admit("u", A, &cred(0), t0), Admission::KnownBad);
    }

    #[test]
    fn tables_are_bounded_and_evict_the_oldest_window() {
        let l = FailureLimiter::new(
            FailureSettings {
                failures_max: 2,
                failure_window: Duration::from_secs(60),
            },
            4,
        );
        let t0 = Instant::now();
        // The first address reaches its limit, then four more addresses
        // arrive later: the first (oldest) window is evicted.
        fail(&l, "u0", A, 0, 2, t0);
        assert!(matches!(
            l.admit("x", A, &cred(100), t0),
            Admission::Limited { .. }
        ));
        for i in 1..=4u8 {
            let at = t0 + Duration::from_secs(u64::from(i));
            fail(
                &l,
                &format!("u{i}"),
                IpAddr::from([10, 0, 0, i]),
                i * 10,
                1,
                at,
            );
        }
        let (users, addresses, remembered) = l.table_sizes();
        assert!(
            users <= 4 && addresses <= 4 && remembered <= 4,
            "{users} {addresses} {remembered}"
        );
        assert_eq!(
            l.admit("x", A, &cred(101), t0 + Duration::from_secs(5)),
            Admission::Verify,
            "the oldest window was evicted"
        );
        // Many keys replacing each other keep the bookkeeping bounded.
        let mut table = WindowTable::new(4);
        for round in 0..1000u64 {
            table.entry(
                &(round % 7),
                t0 + Duration::from_secs(round),
                Duration::from_secs(1),
            );
            assert!(table.len() <= 4 && table.order.len() <= 8);
        }
    }
}
