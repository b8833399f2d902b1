//! Single-flight streaming of upstream blobs.
//!
//! The first request for a blob the cache lacks starts one fetch: a thread
//! that reads the upstream body, hashes it and appends it to a staging file
//! in the data directory, publishing how many bytes have landed. Every
//! request for that blob while the fetch runs, the first included, sends
//! bytes from the staging file as they land ([`GrowingBlob`]), so nobody
//! waits for the end and upstream is asked once.
//!
//! The last byte of the blob is held back until the digest is verified and
//! the blob is committed to the store: a client never receives a complete
//! body that turns out to be wrong. On a digest mismatch, a short body or an
//! upstream failure every waiting client's connection is cut short (it sees
//! a truncated body, an error), and nothing is stored.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use berth_engine::{Digest, Engine, Hasher, RepositoryName};

use super::metrics::ProxyMetrics;
use super::upstream::{Upstream, UpstreamError};

/// Bytes read from upstream before waiting readers are told about them.
const PUBLISH_BYTES: usize = 256 * 1024;

/// Why a fetch produced no blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// Upstream has no such blob.
    NotFound(String),
    /// Upstream could not be reached, failed, or stopped mid-body.
    Outage(String),
    /// Upstream sent something wrong (bytes that do not match the digest,
    /// a body longer than announced).
    Invalid(String),
    /// The local store refused the bytes.
    Storage(String),
}

impl FetchFailure {
    /// The human message.
    pub fn message(&self) -> &str {
        match self {
            FetchFailure::NotFound(m)
            | FetchFailure::Outage(m)
            | FetchFailure::Invalid(m)
            | FetchFailure::Storage(m) => m,
        }
    }
}

impl From<UpstreamError> for FetchFailure {
    fn from(e: UpstreamError) -> FetchFailure {
        match e {
            UpstreamError::NotFound { .. } => FetchFailure::NotFound(e.to_string()),
            _ => FetchFailure::Outage(e.to_string()),
        }
    }
}

/// Where a fetch is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Asking upstream.
    Connecting,
    /// Bytes are landing; the length if upstream announced it.
    Streaming {
        /// Content-Length from upstream.
        len: Option<u64>,
    },
    /// Verified and committed to the store.
    Committed {
        /// The blob's length.
        len: u64,
    },
    /// Nothing was stored.
    Failed(FetchFailure),
}

struct ProgressState {
    generation: u64,
    written: u64,
    phase: Phase,
    wakers: Vec<Waker>,
}

/// A fetch's shared progress: updated by the fetch thread, awaited by the
/// event loops (any runtime: wakers are called from the fetch thread).
pub struct Progress {
    state: Mutex<ProgressState>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            state: Mutex::new(ProgressState {
                generation: 0,
                written: 0,
                phase: Phase::Connecting,
                wakers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        let wakers = {
            let mut state = self.lock();
            f(&mut state);
            state.generation += 1;
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The current generation, written bytes and phase.
    fn snapshot(&self) -> (u64, u64, Phase) {
        let state = self.lock();
        (state.generation, state.written, state.phase.clone())
    }

    /// Resolves once anything changes after generation `seen`.
    fn changed(&self, seen: u64) -> Changed<'_> {
        Changed {
            progress: self,
            seen,
        }
    }
}

struct Changed<'a> {
    progress: &'a Progress,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.progress.lock();
        if state.generation != self.seen {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One upstream fetch of one blob.
pub struct BlobFetch {
    /// The blob.
    pub digest: Digest,
    progress: Progress,
    /// The staging file, for readers (a `dup` stays valid after the file
    /// is renamed into the store or removed).
    staged: OnceLock<File>,
}

impl BlobFetch {
    fn new(digest: Digest) -> BlobFetch {
        BlobFetch {
            digest,
            progress: Progress::new(),
            staged: OnceLock::new(),
        }
    }

    /// Waits until upstream has answered: the announced length (`None` if
    /// upstream did not say), or why there will be no blob.
    pub async fn started(&self) -> Result<Option<u64>, FetchFailure> {
        loop {
            let (generation, _, phase) = self.progress.snapshot();
            match phase {
                Phase::Connecting => self.progress.changed(generation).await,
                Phase::Streaming { len } => return Ok(len),
                Phase::Committed { len } => return Ok(Some(len)),
                Phase::Failed(failure) => return Err(failure),
            }
        }
    }

    /// Waits until the fetch ends: the committed length or the failure.
    pub async fn finished(&self) -> Result<u64, FetchFailure> {
        loop {
            let (generation, _, phase) = self.progress.snapshot();
            match phase {
                Phase::Committed { len } => return Ok(len),
                Phase::Failed(failure) => return Err(failure),
                _ => self.progress.changed(generation).await,
            }
        }
    }

    /// A reader of the staging file (valid once [`BlobFetch::started`]
    /// returned a length).
    pub fn reader(&self) -> io::Result<File> {
        self.staged
            .get()
            .ok_or_else(|| io::Error::other("the fetch has no staging file yet"))?
            .try_clone()
    }

    /// Waits until bytes past absolute offset `after` may be sent, and
    /// returns how far (exclusive, absolute, at most `end`). Bytes are
    /// sendable as soon as they land, except the response's last byte
    /// (`end - 1`), which waits until the blob is verified and committed.
    pub async fn sendable_after(&self, after: u64, end: u64) -> Result<u64, FetchFailure> {
        loop {
            let (generation, written, phase) = self.progress.snapshot();
            let limit = match phase {
                Phase::Failed(failure) => return Err(failure),
                Phase::Committed { len } => len.min(end),
                Phase::Streaming { .. } | Phase::Connecting => written.min(end.saturating_sub(1)),
            };
            if limit > after {
                return Ok(limit);
            }
            self.progress.changed(generation).await;
        }
    }
}

/// The fetches in flight, by digest.
#[derive(Default)]
pub struct Inflight {
    fetches: Mutex<HashMap<Digest, Arc<BlobFetch>>>,
}

/// What [`Inflight::join_or_start`] did.
pub enum Joined {
    /// The store already holds the blob (a fetch just committed it).
    Stored,
    /// A fetch was already running: this request shares it.
    Coalesced(Arc<BlobFetch>),
    /// This request started the fetch.
    Started(Arc<BlobFetch>),
}

/// What the fetch thread needs.
pub struct FetchJob {
    /// Where the blob is committed and linked.
    pub engine: Arc<Engine>,
    /// Where it comes from.
    pub upstream: Arc<Upstream>,
    /// The repository it is linked into (the first requester's).
    pub repo: RepositoryName,
    /// Counters.
    pub metrics: Arc<ProxyMetrics>,
}

impl Inflight {
    /// Joins the running fetch of `digest`, or starts one on its own
    /// thread with `job`. With `unless_stored`, answers [`Joined::Stored`]
    /// instead of starting a fetch of a blob the store already holds.
    pub fn join_or_start(
        self: &Arc<Self>,
        digest: &Digest,
        job: FetchJob,
        unless_stored: bool,
    ) -> io::Result<Joined> {
        let mut fetches = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fetch) = fetches.get(digest) {
            return Ok(Joined::Coalesced(fetch.clone()));
        }
        // A fetch commits before it leaves the map: not in the map and not
        // stored means nobody has it.
        if unless_stored && job.engine.blob_stored(digest) {
            return Ok(Joined::Stored);
        }
        let fetch = Arc::new(BlobFetch::new(digest.clone()));
        let inflight = self.clone();
        let running = fetch.clone();
        std::thread::Builder::new()
            .name(format!(
                "fetch-{}",
                &digest.hex()[..12.min(digest.hex().len())]
            ))
            .spawn(move || {
                let outcome = stream_into_store(&running, &job);
                match &outcome {
                    Ok(len) => log::info!(
                        "proxy: fetched {} ({len} bytes) from upstream into {}",
                        running.digest,
                        job.repo
                    ),
                    Err(failure) => {
                        job.metrics.count_upstream_error();
                        log::warn!(
                            "proxy: fetch of {} failed: {}",
                            running.digest,
                            failure.message()
                        )
                    }
                }
                // Out of the map first: a request arriving now finds the
                // blob in the store (or starts a new fetch after a failure).
                inflight
                    .fetches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&running.digest);
                running.progress.update(|s| {
                    s.phase = match outcome {
                        Ok(len) => Phase::Committed { len },
                        Err(failure) => Phase::Failed(failure),
                    }
                });
            })?;
        fetches.insert(digest.clone(), fetch.clone());
        Ok(Joined::Started(fetch))
    }

    /// How many fetches are running.
    pub fn len(&self) -> usize {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no fetch is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The fetch thread's work: stream, hash, stage, verify, commit. On any
/// failure the staging file is dropped (removed) and nothing is linked.
fn stream_into_store(fetch: &BlobFetch, job: &FetchJob) -> Result<u64, FetchFailure> {
    let storage =
        |e: &dyn std::fmt::Display| FetchFailure::Storage(format!("staging {}: {e}", fetch.digest));
    let staging = job.engine.staging_file().map_err(|e| storage(&e))?;
    let writer = staging.file().try_clone().map_err(|e| storage(&e))?;
    let _ = fetch
        .staged
        .set(staging.file().try_clone().map_err(|e| storage(&e))?);
    job.metrics.count_upstream_request();
    let response = job.upstream.request(
        "GET",
        job.repo.as_str(),
        &format!("blobs/{}", fetch.digest),
        &[],
    )?;
    let announced = response
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    fetch
        .progress
        .update(|s| s.phase = Phase::Streaming { len: announced });
    let mut body = response.into_reader();
    let mut hasher = Hasher::new(fetch.digest.algorithm());
    let mut buf = vec![0u8; PUBLISH_BYTES];
    let mut written = 0u64;
    let mut writer = writer;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match body.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FetchFailure::Outage(format!(
                        "upstream stopped sending {} after {} bytes: {e}",
                        fetch.digest,
                        written + filled as u64
                    )))
                }
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if announced.is_some_and(|len| written + filled as u64 > len) {
            return Err(FetchFailure::Invalid(format!(
                "upstream sent more than the {} bytes it announced for {}",
                announced.unwrap_or(0),
                fetch.digest
            )));
        }
        hasher.update(chunk);
        writer.write_all(chunk).map_err(|e| storage(&e))?;
        written += filled as u64;
        job.metrics.add_upstream_bytes(filled as u64);
        fetch.progress.update(|s| s.written = written);
    }
    if let Some(len) = announced {
        if written != len {
            return Err(FetchFailure::Outage(format!(
                "upstream closed the body of {} after {written} of {len} bytes",
                fetch.digest
            )));
        }
    }
    let actual = hasher.finish();
    if actual != fetch.digest {
        return Err(FetchFailure::Invalid(format!(
            "upstream sent bytes whose digest is {actual}, not {}",
            fetch.digest
        )));
    }
    job.engine
        .ingest_staged(&job.repo, &fetch.digest, staging, written)
        .map_err(|e| storage(&e))
}

/// A response body that is a blob still arriving from upstream: the range
/// `[start, end)` of the fetch's staging file, sent as it becomes sendable.
pub struct GrowingBlob {
    /// The fetch.
    pub fetch: Arc<BlobFetch>,
    /// A reader of the staging file.
    pub file: File,
    /// First byte to send.
    pub start: u64,
    /// Bytes to send.
    pub len: u64,
}

impl std::fmt::Debug for GrowingBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrowingBlob")
            .field("digest", &self.fetch.digest.to_string())
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl GrowingBlob {
    /// Waits until bytes past `sent` (relative to `start`) may be sent and
    /// returns how many in total may be; an error when the fetch failed.
    pub async fn sendable_after(&self, sent: u64) -> io::Result<u64> {
        let end = self.start + self.len;
        self.fetch
            .sendable_after(self.start + sent, end)
            .await
            .map(|absolute| absolute - self.start)
            .map_err(|failure| io::Error::other(failure.message().to_owned()))
    }
}

impl crate::exchange::StreamingSource for GrowingBlob {
    fn len(&self) -> u64 {
        self.len
    }

    fn sendable_after(&self, sent: u64) -> Pin<Box<dyn Future<Output = io::Result<u64>> + '_>> {
        Box::pin(GrowingBlob::sendable_after(self, sent))
    }

    fn file(&self) -> io::Result<(File, u64)> {
        Ok((self.file.try_clone()?, self.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn readers_get_all_but_the_last_byte_until_commit() {
        let fetch = Arc::new(BlobFetch::new(Digest::sha256_of(b"x")));
        fetch
            .progress
            .update(|s| s.phase = Phase::Streaming { len: Some(10) });
        fetch.progress.update(|s| s.written = 10);
        assert_eq!(block_on(fetch.sendable_after(0, 10)), Ok(9));
        let waiting = fetch.clone();
        let committer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            waiting
                .progress
                .update(|s| s.phase = Phase::Committed { len: 10 });
        });
        assert_eq!(
            block_on(fetch.sendable_after(9, 10)),
            Ok(10),
            "woken from another thread"
        );
        committer.join().expect("thread");
    }

    #[test]
    fn a_failure_reaches_every_waiter() {
        let fetch = Arc::new(BlobFetch::new(Digest::sha256_of(b"x")));
        fetch
            .progress
            .update(|s| s.phase = Phase::Streaming { len: Some(10) });
        let failing = fetch.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            failing
                .progress
                .update(|s| s.phase = Phase::Failed(FetchFailure::Invalid("wrong bytes".into())));
        });
        let result = block_on(async {
            let a = fetch.sendable_after(0, 10);
            let b = fetch.finished();
            futures_util::future::join(a, b).await
        });
        assert_eq!(result.0, Err(FetchFailure::Invalid("wrong bytes".into())));
        assert_eq!(result.1, Err(FetchFailure::Invalid("wrong bytes".into())));
        thread.join().expect("thread");
    }

    #[test]
    fn ranges_wait_for_their_own_bytes() {
        let fetch = BlobFetch::new(Digest::sha256_of(b"x"));
        fetch.progress.update(|s| {
            s.phase = Phase::Streaming { len: Some(100) };
            s.written = 40;
        });
        assert_eq!(
            block_on(fetch.sendable_after(10, 20)),
            Ok(19),
            "the range's last byte waits for the commit"
        );
        assert_eq!(block_on(fetch.sendable_after(30, 60)), Ok(40));
    }
}
