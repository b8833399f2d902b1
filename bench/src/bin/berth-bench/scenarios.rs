//! One operation of each scenario. An operation returns the payload bytes
//! it moved, or an error carrying the exact request and response.

use sha2::{Digest, Sha256};

use crate::fixtures::{hex, with_query, MANIFEST_ACCEPT};
use crate::http::{location_path, Body, Conn, Response, Sink};

/// A failed operation: what was sent and what came back.
#[derive(Debug, Clone)]
pub struct OpError {
    pub request: String,
    pub detail: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  -> {}",
            self.request,
            self.detail.replace('\n', "\n     ")
        )
    }
}

fn err(request: String, detail: impl Into<String>) -> OpError {
    OpError {
        request,
        detail: detail.into(),
    }
}

fn unexpected(request: String, want: u16, r: &Response) -> OpError {
    err(request, format!("expected {want}, got {}", r.describe()))
}

pub trait Scenario: Sync + Send {
    fn op(&self, conn: &mut Conn, worker: usize, seq: u64, verify: bool) -> Result<u64, OpError>;

    /// Names of the kinds of operation measured apart (e.g. pull, push);
    /// one histogram and one result each.
    fn classes(&self) -> &'static [&'static str] {
        &["op"]
    }

    /// Which class `worker`'s operations are.
    fn class_of(&self, _worker: usize) -> usize {
        0
    }
}

/// GET a manifest by tag.
pub struct ManifestGet {
    pub path: String,
    pub digest: String,
    pub len: usize,
}

impl Scenario for ManifestGet {
    fn op(&self, conn: &mut Conn, _: usize, _: u64, verify: bool) -> Result<u64, OpError> {
        let req = || format!("GET {} (Accept: {MANIFEST_ACCEPT})", self.path);
        let r = conn
            .request(
                "GET",
                &self.path,
                &[("Accept", MANIFEST_ACCEPT)],
                Body::None,
                Sink::Keep,
            )
            .map_err(|e| err(req(), e.to_string()))?;
        if r.status != 200 {
            return Err(unexpected(req(), 200, &r));
        }
        if verify {
            let got = format!("sha256:{}", hex(&Sha256::digest(&r.body)));
            if got != self.digest || r.body.len() != self.len {
                return Err(err(
                    req(),
                    format!(
                        "body digest {got} ({} bytes), expected {} ({} bytes)",
                        r.body.len(),
                        self.digest,
                        self.len
                    ),
                ));
            }
            if let Some(h) = r.header("docker-content-digest") {
                if h != self.digest {
                    return Err(err(
                        req(),
                        format!("Docker-Content-Digest {h}, expected {}", self.digest),
                    ));
                }
            }
        }
        Ok(r.body_len)
    }
}

/// HEAD a blob.
pub struct BlobHead {
    pub path: String,
    pub len: usize,
}

impl Scenario for BlobHead {
    fn op(&self, conn: &mut Conn, _: usize, _: u64, verify: bool) -> Result<u64, OpError> {
        let req = || format!("HEAD {}", self.path);
        let r = conn
            .request("HEAD", &self.path, &[], Body::None, Sink::Keep)
            .map_err(|e| err(req(), e.to_string()))?;
        if r.status != 200 {
            return Err(unexpected(req(), 200, &r));
        }
        if verify
            && r.header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                != Some(self.len)
        {
            return Err(err(
                req(),
                format!(
                    "Content-Length {:?}, expected {}",
                    r.header("content-length"),
                    self.len
                ),
            ));
        }
        Ok(0)
    }
}

/// GET a whole blob (streamed; hashed with --verify).
pub struct BlobGet {
    pub path: String,
    pub digest: String,
    pub len: u64,
}

impl Scenario for BlobGet {
    fn op(&self, conn: &mut Conn, _: usize, _: u64, verify: bool) -> Result<u64, OpError> {
        let req = || format!("GET {}", self.path);
        let mut hasher = Sha256::new();
        let mut sink = |d: &[u8]| {
            if verify {
                hasher.update(d)
            }
        };
        let r = conn
            .request("GET", &self.path, &[], Body::None, Sink::Stream(&mut sink))
            .map_err(|e| err(req(), e.to_string()))?;
        if r.status != 200 {
            return Err(unexpected(req(), 200, &r));
        }
        if r.body_len != self.len {
            return Err(err(
                req(),
                format!("got {} body bytes, expected {}", r.body_len, self.len),
            ));
        }
        if verify {
            let got = format!("sha256:{}", hex(&hasher.finalize()));
            if got != self.digest {
                return Err(err(
                    req(),
                    format!("body digest {got}, expected {}", self.digest),
                ));
            }
        }
        Ok(r.body_len)
    }
}

/// GET the tag list.
pub struct TagsList {
    pub path: String,
    pub min_tags: usize,
}

impl Scenario for TagsList {
    fn op(&self, conn: &mut Conn, _: usize, _: u64, verify: bool) -> Result<u64, OpError> {
        let req = || format!("GET {}", self.path);
        let r = conn
            .request("GET", &self.path, &[], Body::None, Sink::Keep)
            .map_err(|e| err(req(), e.to_string()))?;
        if r.status != 200 {
            return Err(unexpected(req(), 200, &r));
        }
        if verify {
            let v: serde_json::Value = serde_json::from_slice(&r.body)
                .map_err(|e| err(req(), format!("body is not JSON: {e}")))?;
            let n = v
                .get("tags")
                .and_then(|t| t.as_array())
                .map_or(0, |a| a.len());
            if n < self.min_tags {
                return Err(err(
                    req(),
                    format!("{n} tags listed, expected at least {}", self.min_tags),
                ));
            }
        }
        Ok(r.body_len)
    }
}

/// Blobs for push scenarios: a random payload shared by every operation
/// plus a 16-byte tail unique to (run, worker, sequence), so every push is
/// a new blob while its digest costs one block of hashing (the hasher state
/// over the shared part is computed once and cloned).
pub struct PushPayload {
    prefix: Vec<u8>,
    prefix_hasher: Sha256,
    nonce: u64,
    pub size: usize,
}

const TAIL: usize = 16;

impl PushPayload {
    pub fn new(size: usize) -> PushPayload {
        let size = size.max(TAIL);
        let prefix = berth_bench::random_bytes(size - TAIL, 0x9e37_79b9_7f4a_7c15);
        let mut prefix_hasher = Sha256::new();
        prefix_hasher.update(&prefix);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        PushPayload {
            prefix,
            prefix_hasher,
            nonce,
            size,
        }
    }

    /// The unique tail and the digest of prefix + tail.
    pub fn blob(&self, worker: usize, seq: u64) -> ([u8; TAIL], String) {
        let mut tail = [0u8; TAIL];
        tail[..8].copy_from_slice(&self.nonce.to_le_bytes());
        tail[8..].copy_from_slice(&((worker as u64) << 40 | seq).to_le_bytes());
        let mut h = self.prefix_hasher.clone();
        h.update(tail);
        (tail, format!("sha256:{}", hex(&h.finalize())))
    }

    /// The pieces of bytes `[from, to)` of prefix + tail.
    fn range<'a>(&'a self, tail: &'a [u8], from: usize, to: usize) -> Vec<&'a [u8]> {
        let p = self.prefix.len();
        let mut parts = Vec::with_capacity(2);
        if from < p {
            parts.push(&self.prefix[from..to.min(p)]);
        }
        if to > p {
            parts.push(&tail[from.max(p) - p..to - p]);
        }
        parts
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PushMode {
    /// POST ?digest= with the body (falls back to PUT on a 202, as clients do).
    Monolithic,
    /// POST to open a session, then PUT ?digest= with the whole body.
    PostPut,
}

/// Push a new blob per operation.
pub struct BlobPush {
    pub repo: String,
    pub payload: PushPayload,
    pub mode: PushMode,
    /// Monolithic POSTs the registry answered with a session (202).
    pub fallbacks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Chunk size for push-chunked (PATCH per chunk, then an empty PUT).
    pub chunk: Option<usize>,
}

impl BlobPush {
    fn check_created(
        &self,
        req: &str,
        r: &Response,
        digest: &str,
        verify: bool,
    ) -> Result<(), OpError> {
        if r.status != 201 {
            return Err(unexpected(req.to_string(), 201, r));
        }
        if verify && r.header("docker-content-digest") != Some(digest) {
            return Err(err(
                req.to_string(),
                format!(
                    "Docker-Content-Digest {:?}, expected {digest}",
                    r.header("docker-content-digest")
                ),
            ));
        }
        Ok(())
    }
}

/// `POST /v2/<repo>/blobs/uploads/`: the new session's path (202 expected).
fn start_upload(conn: &mut Conn, repo: &str) -> Result<String, OpError> {
    let post = format!("/v2/{repo}/blobs/uploads/");
    let req = format!("POST {post}");
    let r = conn
        .request("POST", &post, &[], Body::None, Sink::Keep)
        .map_err(|e| err(req.clone(), e.to_string()))?;
    if r.status != 202 {
        return Err(unexpected(req, 202, &r));
    }
    r.header("location")
        .map(location_path)
        .ok_or_else(|| err(req, format!("202 without Location:\n{}", r.describe())))
}

impl Scenario for BlobPush {
    fn op(&self, conn: &mut Conn, worker: usize, seq: u64, verify: bool) -> Result<u64, OpError> {
        let (tail, digest) = self.payload.blob(worker, seq);
        let size = self.payload.size;
        let all = self.payload.range(&tail, 0, size);
        let octet = [("Content-Type", "application/octet-stream")];
        if let Some(chunk) = self.chunk {
            let mut loc = start_upload(conn, &self.repo)?;
            let mut at = 0;
            while at < size {
                let end = (at + chunk).min(size);
                let parts = self.payload.range(&tail, at, end);
                let range = format!("{}-{}", at, end - 1);
                let req = format!("PATCH {loc} (Content-Range: {range}, {} bytes)", end - at);
                let r = conn
                    .request(
                        "PATCH",
                        &loc,
                        &[octet[0], ("Content-Range", &range)],
                        Body::Parts(&parts),
                        Sink::Keep,
                    )
                    .map_err(|e| err(req.clone(), e.to_string()))?;
                if r.status != 202 {
                    return Err(unexpected(req, 202, &r));
                }
                loc = r
                    .header("location")
                    .map(location_path)
                    .ok_or_else(|| err(req, "202 without Location"))?;
                at = end;
            }
            let put = with_query(&loc, "digest", &digest);
            let req = format!("PUT {put} (empty body)");
            let r = conn
                .request("PUT", &put, &[], Body::None, Sink::Keep)
                .map_err(|e| err(req.clone(), e.to_string()))?;
            self.check_created(&req, &r, &digest, verify)?;
            return Ok(size as u64);
        }
        let put_to = |conn: &mut Conn, loc: String| -> Result<(), OpError> {
            let put = with_query(&loc, "digest", &digest);
            let req = format!("PUT {put} ({size} bytes)");
            let r = conn
                .request("PUT", &put, &octet, Body::Parts(&all), Sink::Keep)
                .map_err(|e| err(req.clone(), e.to_string()))?;
            self.check_created(&req, &r, &digest, verify)
        };
        match self.mode {
            PushMode::PostPut => {
                let loc = start_upload(conn, &self.repo)?;
                put_to(conn, loc)?;
            }
            PushMode::Monolithic => {
                let post = format!("/v2/{}/blobs/uploads/?digest={digest}", self.repo);
                let req = format!("POST {post} ({size} bytes)");
                let r = conn
                    .request("POST", &post, &octet, Body::Parts(&all), Sink::Keep)
                    .map_err(|e| err(req.clone(), e.to_string()))?;
                if r.status == 202 {
                    // The registry ignored the digest and opened a session.
                    self.fallbacks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let loc = r
                        .header("location")
                        .map(location_path)
                        .ok_or_else(|| err(req, "202 without Location"))?;
                    put_to(conn, loc)?;
                } else {
                    self.check_created(&req, &r, &digest, verify)?;
                }
            }
        }
        Ok(size as u64)
    }
}

/// The CI fleet: pullers GET the manifest by tag and then every blob it
/// names (config and layers, whole; sha256-checked with --verify) while
/// pushers push a new config blob and a manifest under a new tag. Workers
/// `0..pushers` push, the rest pull; each kind is measured apart.
pub struct Fleet {
    pub repo: String,
    pub pushers: usize,
    /// GET path of the manifest by tag, its digest and length.
    pub manifest_path: String,
    pub manifest_digest: String,
    pub manifest_len: usize,
    /// (path, digest, length) of every blob a pull fetches.
    pub blobs: Vec<(String, String, u64)>,
    /// What pushes reference: the layers' digests and sizes.
    pub layers: Vec<(String, usize)>,
    pub layer_bytes: Vec<Vec<u8>>,
    /// Makes pushed tags and configs unique to this run.
    pub nonce: u64,
}

impl Fleet {
    fn pull(&self, conn: &mut Conn, verify: bool) -> Result<u64, OpError> {
        let mut moved = ManifestGet {
            path: self.manifest_path.clone(),
            digest: self.manifest_digest.clone(),
            len: self.manifest_len,
        }
        .op(conn, 0, 0, verify)?;
        for (path, digest, len) in &self.blobs {
            moved += BlobGet {
                path: path.clone(),
                digest: digest.clone(),
                len: *len,
            }
            .op(conn, 0, 0, verify)?;
        }
        Ok(moved)
    }

    fn push(&self, conn: &mut Conn, worker: usize, seq: u64, verify: bool) -> Result<u64, OpError> {
        let build = format!("{:x}-{worker}-{seq}", self.nonce);
        let config = crate::fixtures::fleet_config(&self.layer_bytes, &build);
        let config_digest = crate::fixtures::sha256_digest(&config);
        let loc = start_upload(conn, &self.repo)?;
        let put = with_query(&loc, "digest", &config_digest);
        let req = format!("PUT {put} ({} bytes)", config.len());
        let r = conn
            .request(
                "PUT",
                &put,
                &[("Content-Type", "application/octet-stream")],
                Body::Bytes(&config),
                Sink::Keep,
            )
            .map_err(|e| err(req.clone(), e.to_string()))?;
        if r.status != 201 {
            return Err(unexpected(req, 201, &r));
        }
        let manifest =
            crate::fixtures::manifest_for_digests(&config_digest, config.len(), &self.layers);
        let digest = crate::fixtures::sha256_digest(&manifest);
        let path = format!("/v2/{}/manifests/fleet-{build}", self.repo);
        let req = format!("PUT {path} ({} bytes)", manifest.len());
        let r = conn
            .request(
                "PUT",
                &path,
                &[("Content-Type", crate::fixtures::MANIFEST_TYPE)],
                Body::Bytes(&manifest),
                Sink::Keep,
            )
            .map_err(|e| err(req.clone(), e.to_string()))?;
        if r.status != 201 {
            return Err(unexpected(req, 201, &r));
        }
        if verify && r.header("docker-content-digest") != Some(digest.as_str()) {
            return Err(err(
                req,
                format!(
                    "Docker-Content-Digest {:?}, expected {digest}",
                    r.header("docker-content-digest")
                ),
            ));
        }
        Ok((config.len() + manifest.len()) as u64)
    }
}

impl Scenario for Fleet {
    fn op(&self, conn: &mut Conn, worker: usize, seq: u64, verify: bool) -> Result<u64, OpError> {
        if self.class_of(worker) == 1 {
            self.push(conn, worker, seq, verify)
        } else {
            self.pull(conn, verify)
        }
    }

    fn classes(&self) -> &'static [&'static str] {
        &["pull", "push"]
    }

    fn class_of(&self, worker: usize) -> usize {
        usize::from(worker < self.pushers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_payload_digest_matches_its_bytes() {
        for size in [16, 100, 4096, 70_000] {
            let p = PushPayload::new(size);
            let (tail, digest) = p.blob(3, 7);
            let mut whole = Vec::new();
            for part in p.range(&tail, 0, size) {
                whole.extend_from_slice(part);
            }
            assert_eq!(whole.len(), size);
            assert_eq!(crate::fixtures::sha256_digest(&whole), digest);
            // Ranges across the prefix/tail boundary reassemble the same bytes.
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < size {
                let end = (at + 33).min(size);
                for part in p.range(&tail, at, end) {
                    pieces.extend_from_slice(part);
                }
                at = end;
            }
            assert_eq!(pieces, whole);
            assert_ne!(p.blob(3, 8).1, digest);
        }
    }
}
