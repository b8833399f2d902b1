//! Upload sessions: a blob being received, possibly over several requests.
//!
//! A session is a line in the session journal `uploads/sessions` (its id,
//! start time and repository) and, once it has received bytes, a data file
//! `uploads/<id>.data` (the bytes so far). Starting a session is one
//! append to the journal, with no file or directory created: a blob pushed
//! as `POST` then one `PUT` with the body never touches a session file (the
//! body goes straight into a segment, see `Engine::finish_upload_with`).
//! Ending a session appends `- <id>`; the journal is rewritten with only
//! the open sessions at open and whenever ended ones dominate it.
//!
//! Durability: neither the journal nor the data file is fsynced, exactly as
//! the session directories of earlier versions were not: both survive a
//! process crash (`kill -9`; the page cache keeps them) and a clean
//! restart, and a power loss may lose a session, which the client then
//! starts again. Nothing acknowledged as *stored* depends on them: finishing
//! makes the blob durable on its own (`docs/design/segment-store.md`).
//!
//! Bytes are hashed as they arrive so that finishing costs no second read;
//! after a restart the hash is rebuilt from the data file on first use, so a
//! client can resume. Sessions written by earlier versions (a directory
//! `uploads/<id>/` holding `data` and `repo`) are resumed as they are.
//!
//! Cost of a session: no file descriptor while it is idle (data files are
//! opened on use through a small cache, `super::files`; opening the store
//! opens none) and about 150 bytes of memory: the repository name, the
//! client key shared with the client's other sessions, a length, a start
//! time and flags; the running hash is allocated with the first byte.
//! Sessions are capped overall and per client ([`UploadLimits`]); the
//! client key is kept in the journal, so the counts survive a restart.
//!
//! Every file operation (the journal, the data files, the listing at open,
//! the removals) goes through the engine's [`Io`], so a simulated disk
//! stands in for the real one here as everywhere else in the engine.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::block::BlockWriter;
use super::files::OpenFiles;
pub use super::id::{UploadId, UploadIdError};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{EngineError, Result};
use crate::io::{Io, IoFile, OpenMode};
use crate::names::RepositoryName;

/// How many upload sessions may be open at once (15.2): beyond either cap,
/// starting a session fails with [`EngineError::TooManyUploads`] and
/// creates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    /// Open sessions in the whole store.
    pub sessions_max: usize,
    /// Open sessions started by one client (an authenticated user name, or
    /// the client's address when there is none).
    pub sessions_per_client_max: usize,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            sessions_max: 10_000,
            sessions_per_client_max: 1_000,
        }
    }
}

/// Longest client key kept (longer keys are cut; a key only needs to tell
/// clients apart).
const CLIENT_KEY_BYTES_MAX: usize = 128;

/// The form of a client key that is counted and journalled: no whitespace
/// or control characters (the journal is line- and space-separated), at
/// most [`CLIENT_KEY_BYTES_MAX`] bytes.
pub(crate) fn client_key(client: &str) -> String {
    let mut key = String::with_capacity(client.len().min(CLIENT_KEY_BYTES_MAX));
    for c in client.chars() {
        if key.len() + c.len_utf8() > CLIENT_KEY_BYTES_MAX {
            break;
        }
        key.push(if c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        });
    }
    key
}

/// One open upload session: what is fixed at its start, readable without a
/// lock, and its mutable [`Upload`] state.
pub(crate) struct Session {
    /// The repository the session was started in.
    pub(crate) repo: RepositoryName,
    /// Who started it (counted against [`UploadLimits::sessions_per_client_max`]);
    /// shared with the client's other sessions.
    client: Option<Arc<str>>,
    /// Unix seconds at the start (for purging a session with no bytes).
    started: u64,
    /// A session of the earlier layout (never journalled).
    legacy: bool,
    state: Mutex<Upload>,
}

impl Session {
    /// Locks the session's state.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Upload> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the session started.
    pub(crate) fn started(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.started)
    }
}

/// The mutable state of a session. Its data file is reached through
/// [`OpenFiles`], never held.
pub(crate) struct Upload {
    id: UploadId,
    /// A session of the earlier layout (a directory `uploads/<id>/`).
    legacy: bool,
    /// Whether a data file may exist (created with the first byte).
    has_file: bool,
    /// A bulk writer holds the session (see [`Upload::lease`]).
    leased: bool,
    /// The session ended: its files are gone and must not be recreated.
    removed: bool,
    /// When this process last wrote to the data file (`None` since open):
    /// the idle time of a disk that keeps no modification times.
    written: Option<SystemTime>,
    len: u64,
    /// sha256 of `data[..len]`, or `None` until needed (after a restart,
    /// after a lease that ended short, or while the session is empty).
    hasher: Option<Box<Hasher>>,
}

impl Upload {
    /// Bytes received so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The file holding the received bytes (it exists once `len() > 0`).
    pub(crate) fn data_path(&self, files: &OpenFiles) -> PathBuf {
        files.path(self.id, self.legacy)
    }

    /// When the session last changed: the latest of its data file's
    /// modification time (where the disk keeps one), this process's last
    /// write to it, and `started`.
    pub(crate) fn touched(&self, files: &OpenFiles, started: SystemTime) -> SystemTime {
        if !self.has_file {
            return started;
        }
        let modified = files.io().modified(&self.data_path(files)).ok().flatten();
        [modified, self.written]
            .into_iter()
            .flatten()
            .fold(started, SystemTime::max)
    }

    /// Deletes the session's files (the caller ends it in the journal).
    pub(crate) fn remove(&mut self, files: &OpenFiles) -> io::Result<()> {
        self.removed = true;
        files.forget(self.id);
        // No data file was ever created for this session (it got no bytes,
        // or they went straight to a segment): nothing to unlink.
        if !std::mem::replace(&mut self.has_file, false) {
            return Ok(());
        }
        let result = if self.legacy {
            remove_tree(files.io(), &files.dir().join(self.id.to_string()))
        } else {
            files.io().remove_file(&self.data_path(files))
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn file(&mut self, files: &OpenFiles) -> io::Result<Arc<dyn IoFile>> {
        if self.removed {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the upload session has ended",
            ));
        }
        let file = files.get(self.id, self.legacy)?;
        self.has_file = true;
        Ok(file)
    }

    fn rehash(&mut self, files: &OpenFiles, algorithm: Algorithm) -> io::Result<Hasher> {
        let mut hasher = Hasher::new(algorithm);
        let len = self.len;
        if len == 0 {
            return Ok(hasher);
        }
        let file = self.file(files)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < len {
            let n = buf.len().min((len - offset) as usize);
            file.read_exact_at(&mut buf[..n], offset).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "upload data shorter than recorded")
                } else {
                    e
                }
            })?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(hasher)
    }

    /// Appends `data` at the end. The caller has checked the offset.
    pub(crate) fn append(&mut self, files: &OpenFiles, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.hasher.is_none() {
            self.hasher = Some(Box::new(self.rehash(files, Algorithm::Sha256)?));
        }
        let at = self.len;
        self.file(files)?.write_all_at(data, at)?;
        self.written = Some(SystemTime::now());
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Whether a bulk writer holds the session: nothing else may append to
    /// or finish it until the lease ends.
    pub(crate) fn is_leased(&self) -> bool {
        self.leased
    }

    /// Hands the bytes to come to a bulk writer: the running sha256 of what
    /// the session holds and a [`BlockWriter`] on its data file (created
    /// here if it has none). The session is leased until
    /// [`Upload::end_lease`].
    pub(crate) fn lease(&mut self, files: &OpenFiles) -> io::Result<(Hasher, BlockWriter)> {
        let hasher = match self.hasher.take() {
            Some(h) => *h,
            None => self.rehash(files, Algorithm::Sha256)?,
        };
        let file = self.file(files)?;
        self.leased = true;
        let writer = BlockWriter::new(files.io(), file, &self.data_path(files));
        Ok((hasher, writer))
    }

    /// Ends a lease: the session now holds `len` bytes, and `hasher` is the
    /// sha256 of exactly those (`None` if the writer and the hasher did not
    /// finish on the same byte; it is rebuilt on next use). Anything a
    /// failed write left past `len` is cut off, so the file's length stays
    /// the session's length (what a restart resumes from).
    pub(crate) fn end_lease(
        &mut self,
        files: &OpenFiles,
        len: u64,
        hasher: Option<Hasher>,
    ) -> io::Result<()> {
        self.leased = false;
        // Until proven otherwise, trust neither the hash nor the length.
        self.hasher = None;
        self.written = Some(SystemTime::now());
        let file = self.file(files)?;
        let on_disk = file.len()?;
        if on_disk > len {
            file.set_len(len)?;
        }
        self.len = on_disk.min(len);
        if self.len == len {
            self.hasher = hasher.map(Box::new);
        }
        Ok(())
    }

    /// The digest computed while the bytes streamed in, if it is for
    /// `algorithm` and still available (not after a restart).
    pub(crate) fn streamed_digest(&self, algorithm: Algorithm) -> Option<Digest> {
        match &self.hasher {
            Some(h) if algorithm == Algorithm::Sha256 => Some((**h).clone().finish()),
            _ if self.len == 0 => Some(Digest::of(algorithm, b"")),
            _ => None,
        }
    }

    /// All received bytes (for small blobs, which are copied into a segment).
    pub(crate) fn read_all(&mut self, files: &OpenFiles) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        if self.len > 0 {
            self.file(files)?.read_exact_at(&mut buf, 0)?;
        }
        Ok(buf)
    }

    /// The digest of the received bytes with `algorithm`, and fsyncs them.
    pub(crate) fn digest_and_sync(
        &mut self,
        files: &OpenFiles,
        algorithm: Algorithm,
    ) -> io::Result<Digest> {
        let digest = match &self.hasher {
            Some(h) if algorithm == Algorithm::Sha256 => (**h).clone().finish(),
            _ => self.rehash(files, algorithm)?.finish(),
        };
        self.file(files)?.sync_data()?;
        Ok(digest)
    }
}

const JOURNAL: &str = "sessions";
const JOURNAL_TMP: &str = "sessions.tmp";

/// Ended sessions tolerated in the journal before it is rewritten (and at
/// least as many as there are open ones).
const JOURNAL_ENDED_MAX: usize = 4096;

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Removes the directory `dir` and everything in it.
fn remove_tree(io: &dyn Io, dir: &Path) -> io::Result<()> {
    for entry in io.read_dir(dir)? {
        let path = dir.join(&entry.name);
        if entry.is_dir {
            remove_tree(io, &path)?;
        } else {
            io.remove_file(&path)?;
        }
    }
    io.remove_dir(dir)
}

/// The open sessions, their journal and their data files.
///
/// The journal (see the module docs) has lines
/// `+ <id> <unix seconds> <repository>[ <client>]`, `- <id>`, and
/// `> <id>`: the session's data file is being moved into the store as a
/// blob (see [`Sessions::consumed`]). Lock order: a session's state, then
/// the registry; the registry never waits for a session.
pub(crate) struct Sessions {
    files: OpenFiles,
    registry: Mutex<Registry>,
}

struct Registry {
    sessions: HashMap<UploadId, Arc<Session>>,
    /// Open sessions per client key (entries at zero are removed).
    per_client: HashMap<Arc<str>, usize>,
    journal: Box<dyn IoFile>,
    /// The journal's length: where the next line goes.
    journal_end: u64,
    /// `-` and `>` lines since the last rewrite.
    ended: usize,
}

impl Registry {
    fn append(&mut self, line: &str) -> io::Result<()> {
        self.journal
            .write_all_at(line.as_bytes(), self.journal_end)?;
        self.journal_end += line.len() as u64;
        Ok(())
    }

    /// Replaces the journal with one holding only the open sessions
    /// (written aside and renamed: a crash leaves the old or the new one).
    fn rewrite(&mut self, io: &dyn Io, dir: &Path) -> io::Result<()> {
        let mut text = String::new();
        for (id, session) in &self.sessions {
            if !session.legacy {
                text.push_str(&journal_line(*id, session));
            }
        }
        let tmp = dir.join(JOURNAL_TMP);
        let journal = io.open(&tmp, OpenMode::CREATE_TRUNCATE)?;
        journal.write_all_at(text.as_bytes(), 0)?;
        drop(journal);
        io.rename(&tmp, &dir.join(JOURNAL))?;
        self.journal = io.open(&dir.join(JOURNAL), OpenMode::READ_WRITE)?;
        self.journal_end = text.len() as u64;
        self.ended = 0;
        Ok(())
    }

    /// The shared key for `client`, counted once more.
    fn count_in(&mut self, client: &str) -> Arc<str> {
        if let Some((key, n)) = self.per_client.get_key_value(client) {
            let key = key.clone();
            let n = *n;
            self.per_client.insert(key.clone(), n + 1);
            return key;
        }
        let key: Arc<str> = Arc::from(client);
        self.per_client.insert(key.clone(), 1);
        key
    }

    fn count_out(&mut self, client: &str) {
        if let Some(n) = self.per_client.get_mut(client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(client);
            }
        }
    }
}

fn journal_line(id: UploadId, session: &Session) -> String {
    let (started, repo) = (session.started, session.repo.as_str());
    match session.client.as_deref() {
        Some(client) => format!("+ {id} {started} {repo} {client}\n"),
        None => format!("+ {id} {started} {repo}\n"),
    }
}

#[allow(clippy::too_many_arguments)]
fn new_session(
    id: UploadId,
    repo: RepositoryName,
    client: Option<Arc<str>>,
    started: u64,
    len: u64,
    legacy: bool,
    has_file: bool,
) -> Arc<Session> {
    Arc::new(Session {
        repo,
        client,
        started,
        legacy,
        state: Mutex::new(Upload {
            id,
            legacy,
            has_file,
            leased: false,
            removed: false,
            written: None,
            len,
            hasher: None,
        }),
    })
}

impl Sessions {
    /// Reads the journal and the session files under `dir` on `io`
    /// (without opening any data file), resumes every open session,
    /// removes what belongs to no open session, and rewrites the journal
    /// compactly. Every later file operation of the sessions goes through
    /// `io` too.
    pub(crate) fn open(io: Arc<dyn Io>, dir: &Path) -> io::Result<Sessions> {
        // Open sessions as the journal records them.
        let mut open: HashMap<UploadId, (u64, String, Option<String>)> = HashMap::new();
        let mut consumed: std::collections::HashSet<UploadId> = std::collections::HashSet::new();
        let journal_text = io
            .read(&dir.join(JOURNAL))
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(text) = journal_text {
            // A torn last line (no newline) was never completed: ignored,
            // like any line that does not parse.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for line in complete.lines() {
                let mut fields = line.splitn(5, ' ');
                match (fields.next(), fields.next().map(str::parse::<UploadId>)) {
                    (Some("+"), Some(Ok(id))) => {
                        let started = fields.next().and_then(|t| t.parse().ok());
                        let repo = fields
                            .next()
                            .filter(|r| r.parse::<RepositoryName>().is_ok());
                        let client = fields.next().filter(|c| !c.is_empty()).map(client_key);
                        if let (Some(started), Some(repo)) = (started, repo) {
                            open.insert(id, (started, repo.to_owned(), client));
                        }
                    }
                    (Some("-"), Some(Ok(id))) => {
                        open.remove(&id);
                    }
                    (Some(">"), Some(Ok(id))) => {
                        consumed.insert(id);
                    }
                    _ => {}
                }
            }
        }
        let mut sessions: HashMap<UploadId, Arc<Session>> = HashMap::new();
        let mut per_client: HashMap<Arc<str>, usize> = HashMap::new();
        let mut count_in = |client: Option<String>| -> Option<Arc<str>> {
            let client = client?;
            let key = match per_client.get_key_value(client.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(client),
            };
            *per_client.entry(key.clone()).or_insert(0) += 1;
            Some(key)
        };
        for entry in io.read_dir(dir)? {
            let path = dir.join(&entry.name);
            let Some(name) = entry.name.to_str() else {
                continue;
            };
            if name == JOURNAL {
                continue;
            }
            if let Ok(id) = name.parse::<UploadId>() {
                // The earlier layout: a directory per session.
                match legacy_session(&*io, &path) {
                    Some((repo, len, started)) => {
                        let session = new_session(id, repo, None, started, len, true, true);
                        sessions.insert(id, session);
                    }
                    None if entry.is_dir => {
                        let _ = remove_tree(&*io, &path);
                    }
                    None => {
                        let _ = io.remove_file(&path);
                    }
                }
                continue;
            }
            let data_of = name
                .strip_suffix(".data")
                .and_then(|n| n.parse::<UploadId>().ok())
                .filter(|id| open.contains_key(id));
            let Some(id) = data_of else {
                let _ = io.remove_file(&path);
                continue;
            };
            let Some((started, repo, client)) = open.get(&id).cloned() else {
                continue;
            };
            let Ok(repo) = repo.parse() else { continue };
            let Some(stat) = io.stat(&path)? else {
                continue; // gone since the listing
            };
            let len = stat.len;
            let client = count_in(client);
            sessions.insert(id, new_session(id, repo, client, started, len, false, true));
        }
        // Open sessions that never received a byte have no data file.
        // Neither has a session whose data file was moved into the store
        // by a finish that a crash cut short: it ended (the client starts
        // again, as after any unanswered final PUT), it is not empty.
        for (id, (started, repo, client)) in open {
            if sessions.contains_key(&id) || consumed.contains(&id) {
                continue;
            }
            if let Ok(repo) = repo.parse() {
                let client = count_in(client);
                sessions.insert(id, new_session(id, repo, client, started, 0, false, false));
            }
        }
        let journal = io.open(&dir.join(JOURNAL), OpenMode::OPEN_OR_CREATE)?;
        let journal_end = journal.len()?;
        let mut registry = Registry {
            sessions,
            per_client,
            journal,
            journal_end,
            ended: 0,
        };
        registry.rewrite(&*io, dir)?;
        Ok(Sessions {
            files: OpenFiles::new(io, dir),
            registry: Mutex::new(registry),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions' data files.
    pub(crate) fn files(&self) -> &OpenFiles {
        &self.files
    }

    /// Open sessions.
    pub(crate) fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The open session `id`.
    pub(crate) fn get(&self, id: UploadId) -> Option<Arc<Session>> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Every open session.
    pub(crate) fn all(&self) -> Vec<(UploadId, Arc<Session>)> {
        let registry = self.lock();
        registry
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }

    /// Records and opens a new, empty session in `repo` for `client` (no
    /// file is created), unless `limits` are reached: then
    /// [`EngineError::TooManyUploads`] and nothing changes.
    pub(crate) fn start(
        &self,
        repo: &RepositoryName,
        client: Option<&str>,
        limits: Option<UploadLimits>,
    ) -> Result<UploadId> {
        let id = UploadId::random();
        let started = unix_secs(SystemTime::now());
        let client = client.map(client_key);
        let mut registry = self.lock();
        if let Some(limits) = limits {
            if registry.sessions.len() >= limits.sessions_max {
                return Err(EngineError::TooManyUploads {
                    max: limits.sessions_max,
                    per_client: false,
                });
            }
            let of_client = client
                .as_deref()
                .and_then(|c| registry.per_client.get(c))
                .copied()
                .unwrap_or(0);
            if client.is_some() && of_client >= limits.sessions_per_client_max {
                return Err(EngineError::TooManyUploads {
                    max: limits.sessions_per_client_max,
                    per_client: true,
                });
            }
        }
        let line = match &client {
            Some(client) => format!("+ {id} {started} {} {client}\n", repo.as_str()),
            None => format!("+ {id} {started} {}\n", repo.as_str()),
        };
        registry.append(&line)?;
        let client = client.map(|c| registry.count_in(&c));
        let session = new_session(id, repo.clone(), client, started, 0, false, false);
        registry.sessions.insert(id, session);
        Ok(id)
    }

    /// Records that session `id`'s data file is about to be moved into the
    /// store as a blob: if a crash follows, the session must not come back
    /// as an empty one (its acknowledged bytes are gone from it), so it
    /// ends at the next open unless its data file is still there.
    pub(crate) fn consumed(&self, id: UploadId, session: &Session) -> io::Result<()> {
        if session.legacy {
            return Ok(()); // a session of the earlier layout
        }
        let mut registry = self.lock();
        registry.append(&format!("> {id}\n"))?;
        registry.ended += 1;
        Ok(())
    }

    /// Forgets session `id` (finished, cancelled or purged) and records
    /// its end. The journal line is best effort: a session whose end is
    /// not recorded comes back empty after a restart, and is purged as idle.
    pub(crate) fn end(&self, id: UploadId) {
        let mut registry = self.lock();
        let Some(session) = registry.sessions.remove(&id) else {
            return;
        };
        if session.legacy {
            return; // a session of the earlier layout
        }
        if let Some(client) = session.client.as_deref() {
            registry.count_out(client);
        }
        if registry.append(&format!("- {id}\n")).is_err() {
            return;
        }
        registry.ended += 2;
        if registry.ended > JOURNAL_ENDED_MAX.max(registry.sessions.len()) {
            let _ = registry.rewrite(self.files.io(), self.files.dir());
        }
    }

    /// Open sessions counted against `client` (for tests).
    #[cfg(test)]
    pub(crate) fn of_client(&self, client: &str) -> usize {
        self.lock()
            .per_client
            .get(client_key(client).as_str())
            .copied()
            .unwrap_or(0)
    }
}

/// Reads a session directory of the earlier layout: its repository, length
/// and start; `None` if it is not a complete session (it is then removed
/// by the caller).
fn legacy_session(io: &dyn Io, dir: &Path) -> Option<(RepositoryName, u64, u64)> {
    let repo = String::from_utf8(io.read(&dir.join("repo")).ok()?)
        .ok()?
        .parse()
        .ok()?;
    let data = dir.join("data");
    let stat = io.stat(&data).ok()??;
    let started = io
        .modified(&data)
        .ok()
        .flatten()
        .unwrap_or_else(SystemTime::now);
    Some((repo, stat.len, unix_secs(started)))
}
