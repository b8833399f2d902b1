//! Crash consistency: concurrent pushers, `kill -9` at a random instant,
//! restart on the same data, and check that nothing acknowledged was lost
//! and nothing torn is visible. Repeated for many iterations; the state
//! accumulates, so data from every earlier iteration must survive too.
//!
//! Each iteration: `WORKERS` threads push random blobs (monolithic
//! `POST ?digest=`, `POST`+`PATCH`…+`PUT` in chunks, cross-repository
//! mounts; 0 B to ~3 MiB), manifests (images and indexes, by tag or by
//! digest, tag moves) and tag deletes into a few repositories. An operation
//! enters the model only when it was acknowledged (201/202). Every tag is
//! owned by one worker, so "the last acknowledged write" is well defined.
//! After 10–400 ms the server is SIGKILLed; what each worker had in flight
//! is kept. After the restart:
//!
//! * in-flight writes are resolved: an in-flight blob or manifest may be
//!   there or not (if there, byte-exact); an in-flight tag write leaves the
//!   tag at its previous value or the new one; an interrupted chunked
//!   upload whose session was acknowledged is resumed from the offset the
//!   server reports (not below what it acknowledged) and finished;
//! * every acknowledged tag names exactly its last manifest; `tags/list`
//!   equals the model; `_catalog` lists every repository with content;
//! * every acknowledged manifest is byte-exact by digest and everything it
//!   references is there;
//! * every acknowledged blob answers HEAD with its size; the blobs of this
//!   iteration plus a sample of older ones (all of them in the last
//!   iteration) are read back whole: `Docker-Content-Digest`, sha256 of
//!   the body and the bytes themselves must match.
//!
//! Only the HTTP API and the process are used (no reading of data files).
//!
//! Knobs: `BERTH_CRASH_ITERATIONS` (default 15), `BERTH_CRASH_SEED`
//! (decimal or 0x-hex; printed at start), `BERTH_CRASH_WORKERS` (default 6).
//! A failure prints the seed and the path of an operation log. The seed
//! fixes every worker's choices and the kill delays; thread timing is not
//! reproducible, so a failure may need a few runs with the same seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::durability::{
    absolute, agent, blob_bytes, first_difference, image_index, image_manifest, references,
    seed_from_env, sha256_digest, try_request, with_query, Rng, TransportError,
};
use berth_tests::http::{HttpResponse, ACCEPT_MANIFESTS};
use berth_tests::registry::{Registry, RegistryCommand};
use berth_tests::step;

const REPOS: [&str; 3] = ["crash/alpha", "crash/beta", "crash/gamma/deep"];
const TAGS_PER_WORKER: u64 = 3;
const DEFAULT_ITERATIONS: usize = 15;
const DEFAULT_WORKERS: usize = 6;
/// Older blobs read back in full per iteration (besides the new ones).
const SAMPLE_OLD_BLOBS: usize = 24;

fn env_usize(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => t
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={t:?} is not a number: {e}")),
        _ => default,
    }
}

#[derive(Clone, Copy, Debug)]
struct BlobSpec {
    seed: u64,
    size: usize,
}

type Key = (String, String);

fn key(repo: &str, x: &str) -> Key {
    (repo.to_string(), x.to_string())
}

/// What the registry must hold: only acknowledged writes (and in-flight
/// writes that turned out to have landed, once seen after a restart).
#[derive(Default)]
struct Model {
    /// (repo, digest) -> content.
    blobs: BTreeMap<Key, BlobSpec>,
    /// (repo, digest) -> manifest bytes.
    manifests: BTreeMap<Key, Vec<u8>>,
    /// (repo, tag) -> manifest digest, or None once deleted.
    tags: BTreeMap<Key, Option<String>>,
    /// Blobs acknowledged since the last crash (read back in full).
    fresh_blobs: BTreeSet<Key>,
    acked_ops: u64,
    acked_bytes: u64,
}

/// A chunked upload session whose creation was acknowledged.
#[derive(Clone, Debug)]
struct Session {
    location: String,
    /// Bytes the server had acknowledged (last 202's Range).
    acked_len: usize,
    /// The final PUT had been sent (the session may be committed).
    finishing: bool,
}

/// A write that was sent but not acknowledged when the server died.
#[derive(Clone, Debug)]
enum InFlight {
    Blob {
        repo: String,
        digest: String,
        spec: BlobSpec,
        how: &'static str,
        session: Option<Session>,
    },
    Manifest {
        repo: String,
        reference: String,
        tag: Option<String>,
        digest: String,
        bytes: Vec<u8>,
    },
    TagDelete {
        repo: String,
        tag: String,
    },
}

struct Shared {
    model: Mutex<Model>,
    violations: Mutex<Vec<String>>,
    oplog: Mutex<File>,
    stop: AtomicBool,
    base: String,
}

impl Shared {
    fn violation(&self, what: String) {
        self.log(&format!("VIOLATION {what}"));
        self.violations.lock().unwrap().push(what);
    }

    fn log(&self, line: &str) {
        let _ = writeln!(self.oplog.lock().unwrap(), "{line}");
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(19)]
}

fn describe(r: &HttpResponse) -> String {
    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned();
    format!("{} {text}", r.status)
}

/// Outcome of one request during the push phase.
enum Sent {
    Answer(HttpResponse),
    /// No (complete) answer: the server is gone.
    Lost(TransportError),
}

struct Worker {
    id: usize,
    iteration: usize,
    rng: Rng,
    agent: ureq::Agent,
    shared: Arc<Shared>,
    ops: u64,
}

impl Worker {
    fn send(&self, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Sent {
        match try_request(&self.agent, method, url, headers, body) {
            Ok(r) => Sent::Answer(r),
            Err(e) => Sent::Lost(e),
        }
    }

    fn log(&self, line: String) {
        self.shared
            .log(&format!("it{} w{} {line}", self.iteration, self.id));
    }

    fn unexpected(&self, what: &str, r: &HttpResponse) {
        self.shared.violation(format!(
            "iteration {} worker {}: {what}: unexpected answer {}",
            self.iteration,
            self.id,
            describe(r)
        ));
    }

    /// Runs operations until the stop flag is set or the server stops
    /// answering; returns what was in flight then.
    fn run(mut self) -> Option<InFlight> {
        while !self.shared.stop.load(Ordering::SeqCst) {
            let repo = *self.rng.pick(&REPOS);
            let roll = self.rng.range(0, 99);
            let result = if roll < 55 {
                self.push_blob(repo)
            } else if roll < 93 {
                self.push_manifest(repo)
            } else {
                self.delete_tag(repo)
            };
            self.ops += 1;
            if let Err(inflight) = result {
                return Some(inflight);
            }
        }
        None
    }

    fn blob_size(&mut self) -> usize {
        match self.rng.range(0, 99) {
            0..=4 => 0,
            5..=34 => self.rng.range(1, 1024) as usize,
            35..=74 => self.rng.range(1025, 64 * 1024) as usize,
            75..=91 => self.rng.range(64 * 1024 + 1, 1024 * 1024) as usize,
            _ => self.rng.range(1024 * 1024 + 1, 3 * 1024 * 1024) as usize,
        }
    }

    fn ack_blob(&self, repo: &str, digest: &str, spec: BlobSpec) {
        let mut m = self.shared.model.lock().unwrap();
        m.blobs.insert(key(repo, digest), spec);
        m.fresh_blobs.insert(key(repo, digest));
        m.acked_ops += 1;
        m.acked_bytes += spec.size as u64;
    }

    fn push_blob(&mut self, repo: &str) -> Result<(), InFlight> {
        let base = self.shared.base.clone();
        let roll = self.rng.range(0, 99);
        if roll < 10 {
            // Cross-repository mount of a blob acknowledged elsewhere.
            let source = {
                let m = self.shared.model.lock().unwrap();
                let candidates: Vec<(Key, BlobSpec)> = m
                    .blobs
                    .iter()
                    .filter(|((r, _), _)| r != repo)
                    .map(|(k, s)| (k.clone(), *s))
                    .collect();
                if candidates.is_empty() {
                    None
                } else {
                    Some(self.rng.pick(&candidates).clone())
                }
            };
            if let Some(((from, digest), spec)) = source {
                let url = format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
                let inflight = InFlight::Blob {
                    repo: repo.into(),
                    digest: digest.clone(),
                    spec,
                    how: "mount",
                    session: None,
                };
                return match self.send("POST", &url, &[], None) {
                    Sent::Answer(r) if r.status == 201 => {
                        self.log(format!("mount {repo} {} from {from}: 201", short(&digest)));
                        self.ack_blob(repo, &digest, spec);
                        Ok(())
                    }
                    Sent::Answer(r) => {
                        self.unexpected(
                            &format!("mount {digest} from {from} (acknowledged there) into {repo}"),
                            &r,
                        );
                        Ok(())
                    }
                    Sent::Lost(e) if e.status == Some(201) => {
                        self.ack_blob(repo, &digest, spec);
                        Ok(())
                    }
                    Sent::Lost(_) => Err(inflight),
                };
            }
        }
        let spec = BlobSpec {
            seed: self.rng.next_u64(),
            size: self.blob_size(),
        };
        let data = blob_bytes(spec.seed, spec.size);
        let digest = sha256_digest(&data);
        if roll < 55 {
            let inflight = InFlight::Blob {
                repo: repo.into(),
                digest: digest.clone(),
                spec,
                how: "monolithic",
                session: None,
            };
            let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}");
            match self.send(
                "POST",
                &url,
                &[("Content-Type", "application/octet-stream")],
                Some(&data),
            ) {
                Sent::Answer(r) if r.status == 201 => {
                    if r.header("Docker-Content-Digest") != Some(digest.as_str()) {
                        self.unexpected(
                            &format!("monolithic {repo} {digest}: wrong Docker-Content-Digest"),
                            &r,
                        );
                    }
                    self.log(format!(
                        "blob {repo} {} {}B monolithic: 201",
                        short(&digest),
                        spec.size
                    ));
                    self.ack_blob(repo, &digest, spec);
                    Ok(())
                }
                Sent::Answer(r) => {
                    self.unexpected(
                        &format!("monolithic upload of {digest} ({} B) to {repo}", spec.size),
                        &r,
                    );
                    Ok(())
                }
                Sent::Lost(e) if e.status == Some(201) => {
                    self.ack_blob(repo, &digest, spec);
                    Ok(())
                }
                Sent::Lost(_) => Err(inflight),
            }
        } else {
            self.push_chunked(repo, spec, &data, &digest)
        }
    }

    fn push_chunked(
        &mut self,
        repo: &str,
        spec: BlobSpec,
        data: &[u8],
        digest: &str,
    ) -> Result<(), InFlight> {
        let base = self.shared.base.clone();
        let mut inflight = InFlight::Blob {
            repo: repo.into(),
            digest: digest.to_string(),
            spec,
            how: "chunked",
            session: None,
        };
        let start = match self.send(
            "POST",
            &format!("{base}/v2/{repo}/blobs/uploads/"),
            &[],
            None,
        ) {
            Sent::Answer(r) if r.status == 202 => r,
            Sent::Answer(r) => {
                self.unexpected(&format!("starting an upload in {repo}"), &r);
                return Ok(());
            }
            Sent::Lost(_) => return Err(inflight),
        };
        let Some(loc) = start.header("Location") else {
            self.unexpected("upload start without Location", &start);
            return Ok(());
        };
        let mut session = Session {
            location: absolute(&base, loc),
            acked_len: 0,
            finishing: false,
        };
        // 1–4 PATCH chunks; sometimes the last piece goes with the PUT.
        let pieces = self.rng.range(1, 4) as usize;
        let last_in_put = self.rng.chance(40);
        let mut cuts: Vec<usize> = (0..pieces - 1)
            .map(|_| self.rng.range(0, data.len() as u64) as usize)
            .collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort();
        let bounds: Vec<(usize, usize)> = cuts
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|(a, b)| b > a)
            .collect();
        let n = bounds.len();
        for (i, (a, b)) in bounds.iter().copied().enumerate() {
            if last_in_put && i + 1 == n {
                break;
            }
            let range = format!("{a}-{}", b - 1);
            let set = |i: &mut InFlight, s: &Session| {
                if let InFlight::Blob { session, .. } = i {
                    *session = Some(s.clone());
                }
            };
            set(&mut inflight, &session);
            match self.send(
                "PATCH",
                &session.location,
                &[
                    ("Content-Range", &range),
                    ("Content-Type", "application/octet-stream"),
                ],
                Some(&data[a..b]),
            ) {
                Sent::Answer(r) if r.status == 202 => {
                    let want = format!("0-{}", b - 1);
                    if r.header("Range") != Some(want.as_str()) {
                        self.unexpected(&format!("PATCH {range}: Range should be {want}"), &r);
                    }
                    session.acked_len = b;
                    if let Some(l) = r.header("Location") {
                        session.location = absolute(&base, l);
                    }
                }
                Sent::Answer(r) => {
                    self.unexpected(&format!("PATCH {range} of {digest} in {repo}"), &r);
                    return Ok(());
                }
                Sent::Lost(_) => return Err(inflight),
            }
        }
        session.finishing = true;
        if let InFlight::Blob { session: s, .. } = &mut inflight {
            *s = Some(session.clone());
        }
        let url = with_query(&session.location, "digest", digest);
        let body: &[u8] = if last_in_put {
            &data[session.acked_len..]
        } else {
            &[]
        };
        match self.send(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            Some(body),
        ) {
            Sent::Answer(r) if r.status == 201 => {
                if r.header("Docker-Content-Digest") != Some(digest) {
                    self.unexpected(
                        &format!("chunked {repo} {digest}: wrong Docker-Content-Digest"),
                        &r,
                    );
                }
                self.log(format!(
                    "blob {repo} {} {}B chunked({n}{}): 201",
                    short(digest),
                    spec.size,
                    if last_in_put { ", last in PUT" } else { "" }
                ));
                self.ack_blob(repo, digest, spec);
                Ok(())
            }
            Sent::Answer(r) => {
                self.unexpected(
                    &format!(
                        "finishing chunked upload of {digest} ({} B) in {repo}",
                        spec.size
                    ),
                    &r,
                );
                Ok(())
            }
            Sent::Lost(e) if e.status == Some(201) => {
                self.ack_blob(repo, digest, spec);
                Ok(())
            }
            Sent::Lost(_) => Err(inflight),
        }
    }

    fn push_manifest(&mut self, repo: &str) -> Result<(), InFlight> {
        let base = self.shared.base.clone();
        let nonce = format!(
            "it{}-w{}-op{}-{:x}",
            self.iteration,
            self.id,
            self.ops,
            self.rng.next_u64()
        );
        let (blobs, manifests) = {
            let m = self.shared.model.lock().unwrap();
            let blobs: Vec<(String, usize)> = m
                .blobs
                .iter()
                .filter(|((r, _), _)| r == repo)
                .map(|((_, d), s)| (d.clone(), s.size))
                .collect();
            let manifests: Vec<(String, usize)> = m
                .manifests
                .iter()
                .filter(|((r, _), _)| r == repo)
                .map(|((_, d), b)| (d.clone(), b.len()))
                .collect();
            (blobs, manifests)
        };
        if blobs.is_empty() {
            return self.push_blob(repo);
        }
        let (bytes, media_type, kind) = if !manifests.is_empty() && self.rng.chance(15) {
            let k = self.rng.range(1, 2.min(manifests.len() as u64)) as usize;
            let children: Vec<(String, usize)> =
                (0..k).map(|_| self.rng.pick(&manifests).clone()).collect();
            (
                image_index(&children, &nonce),
                berth_tests::durability::OCI_INDEX,
                "index",
            )
        } else {
            let config = self.rng.pick(&blobs).clone();
            let k = self.rng.range(0, 3) as usize;
            let layers: Vec<(String, usize)> =
                (0..k).map(|_| self.rng.pick(&blobs).clone()).collect();
            (
                image_manifest((&config.0, config.1), &layers, &nonce),
                berth_tests::durability::OCI_MANIFEST,
                "image",
            )
        };
        let digest = sha256_digest(&bytes);
        let tag = if self.rng.chance(80) {
            Some(format!(
                "w{}-t{}",
                self.id,
                self.rng.range(0, TAGS_PER_WORKER - 1)
            ))
        } else {
            None
        };
        let reference = tag.clone().unwrap_or_else(|| digest.clone());
        let inflight = InFlight::Manifest {
            repo: repo.into(),
            reference: reference.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            bytes: bytes.clone(),
        };
        let url = format!("{base}/v2/{repo}/manifests/{reference}");
        let acked = match self.send("PUT", &url, &[("Content-Type", media_type)], Some(&bytes)) {
            Sent::Answer(r) if r.status == 201 => {
                if r.header("Docker-Content-Digest") != Some(digest.as_str()) {
                    self.unexpected(
                        &format!("PUT manifest {repo}:{reference}: wrong Docker-Content-Digest"),
                        &r,
                    );
                }
                true
            }
            Sent::Answer(r) => {
                self.unexpected(
                    &format!("PUT {kind} manifest {digest} to {repo}:{reference}"),
                    &r,
                );
                false
            }
            Sent::Lost(e) if e.status == Some(201) => true,
            Sent::Lost(_) => return Err(inflight),
        };
        if acked {
            self.log(format!(
                "manifest {repo}:{reference} {kind} {}: 201",
                short(&digest)
            ));
            let mut m = self.shared.model.lock().unwrap();
            m.manifests.insert(key(repo, &digest), bytes);
            if let Some(tag) = tag {
                m.tags.insert(key(repo, &tag), Some(digest));
            }
            m.acked_ops += 1;
        }
        Ok(())
    }

    fn delete_tag(&mut self, repo: &str) -> Result<(), InFlight> {
        let base = self.shared.base.clone();
        let prefix = format!("w{}-", self.id);
        let tags: Vec<String> = {
            let m = self.shared.model.lock().unwrap();
            m.tags
                .iter()
                .filter(|((r, t), d)| r == repo && t.starts_with(&prefix) && d.is_some())
                .map(|((_, t), _)| t.clone())
                .collect()
        };
        if tags.is_empty() {
            return self.push_manifest(repo);
        }
        let tag = self.rng.pick(&tags).clone();
        let inflight = InFlight::TagDelete {
            repo: repo.into(),
            tag: tag.clone(),
        };
        let url = format!("{base}/v2/{repo}/manifests/{tag}");
        match self.send("DELETE", &url, &[], None) {
            Sent::Answer(r) if r.status == 202 => {
                self.log(format!("delete tag {repo}:{tag}: 202"));
                let mut m = self.shared.model.lock().unwrap();
                m.tags.insert(key(repo, &tag), None);
                m.acked_ops += 1;
                Ok(())
            }
            Sent::Answer(r) => {
                self.unexpected(&format!("DELETE tag {repo}:{tag}"), &r);
                Ok(())
            }
            Sent::Lost(e) if e.status == Some(202) => {
                let mut m = self.shared.model.lock().unwrap();
                m.tags.insert(key(repo, &tag), None);
                Ok(())
            }
            Sent::Lost(_) => Err(inflight),
        }
    }
}

/// Checks made after a restart, with no writer running.
struct Checker<'a> {
    base: String,
    agent: ureq::Agent,
    shared: &'a Shared,
    context: String,
}

impl Checker<'_> {
    fn req(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        try_request(&self.agent, method, url, headers, body).unwrap_or_else(|e| {
            panic!("{}: the restarted server did not answer: {e}", self.context)
        })
    }

    fn bad(&self, what: String) {
        self.shared.violation(format!("{}: {what}", self.context));
    }

    /// GET a blob and compare everything; true if it is exactly right.
    fn read_blob(&self, repo: &str, digest: &str, spec: BlobSpec) -> bool {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let r = self.req("GET", &url, &[], None);
        if r.status != 200 {
            self.bad(format!(
                "GET {repo} blob {digest} ({} B): {}",
                spec.size,
                describe(&r)
            ));
            return false;
        }
        let mut ok = true;
        let body_digest = sha256_digest(&r.body);
        if let Some(h) = r.header("Docker-Content-Digest") {
            if h != digest {
                self.bad(format!(
                    "GET {repo} blob {digest}: Docker-Content-Digest {h}"
                ));
                ok = false;
            }
            if h != body_digest {
                self.bad(format!(
                    "GET {repo} blob {digest}: body ({} B) hashes to {body_digest}, not to its Docker-Content-Digest {h}",
                    r.body.len()
                ));
                ok = false;
            }
        }
        let want = blob_bytes(spec.seed, spec.size);
        if r.body != want {
            self.bad(format!(
                "GET {repo} blob {digest}: {} B back, {} B acknowledged, first difference at byte {}",
                r.body.len(),
                want.len(),
                first_difference(&r.body, &want)
            ));
            ok = false;
        }
        ok
    }

    /// HEAD a blob: Some(true) if 200 with the right size, Some(false) if
    /// 404, None (and a violation) otherwise.
    fn head_blob(&self, repo: &str, digest: &str, size: u64) -> Option<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let r = self.req("HEAD", &url, &[], None);
        match r.status {
            200 => {
                let len = r
                    .header("Content-Length")
                    .and_then(|v| v.parse::<u64>().ok());
                if len != Some(size) {
                    self.bad(format!(
                        "HEAD {repo} blob {digest}: Content-Length {len:?}, want {size}"
                    ));
                    return None;
                }
                if let Some(h) = r.header("Docker-Content-Digest") {
                    if h != digest {
                        self.bad(format!(
                            "HEAD {repo} blob {digest}: Docker-Content-Digest {h}"
                        ));
                        return None;
                    }
                }
                Some(true)
            }
            404 => Some(false),
            _ => {
                self.bad(format!("HEAD {repo} blob {digest}: {}", describe(&r)));
                None
            }
        }
    }

    /// GET a manifest by tag or digest: Ok(Some((digest, body))) on 200
    /// (after checking Docker-Content-Digest against the body), Ok(None) on 404.
    fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<(String, Vec<u8>)>, ()> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let r = self.req("GET", &url, &[("Accept", ACCEPT_MANIFESTS)], None);
        match r.status {
            200 => {
                let body_digest = sha256_digest(&r.body);
                let Some(h) = r.header("Docker-Content-Digest") else {
                    self.bad(format!(
                        "GET {repo}:{reference}: 200 without Docker-Content-Digest"
                    ));
                    return Err(());
                };
                if h != body_digest {
                    self.bad(format!(
                        "GET {repo}:{reference}: body ({} B) hashes to {body_digest}, Docker-Content-Digest says {h} (torn or mixed manifest)",
                        r.body.len()
                    ));
                    return Err(());
                }
                Ok(Some((h.to_string(), r.body)))
            }
            404 => Ok(None),
            _ => {
                self.bad(format!("GET {repo}:{reference}: {}", describe(&r)));
                Err(())
            }
        }
    }

    /// Finishes an interrupted chunked upload from where the server says it
    /// stands; true if the blob was committed.
    fn resume(&self, repo: &str, digest: &str, spec: BlobSpec, session: &Session) -> bool {
        let data = blob_bytes(spec.seed, spec.size);
        let status = self.req("GET", &session.location, &[], None);
        if status.status == 404 && session.finishing {
            // The final PUT was in flight: it may have consumed the session
            // without committing; the client starts over. Nothing acknowledged.
            self.shared.log(&format!(
                "{}: session of {digest} gone after an in-flight PUT",
                self.context
            ));
            return false;
        }
        if status.status != 204 {
            self.bad(format!(
                "upload session of {digest} in {repo} (created and acknowledged up to {} B before the crash) is not resumable after restart: GET {} -> {}",
                session.acked_len,
                session.location,
                describe(&status)
            ));
            return false;
        }
        let parse = |r: &HttpResponse| -> Option<usize> {
            let v = r.header("Range")?;
            let end: usize = v.strip_prefix("0-")?.parse().ok()?;
            Some(end)
        };
        let Some(end) = parse(&status) else {
            self.bad(format!(
                "upload status for {digest}: bad Range {:?}",
                status.header("Range")
            ));
            return false;
        };
        // "0-0" is both 0 and 1 bytes; take what we acknowledged, then correct on 416.
        let mut len = if end == 0 {
            session.acked_len.min(1)
        } else {
            end + 1
        };
        if len < session.acked_len {
            self.bad(format!(
                "upload session of {digest} in {repo} lost acknowledged data: the server acknowledged {} B before the crash, reports Range 0-{end} after restart",
                session.acked_len
            ));
        }
        if len > data.len() {
            self.bad(format!(
                "upload session of {digest} in {repo} holds more ({len} B) than was ever sent ({} B)",
                data.len()
            ));
            return false;
        }
        let mut location = status
            .header("Location")
            .map(|l| absolute(&self.base, l))
            .unwrap_or_else(|| session.location.clone());
        for _attempt in 0..2 {
            if len < data.len() {
                let range = format!("{len}-{}", data.len() - 1);
                let r = self.req(
                    "PATCH",
                    &location,
                    &[
                        ("Content-Range", &range),
                        ("Content-Type", "application/octet-stream"),
                    ],
                    Some(&data[len..]),
                );
                if r.status == 416 {
                    if let Some(e) = parse(&r) {
                        if e + 1 != len && e < data.len() {
                            len = e + 1;
                            if let Some(l) = r.header("Location") {
                                location = absolute(&self.base, l);
                            }
                            continue;
                        }
                    }
                }
                if r.status != 202 {
                    self.bad(format!(
                        "resuming the upload of {digest} at {len}: PATCH {range} -> {}",
                        describe(&r)
                    ));
                    return false;
                }
                if let Some(l) = r.header("Location") {
                    location = absolute(&self.base, l);
                }
            }
            break;
        }
        let r = self.req(
            "PUT",
            &with_query(&location, "digest", digest),
            &[],
            Some(&[]),
        );
        if r.status != 201 {
            self.bad(format!(
                "finishing the resumed upload of {digest} ({} B, resumed at {len}): {}",
                spec.size,
                describe(&r)
            ));
            return false;
        }
        self.shared.log(&format!(
            "resumed upload {repo} {} at {len}/{}: 201",
            short(digest),
            spec.size
        ));
        true
    }

    fn resolve(&self, model: &mut Model, inflight: &[InFlight]) {
        for w in inflight {
            self.shared.log(&format!(
                "{}: in flight: {}",
                self.context,
                describe_inflight(w)
            ));
            match w {
                InFlight::Blob {
                    repo,
                    digest,
                    spec,
                    how,
                    session,
                } => {
                    if model.blobs.contains_key(&key(repo, digest)) {
                        continue; // the same content was acknowledged anyway (e.g. the empty blob)
                    }
                    match self.head_blob(repo, digest, spec.size as u64) {
                        Some(true) => {
                            if self.read_blob(repo, digest, *spec) {
                                model.blobs.insert(key(repo, digest), *spec);
                                model.fresh_blobs.insert(key(repo, digest));
                            } else {
                                self.bad(format!("the in-flight {how} upload of {digest} to {repo} is visible with wrong bytes"));
                            }
                        }
                        Some(false) => {
                            if let Some(s) = session {
                                if self.resume(repo, digest, *spec, s)
                                    && self.read_blob(repo, digest, *spec)
                                {
                                    model.blobs.insert(key(repo, digest), *spec);
                                    model.fresh_blobs.insert(key(repo, digest));
                                }
                            }
                        }
                        None => {}
                    }
                }
                InFlight::Manifest {
                    repo,
                    reference,
                    tag,
                    digest,
                    bytes,
                } => {
                    let mut present = false;
                    match self.get_manifest(repo, digest) {
                        Ok(Some((_, body))) => {
                            if &body == bytes {
                                present = true;
                                model.manifests.insert(key(repo, digest), bytes.clone());
                            } else {
                                self.bad(format!(
                                    "in-flight manifest {digest} ({repo}:{reference}) readable by digest with other bytes"
                                ));
                            }
                        }
                        Ok(None) => {}
                        Err(()) => {}
                    }
                    if let Some(tag) = tag {
                        let before = model.tags.get(&key(repo, tag)).cloned().flatten();
                        if let Ok(observed) = self.get_manifest(repo, tag) {
                            let observed = observed.map(|(d, _)| d);
                            let allowed =
                                observed == before || observed.as_deref() == Some(digest.as_str());
                            if !allowed {
                                self.bad(format!(
                                    "tag {repo}:{tag} points to {observed:?} after the crash; allowed: the last acknowledged {before:?} or the in-flight {digest}"
                                ));
                            } else {
                                if observed.as_deref() == Some(digest.as_str()) && !present {
                                    self.bad(format!(
                                        "tag {repo}:{tag} points to the in-flight manifest {digest}, which is not readable by digest"
                                    ));
                                }
                                if observed.is_some() || model.tags.contains_key(&key(repo, tag)) {
                                    model.tags.insert(key(repo, tag), observed);
                                }
                            }
                        }
                    }
                }
                InFlight::TagDelete { repo, tag } => {
                    let before = model.tags.get(&key(repo, tag)).cloned().flatten();
                    if let Ok(observed) = self.get_manifest(repo, tag) {
                        let observed = observed.map(|(d, _)| d);
                        if observed.is_some() && observed != before {
                            self.bad(format!(
                                "tag {repo}:{tag} (delete in flight) points to {observed:?}; allowed: {before:?} or none"
                            ));
                        } else {
                            model.tags.insert(key(repo, tag), observed);
                        }
                    }
                }
            }
        }
    }

    /// Everything in the model must be there and exact.
    fn check(&self, model: &Model, rng: &mut Rng, read_all_blobs: bool) -> (usize, usize) {
        // Tags: each names exactly its last manifest.
        for ((repo, tag), want) in &model.tags {
            match (self.get_manifest(repo, tag), want) {
                (Ok(Some((d, body))), Some(w)) => {
                    if &d != w {
                        self.bad(format!(
                            "tag {repo}:{tag} points to {d}, the last acknowledged PUT was {w}"
                        ));
                    } else if model.manifests.get(&key(repo, w)) != Some(&body) {
                        self.bad(format!(
                            "tag {repo}:{tag} -> {d}: bytes differ from the acknowledged manifest"
                        ));
                    }
                }
                (Ok(None), Some(w)) => {
                    self.bad(format!("acknowledged tag {repo}:{tag} (-> {w}) is gone"));
                }
                (Ok(Some((d, _))), None) => {
                    self.bad(format!(
                        "tag {repo}:{tag} was deleted (acknowledged) but points to {d}"
                    ));
                }
                (Ok(None), None) | (Err(()), _) => {}
            }
        }
        // tags/list and _catalog agree with the model.
        let catalog = self.req("GET", &format!("{}/v2/_catalog", self.base), &[], None);
        let listed: BTreeSet<String> = if catalog.status == 200 {
            serde_json::from_slice::<serde_json::Value>(&catalog.body)
                .ok()
                .and_then(|v| v["repositories"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        } else {
            self.bad(format!("GET /v2/_catalog: {}", describe(&catalog)));
            BTreeSet::new()
        };
        for repo in &listed {
            if !REPOS.contains(&repo.as_str()) {
                self.bad(format!("_catalog lists {repo:?}, which nobody pushed to"));
            }
        }
        for repo in REPOS {
            let has_content = model.blobs.keys().any(|(r, _)| r == repo)
                || model.manifests.keys().any(|(r, _)| r == repo);
            if has_content && catalog.status == 200 && !listed.contains(repo) {
                self.bad(format!(
                    "_catalog does not list {repo}, which has acknowledged content"
                ));
            }
            let want: BTreeSet<String> = model
                .tags
                .iter()
                .filter(|((r, _), d)| r == repo && d.is_some())
                .map(|((_, t), _)| t.clone())
                .collect();
            let r = self.req(
                "GET",
                &format!("{}/v2/{repo}/tags/list", self.base),
                &[],
                None,
            );
            let got: BTreeSet<String> = match r.status {
                200 => r.json()["tags"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                404 if !has_content => BTreeSet::new(),
                _ => {
                    self.bad(format!("GET /v2/{repo}/tags/list: {}", describe(&r)));
                    continue;
                }
            };
            if got != want {
                let extra: Vec<_> = got.difference(&want).collect();
                let missing: Vec<_> = want.difference(&got).collect();
                self.bad(format!("tags/list of {repo}: listed but not expected {extra:?}, expected but not listed {missing:?}"));
            }
            // Every listed tag resolves to a readable, self-consistent manifest.
            for tag in got.difference(&want) {
                if let Ok(None) = self.get_manifest(repo, tag) {
                    self.bad(format!("{repo}:{tag} is listed but points to no manifest"))
                }
            }
        }
        // Manifests by digest, and what they reference.
        let mut referenced: BTreeSet<(String, String, u64, bool)> = BTreeSet::new();
        for ((repo, digest), bytes) in &model.manifests {
            match self.get_manifest(repo, digest) {
                Ok(Some((_, body))) => {
                    if &body != bytes {
                        self.bad(format!(
                            "manifest {repo}@{digest}: bytes differ from the acknowledged ones"
                        ));
                    }
                }
                Ok(None) => self.bad(format!("acknowledged manifest {repo}@{digest} is gone")),
                Err(()) => {}
            }
            for (d, size, is_manifest) in references(bytes) {
                referenced.insert((repo.clone(), d, size, is_manifest));
            }
        }
        for (repo, d, size, is_manifest) in &referenced {
            if *is_manifest {
                if !model.manifests.contains_key(&key(repo, d)) {
                    if let Ok(None) = self.get_manifest(repo, d) {
                        self.bad(format!("an index in {repo} references {d}, which is gone"));
                    }
                }
            } else if !model.blobs.contains_key(&key(repo, d))
                && self.head_blob(repo, d, *size) == Some(false)
            {
                self.bad(format!(
                    "a manifest in {repo} references blob {d}, which is gone"
                ));
            }
        }
        // Blobs: HEAD all, GET the fresh ones and a sample (or all).
        let mut read = 0;
        let old: Vec<&Key> = model
            .blobs
            .keys()
            .filter(|k| !model.fresh_blobs.contains(*k))
            .collect();
        let mut sample: BTreeSet<&Key> = BTreeSet::new();
        if !old.is_empty() {
            for _ in 0..SAMPLE_OLD_BLOBS.min(old.len()) {
                sample.insert(*rng.pick(&old));
            }
        }
        for ((repo, digest), spec) in &model.blobs {
            let k = key(repo, digest);
            if read_all_blobs || model.fresh_blobs.contains(&k) || sample.contains(&k) {
                self.read_blob(repo, digest, *spec);
                read += 1;
            } else if self.head_blob(repo, digest, spec.size as u64) == Some(false) {
                self.bad(format!(
                    "acknowledged blob {repo}@{digest} ({} B) is gone",
                    spec.size
                ));
            }
        }
        (model.blobs.len(), read)
    }
}

fn describe_inflight(w: &InFlight) -> String {
    match w {
        InFlight::Blob {
            repo,
            digest,
            spec,
            how,
            session,
        } => format!(
            "blob {how} {repo} {digest} {} B session {:?}",
            spec.size,
            session.as_ref().map(|s| (s.acked_len, s.finishing))
        ),
        InFlight::Manifest {
            repo,
            reference,
            digest,
            ..
        } => format!("manifest PUT {repo}:{reference} -> {digest}"),
        InFlight::TagDelete { repo, tag } => format!("DELETE tag {repo}:{tag}"),
    }
}

#[test]
fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged() {
    let t0 = Instant::now();
    let seed = seed_from_env("BERTH_CRASH_SEED");
    let iterations = env_usize("BERTH_CRASH_ITERATIONS", DEFAULT_ITERATIONS);
    let workers = env_usize("BERTH_CRASH_WORKERS", DEFAULT_WORKERS);
    let oplog_path = std::env::temp_dir().join(format!("berth-crash-consistency-{seed:#x}.log"));
    eprintln!(
        "[crash_consistency] seed {seed:#x} (BERTH_CRASH_SEED={seed:#x} to repeat), {iterations} iterations, {workers} workers, operation log {}",
        oplog_path.display()
    );
    let mut main_rng = Rng::new(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = RegistryCommand::from_env();
    command
        .env
        .push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    let mut registry = Registry::start_with(command, &dir.path().join("data"));
    let shared = Arc::new(Shared {
        model: Mutex::new(Model::default()),
        violations: Mutex::new(Vec::new()),
        oplog: Mutex::new(File::create(&oplog_path).expect("create the operation log")),
        stop: AtomicBool::new(false),
        base: registry.base_url(),
    });
    shared.log(&format!(
        "seed {seed:#x} iterations {iterations} workers {workers}"
    ));

    let fail = |shared: &Shared, iteration: usize, registry: &Registry| {
        let v = shared.violations.lock().unwrap();
        if !v.is_empty() {
            let shown: Vec<&String> = v.iter().take(30).collect();
            panic!(
                "crash consistency violated in iteration {iteration} (seed {seed:#x}; BERTH_CRASH_SEED={seed:#x} to repeat; operation log {}), {} problem(s):\n  {}\n--- registry log tail ---\n{}",
                oplog_path.display(),
                v.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
                registry.log_tail(30)
            );
        }
    };

    let mut total_ops = 0u64;
    let mut kills = Vec::new();
    for iteration in 1..=iterations {
        shared.stop.store(false, Ordering::SeqCst);
        shared.model.lock().unwrap().fresh_blobs.clear();
        let handles: Vec<_> = (0..workers)
            .map(|id| {
                let w = Worker {
                    id,
                    iteration,
                    rng: Rng::new(
                        seed ^ ((iteration as u64) << 32)
                            ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9),
                    ),
                    agent: agent(Duration::from_secs(30)),
                    shared: shared.clone(),
                    ops: 0,
                };
                thread::Builder::new()
                    .name(format!("pusher-{id}"))
                    .spawn(move || {
                        let shared = w.shared.clone();
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                            w.run()
                        })) {
                            Ok(inflight) => inflight,
                            Err(_) => {
                                shared.violation(format!("pusher {id} panicked"));
                                None
                            }
                        }
                    })
                    .expect("spawn a pusher")
            })
            .collect();
        let delay = Duration::from_millis(main_rng.range(10, 400));
        thread::sleep(delay);
        let acked_before_kill = shared.model.lock().unwrap().acked_ops;
        registry.kill();
        shared.stop.store(true, Ordering::SeqCst);
        let inflight: Vec<InFlight> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("pusher thread"))
            .collect();
        shared.log(&format!(
            "it{iteration}: SIGKILL after {delay:?}; {} write(s) in flight",
            inflight.len()
        ));
        registry.start_again();
        let checker = Checker {
            base: registry.base_url(),
            agent: agent(Duration::from_secs(60)),
            shared: &shared,
            context: format!("iteration {iteration} (seed {seed:#x})"),
        };
        let mut model = shared.model.lock().unwrap();
        let acked_now = model.acked_ops;
        checker.resolve(&mut model, &inflight);
        let (blobs, read) = checker.check(&model, &mut main_rng, iteration == iterations);
        let iteration_ops = acked_now - total_ops;
        total_ops = acked_now;
        kills.push(delay.as_millis());
        step(
            t0,
            &format!(
                "iteration {iteration}: killed after {} ms ({} ops acked by then, {} this iteration), {} in flight; model: {} blobs ({:.1} MiB), {} manifests, {} tags; {} blobs read back",
                delay.as_millis(),
                acked_before_kill,
                iteration_ops,
                inflight.len(),
                blobs,
                model.acked_bytes as f64 / 1048576.0,
                model.manifests.len(),
                model.tags.values().filter(|t| t.is_some()).count(),
                read
            ),
        );
        drop(model);
        fail(&shared, iteration, &registry);
    }

    // A graceful restart at the end: everything again, every blob read whole.
    registry.restart();
    let checker = Checker {
        base: registry.base_url(),
        agent: agent(Duration::from_secs(60)),
        shared: &shared,
        context: format!("after the final graceful restart (seed {seed:#x})"),
    };
    let model = shared.model.lock().unwrap();
    let (blobs, read) = checker.check(&model, &mut main_rng, true);
    drop(model);
    step(
        t0,
        &format!("final graceful restart: {blobs} blobs, {read} read back"),
    );
    let log = registry.log_tail(5000);
    if log.contains("panicked at") {
        shared.violation(format!(
            "the registry log shows a panic:\n{}",
            registry.log_tail(60)
        ));
    }
    fail(&shared, iterations, &registry);
    assert!(
        total_ops > 0,
        "no operation was ever acknowledged: the test did not exercise anything"
    );
    let _ = std::fs::remove_file(&oplog_path);
    eprintln!(
        "[crash_consistency] ok: seed {seed:#x}, {iterations} kills (delays {kills:?} ms), {total_ops} acknowledged operations, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
