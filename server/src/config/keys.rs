//! The table of configuration keys: for each key its path, parser, default,
//! whether it is secret, whose key it is (registry:2's or berth's own) and
//! one line of documentation. The known-key check, the typed parse, the
//! effective configuration of `berth config check` and the README's table
//! all come from [`KEYS`]; adding a key is one entry here plus its use in
//! the section that reads it.

use std::fmt::Write as _;

/// How a key's value is parsed (and shown in the effective configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A string (a YAML number is taken as its text); empty means unset.
    Text,
    /// A list of strings: a YAML sequence, a single string, or a map of
    /// indexes (from `REGISTRY_..._0`-style variables).
    List,
    /// A Go-style duration (`30s`, `1m30s`, `0`).
    Duration,
    /// Whole milliseconds from 1 to 86,400,000.
    Millis,
    /// An integer within `min..=max`.
    Int {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A byte size (`512MiB`, `200GB`, `1073741824`).
    Size,
    /// A listen address (`:5000`, `127.0.0.1:5000`, `[::1]:5000`).
    Addr,
    /// One of a fixed set of words: `(accepted, canonical)` pairs and the
    /// expected forms for the error message.
    Choice(&'static [(&'static str, &'static str)], &'static str),
}

/// Whose key it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A registry:2 key with registry:2's meaning.
    Registry2,
    /// berth's own (marked "(berth)" in the README).
    Berth,
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// The dotted path in config.yml, lower case.
    pub path: &'static str,
    /// The parser.
    pub kind: Kind,
    /// The default in config.yml syntax, parsed like a configured value;
    /// `None`: unset.
    pub default: Option<&'static str>,
    /// The README's default column for this key (Markdown) when the
    /// default is not simply `` `default` `` or "unset".
    pub shown: Option<&'static str>,
    /// Masked in the effective configuration.
    pub secret: bool,
    /// registry:2's key or berth's own.
    pub origin: Origin,
    /// The README row's meaning, on the first key of a row; `None`: the
    /// key shares the row of the key before it.
    pub doc: Option<&'static str>,
}

impl Key {
    /// A registry:2 key, unset by default, starting its own row.
    const fn new(path: &'static str, kind: Kind, doc: &'static str) -> Key {
        Key {
            path,
            kind,
            default: None,
            shown: None,
            secret: false,
            origin: Origin::Registry2,
            doc: Some(doc),
        }
    }

    /// A key on the same README row as the one before it.
    const fn more(path: &'static str, kind: Kind) -> Key {
        Key {
            path,
            kind,
            default: None,
            shown: None,
            secret: false,
            origin: Origin::Registry2,
            doc: None,
        }
    }

    const fn default(mut self, value: &'static str) -> Key {
        self.default = Some(value);
        self
    }

    const fn shown(mut self, markdown: &'static str) -> Key {
        self.shown = Some(markdown);
        self
    }

    const fn secret(mut self) -> Key {
        self.secret = true;
        self
    }

    const fn berth(mut self) -> Key {
        self.origin = Origin::Berth;
        self
    }

    /// The `REGISTRY_*` variable that sets this key (lists: their first item).
    pub fn env(&self) -> String {
        let mut name = format!(
            "REGISTRY_{}",
            self.path.replace('.', "_").to_ascii_uppercase()
        );
        if self.kind == Kind::List {
            name.push_str("_0");
        }
        name
    }

    /// The README's default column for this key.
    pub fn default_markdown(&self) -> String {
        match (self.shown, self.default) {
            (Some(shown), _) => shown.to_owned(),
            (None, Some(value)) => format!("`{value}`"),
            (None, None) => "unset".to_owned(),
        }
    }
}

const DRIVERS: Kind = Kind::Choice(
    &[
        ("auto", "auto"),
        ("io_uring", "io_uring"),
        ("iouring", "io_uring"),
        ("poll", "poll"),
        ("epoll", "poll"),
    ],
    "auto, io_uring or poll",
);
const FORMATTERS: Kind = Kind::Choice(
    &[
        ("", "text"),
        ("text", "text"),
        ("json", "json"),
        ("logstash", "json"),
    ],
    "text or json",
);
const LEVELS: Kind = Kind::Choice(
    &[
        ("error", "error"),
        ("warn", "warn"),
        ("info", "info"),
        ("debug", "debug"),
        ("trace", "trace"),
    ],
    "error, warn, info or debug",
);
const CLIENT_AUTH: Kind = Kind::Choice(
    &[
        ("", "require-and-verify-client-cert"),
        (
            "require-and-verify-client-cert",
            "require-and-verify-client-cert",
        ),
        ("verify-client-cert-if-given", "verify-client-cert-if-given"),
    ],
    "require-and-verify-client-cert or verify-client-cert-if-given",
);
const TLS_VERSIONS: Kind = Kind::Choice(
    &[("", "tls1.2"), ("tls1.2", "tls1.2"), ("tls1.3", "tls1.3")],
    "tls1.2 or tls1.3 (older versions are not offered)",
);
const COUNT: Kind = Kind::Int {
    min: 1,
    max: 1 << 20,
};

/// Every key berth reads, in the README's order.
#[rustfmt::skip] // one key per line, so the table reads as a table
pub const KEYS: &[Key] = &[
    Key::new("version", Kind::Text, "the configuration format version (`0.1`); read and ignored, as registry:2 does").default("0.1"),
    Key::new("http.addr", Kind::Addr, "listen address (`:PORT` = every interface)").default(":5000"),
    Key::new("http.host", Kind::Text, "public base URL for `Location` headers (else `X-Forwarded-Proto`/`X-Forwarded-Host`/`Host`)"),
    Key::new("http.relativeurls", Kind::Bool, "send `Location` as a path").default("false"),
    Key::new("http.secret", Kind::Text, "signs upload state in `Location` URLs; give every node behind a load balancer the same one").shown("generated, kept in the data directory").secret(),
    Key::new("http.draintimeout", Kind::Duration, "on SIGTERM/SIGINT, how long in-flight requests may finish").default("30s"),
    Key::new("http.tls.certificate", Kind::Text, "serve HTTPS; the certificate file may hold the chain (leaf, then intermediates); PKCS#8, RSA and EC keys; re-read on change or SIGHUP"),
    Key::more("http.tls.key", Kind::Text),
    Key::new("http.tls.letsencrypt.cachefile", Kind::Text, "obtain and renew the certificate over ACME (TLS-ALPN-01 on berth's own port; Let's Encrypt by default); account and certificate kept in the cache file; `.directoryca` (berth) trusts a private ACME server's CA"),
    Key::more("http.tls.letsencrypt.email", Kind::Text),
    Key::more("http.tls.letsencrypt.hosts", Kind::List),
    Key::more("http.tls.letsencrypt.directoryurl", Kind::Text),
    Key::more("http.tls.letsencrypt.directoryca", Kind::Text).berth(),
    Key::new("http.tls.clientcas", Kind::List, "mutual TLS (`verify-client-cert-if-given` also accepted)"),
    Key::more("http.tls.clientauth", CLIENT_AUTH).default("require-and-verify-client-cert"),
    Key::new("http.tls.minimumtls", TLS_VERSIONS, "`tls1.3` to refuse 1.2; IANA suite names").default("tls1.2"),
    Key::more("http.tls.ciphersuites", Kind::List).shown("rustls defaults"),
    Key::new("http.trustedproxies", Kind::List, "proxies whose `X-Forwarded-For` names the logged client").shown("none").berth(),
    Key::new("http.limits.headbytesmax", COUNT, "largest request head (431 past it)").default("16384").berth(),
    Key::new("http.limits.headersmax", Kind::Int { min: 1, max: 1024 }, "most header fields in a request (431 past it)").default("100").berth(),
    Key::new("http.limits.targetbytesmax", COUNT, "longest request-target (414 past it)").default("8192").berth(),
    Key::new("http.limits.headreadtimeoutms", Kind::Millis, "a request head must arrive within this (408)").default("30000").berth(),
    Key::new("http.limits.idletimeoutms", Kind::Millis, "idle keep-alive connections are closed after this").default("120000").berth(),
    Key::new("http.limits.bodyprogresstimeoutms", Kind::Millis, "a request body with no progress for this long is cut").default("60000").berth(),
    Key::new("http.limits.connectionsperloopmax", COUNT, "open connections per event loop").default("16384").berth(),
    Key::new("http.limits.uploadsessionsmax", Kind::Int { min: 1, max: 1 << 24 }, "open upload sessions in all; past it a new upload gets 429 `TOOMANYREQUESTS`").default("10000").berth(),
    Key::new("http.limits.uploadsessionsperclientmax", Kind::Int { min: 1, max: 1 << 24 }, "open upload sessions per user (or client address when anonymous); at most `uploadsessionsmax`").default("1000").berth(),
    Key::new("http.limits.descriptorsreserved", Kind::Int { min: 0, max: 1 << 20 }, "descriptors kept free below RLIMIT_NOFILE: a connection accepted within this margin gets 503 `UNAVAILABLE` (at most a quarter of the limit is kept)").default("32").berth(),
    Key::new("http.limits.discardbodybytesmax", Kind::Int { min: 0, max: 1 << 30 }, "bytes of an unread request body drained after an early answer (401, 404, ...); past it the connection is closed").default("65536").berth(),
    Key::new("http.limits.bodybytespersecondmin", Kind::Int { min: 0, max: 1 << 40 }, "a request body averaging less than this rate (bytes per second; `0` = off) over the window is cut (the upload keeps what arrived)").default("1024").berth(),
    Key::more("http.limits.bodyratewindowms", Kind::Millis).default("30000").berth(),
    Key::new("http.debug.addr", Kind::Addr, "the debug listener (`/debug/health`, `/debug/metrics`); `/debug/*` is never served on the public port"),
    Key::new("http.debug.prometheus.enabled", Kind::Bool, "also serve the metrics at this path on the debug listener").default("false"),
    Key::more("http.debug.prometheus.path", Kind::Text).default("/metrics"),
    Key::new("auth.htpasswd.realm", Kind::Text, "bcrypt basic auth; the file is re-read when it changes").shown("unset (anonymous)"),
    Key::more("auth.htpasswd.path", Kind::Text).shown("unset (anonymous)"),
    Key::new("auth.htpasswd.failuresmax", Kind::Int { min: 0, max: 1_000_000 }, "failed logins allowed per user and per client address within the window (`0` = no limit); further attempts get 429 without running bcrypt").default("10").berth(),
    Key::more("auth.htpasswd.failurewindow", Kind::Duration).default("1m").berth(),
    Key::new("auth.token.realm", Kind::Text, "bearer tokens (RS256, ES256, EdDSA JWTs) from an external token service; keys from the certificate bundle (by registry:2's libtrust `kid`, or an `x5c` chain to a bundle certificate) or a JWK set (by `kid`); each request needs its scopes (`repository:NAME:pull,push,delete`, `registry:catalog:*`)"),
    Key::more("auth.token.service", Kind::Text),
    Key::more("auth.token.issuer", Kind::Text),
    Key::more("auth.token.rootcertbundle", Kind::Text),
    Key::more("auth.token.jwks", Kind::Text),
    Key::more("auth.token.signingalgorithms", Kind::List),
    Key::new("storage.filesystem.rootdirectory", Kind::Text, "data directory").default("/var/lib/registry"),
    Key::new("storage.delete.enabled", Kind::Bool, "allow deleting manifests, tags and blobs (else 405 `UNSUPPORTED`)").default("false"),
    Key::new("storage.maintenance.uploadpurging.enabled", Kind::Bool, "remove upload sessions idle longer than `age`").default("true"),
    Key::more("storage.maintenance.uploadpurging.age", Kind::Duration).default("168h"),
    Key::more("storage.maintenance.uploadpurging.interval", Kind::Duration).default("24h"),
    Key::more("storage.maintenance.uploadpurging.dryrun", Kind::Bool).default("false"),
    Key::new("storage.gc.interval", Kind::Duration, "online garbage collection while serving; blobs linked more recently than the grace period are kept so pushes in flight are safe").shown("off").berth(),
    Key::more("storage.gc.graceperiod", Kind::Duration).default("1h").berth(),
    Key::more("storage.gc.deleteuntagged", Kind::Bool).default("false").berth(),
    Key::new("health.storagedriver.enabled", Kind::Bool, "the storage probe (writes and syncs a record), run in the background; unhealthy after `threshold` failures in a row").default("true"),
    Key::more("health.storagedriver.interval", Kind::Duration).default("10s"),
    Key::more("health.storagedriver.threshold", Kind::Int { min: 1, max: 1_000_000 }).default("3"),
    Key::new("health.storagedriver.freebytesmin", Kind::Size, "unhealthy when the data directory's file system has less free space (`512MiB`, `2GB`, bytes)").default("512MiB").berth(),
    Key::new("log.level", LEVELS, "`error`, `warn`, `info`, `debug`").default("info"),
    Key::new("log.formatter", FORMATTERS, "`text` or `json` (one object per line)").default("text"),
    Key::new("log.accesslog.disabled", Kind::Bool, "the one-line-per-request access log (client, user, method, target, status, bytes, time; an error response adds its spec code, `error=BLOB_UNKNOWN`, or `\"error\"` in JSON)").default("false"),
    Key::new("runtime.driver", DRIVERS, "`auto` (io_uring, else epoll), `io_uring`, or `poll` to force the epoll fallback").default("auto").berth(),
    Key::new("runtime.threads", Kind::Int { min: 0, max: 1024 }, "event loops; `0` = one per core").default("0").berth(),
    Key::new("proxy.remoteurl", Kind::Text, "run as a pull-through cache of this registry (see below)"),
    Key::new("proxy.username", Kind::Text, "credentials for the upstream: sent to its token service (Bearer challenge) or as Basic auth"),
    Key::more("proxy.password", Kind::Text).secret(),
    Key::new("proxy.ttl", Kind::Duration, "cached blobs and manifests not pulled for this long are evicted (counted from the last pull, never while one is in flight); `0` keeps them").default("168h"),
    Key::new("proxy.tagttl", Kind::Duration, "a cached tag is trusted this long, then revalidated with a HEAD upstream").default("60s").berth(),
    Key::new("proxy.maxsize", Kind::Size, "evict least recently pulled content while the cache holds more than this (`500GiB`, `200GB`, bytes)").default("0").shown("`0` (no limit)").berth(),
    Key::new("proxy.evictioninterval", Kind::Duration, "how often eviction runs").default("1m").berth(),
    Key::new("proxy.localprefix", Kind::Text, "repositories under this prefix (e.g. `local`) are ordinary local repositories: pushable, never fetched upstream").berth(),
    Key::new("proxy.remoteca", Kind::Text, "extra PEM CA certificates to trust for an https upstream").shown("system CAs").berth(),
];

/// The key at `path`, if berth reads it.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Sections whose value may be a single word choosing one of their
/// subsections (`REGISTRY_AUTH=htpasswd`).
const SELECTORS: &[&str] = &["auth"];

/// The README's configuration table, in Markdown: one row per group of
/// keys, `(berth)` after berth's own keys.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | env | default | meaning |\n| --- | --- | --- | --- |\n");
    let mut rows: Vec<Vec<&Key>> = Vec::new();
    for key in KEYS {
        match rows.last_mut() {
            Some(row) if key.doc.is_none() => row.push(key),
            _ => rows.push(vec![key]),
        }
    }
    for row in rows {
        let first = row[0];
        let all_berth = row.iter().all(|k| k.origin == Origin::Berth);
        let parent = first.path.rsplit_once('.').map_or("", |(p, _)| p);
        let mut keys = Vec::new();
        for (i, key) in row.iter().enumerate() {
            let name = match key.path.strip_prefix(parent) {
                Some(rest) if i > 0 && !parent.is_empty() => format!("`{rest}`"),
                _ => format!("`{}`", key.path),
            };
            let mark = if key.origin == Origin::Berth && !all_berth {
                " (berth)"
            } else {
                ""
            };
            keys.push(format!("{name}{mark}"));
        }
        let mut keys = keys.join(", ");
        if all_berth {
            keys.push_str(" (berth)");
        }
        let mut envs: Vec<String> = SELECTORS
            .iter()
            .filter_map(|s| {
                let rest = first.path.strip_prefix(s)?.strip_prefix('.')?;
                let kind = rest.split('.').next()?;
                Some(format!("`REGISTRY_{}={kind}`", s.to_ascii_uppercase()))
            })
            .collect();
        envs.extend(row.iter().take(2).map(|k| format!("`{}`", k.env())));
        if row.len() > 2 {
            envs.push("...".into());
        }
        let defaults: Vec<String> = row.iter().map(|k| k.default_markdown()).collect();
        let default = if defaults.iter().all(|d| *d == defaults[0]) {
            defaults[0].clone()
        } else {
            defaults.join(", ")
        };
        let _ = writeln!(
            out,
            "| {keys} | {} | {default} | {} |",
            envs.join(", "),
            first.doc.unwrap_or("")
        );
    }
    out
}
