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

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bulk::BlockWriter;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::names::RepositoryName;

/// An upload session id (a random UUID). Its text form is safe as a path
/// component.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text is not an upload id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upload id must be a UUID")]
pub struct UploadIdError;

impl FromStr for UploadId {
    type Err = UploadIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form, so one session has one name.
        if s.len() != 36 {
            return Err(UploadIdError);
        }
        uuid::Uuid::parse_str(s)
            .map(UploadId)
            .map_err(|_| UploadIdError)
    }
}

/// One open upload session.
pub struct Upload {
    /// The repository the session was started in.
    pub repo: RepositoryName,
    /// The data file (created with the first byte).
    path: PathBuf,
    file: Option<File>,
    /// A session of the earlier layout: its directory.
    legacy_dir: Option<PathBuf>,
    len: u64,
    /// When the session was started (for purging a session with no bytes).
    started: SystemTime,
    /// sha256 of `data[..len]`, or `None` until rebuilt after a restart.
    hasher: Option<Hasher>,
    /// A bulk writer holds the session (see [`Upload::lease`]).
    leased: bool,
}

impl Upload {
    /// A new, empty session. No I/O: the caller records it in the journal.
    pub fn create(uploads_dir: &Path, id: UploadId, repo: RepositoryName) -> Upload {
        Upload {
            repo,
            path: data_path(uploads_dir, id),
            file: None,
            legacy_dir: None,
            len: 0,
            started: SystemTime::now(),
            hasher: Some(Hasher::new(Algorithm::Sha256)),
            leased: false,
        }
    }

    /// Reopens a session directory of the earlier layout; `None` if it is
    /// not a complete session (it is then removed by the caller).
    fn reopen_legacy(dir: &Path) -> Option<Upload> {
        let repo = fs::read_to_string(dir.join("repo")).ok()?.parse().ok()?;
        let path = dir.join("data");
        let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        let meta = file.metadata().ok()?;
        Some(Upload {
            repo,
            path,
            legacy_dir: Some(dir.to_owned()),
            len: meta.len(),
            started: meta.modified().unwrap_or_else(|_| SystemTime::now()),
            file: Some(file),
            hasher: None,
            leased: false,
        })
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file holding the received bytes (it exists once `len() > 0`).
    pub fn data_path(&self) -> &Path {
        &self.path
    }

    /// When the session last changed: its data file's modification time,
    /// or its start while it holds no bytes.
    pub fn touched(&self) -> SystemTime {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .and_then(|m| m.modified().ok())
            .unwrap_or(self.started)
    }

    /// Deletes the session's files (the caller ends it in the journal).
    pub fn remove(&mut self) -> io::Result<()> {
        // No data file was ever opened or created for this session (it got
        // no bytes, or they went straight to a segment): nothing to unlink.
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        drop(file);
        let result = match &self.legacy_dir {
            Some(dir) => fs::remove_dir_all(dir),
            None => fs::remove_file(&self.path),
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn file(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let file = crate::fsutil::open_or_create(&self.path)?;
            self.file = Some(file);
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn rehash(&mut self, algorithm: Algorithm) -> io::Result<Hasher> {
        let mut hasher = Hasher::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        let len = self.len;
        while offset < len {
            let want = buf.len().min((len - offset) as usize);
            let n = self.file()?.read_at(&mut buf[..want], offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upload data shorter than recorded",
                ));
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(hasher)
    }

    /// Appends `data` at the end. The caller has checked the offset.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.hasher.is_none() {
            self.hasher = Some(self.rehash(Algorithm::Sha256)?);
        }
        let at = self.len;
        self.file()?.write_all_at(data, at)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Whether a bulk writer holds the session: nothing else may append to
    /// or finish it until the lease ends.
    pub fn is_leased(&self) -> bool {
        self.leased
    }

    /// Hands the bytes to come to a bulk writer: the running sha256 of what
    /// the session holds and a [`BlockWriter`] on its data file (created
    /// here if it has none). The session is leased until
    /// [`Upload::end_lease`].
    pub fn lease(&mut self) -> io::Result<(Hasher, BlockWriter)> {
        let hasher = match self.hasher.take() {
            Some(h) => h,
            None => self.rehash(Algorithm::Sha256)?,
        };
        let file = self.file()?.try_clone()?;
        self.leased = true;
        Ok((hasher, BlockWriter::new(file, &self.path)))
    }

    /// Ends a lease: the session now holds `len` bytes, and `hasher` is the
    /// sha256 of exactly those (`None` if the writer and the hasher did not
    /// finish on the same byte; it is rebuilt on next use). Anything a
    /// failed write left past `len` is cut off, so the file's length stays
    /// the session's length (what a restart resumes from).
    pub fn end_lease(&mut self, len: u64, hasher: Option<Hasher>) -> io::Result<()> {
        self.leased = false;
        // Until proven otherwise, trust neither the hash nor the length.
        self.hasher = None;
        let file = self.file()?;
        let on_disk = file.metadata()?.len();
        if on_disk > len {
            file.set_len(len)?;
        }
        self.len = on_disk.min(len);
        if self.len == len {
            self.hasher = hasher;
        }
        Ok(())
    }

    /// The digest computed while the bytes streamed in, if it is for
    /// `algorithm` and still available (not after a restart).
    pub fn streamed_digest(&self, algorithm: Algorithm) -> Option<Digest> {
        match &self.hasher {
            Some(h) if algorithm == Algorithm::Sha256 => Some(h.clone().finish()),
            _ => None,
        }
    }

    /// All received bytes (for small blobs, which are copied into a segment).
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        if self.len > 0 {
            self.file()?.read_exact_at(&mut buf, 0)?;
        }
        Ok(buf)
    }

    /// The digest of the received bytes with `algorithm`, and fsyncs them.
    pub fn digest_and_sync(&mut self, algorithm: Algorithm) -> io::Result<Digest> {
        let digest = match &self.hasher {
            Some(h) if algorithm == Algorithm::Sha256 => h.clone().finish(),
            _ => self.rehash(algorithm)?.finish(),
        };
        self.file()?.sync_data()?;
        Ok(digest)
    }
}

fn data_path(uploads_dir: &Path, id: UploadId) -> PathBuf {
    uploads_dir.join(format!("{id}.data"))
}

const JOURNAL: &str = "sessions";
const JOURNAL_TMP: &str = "sessions.tmp";

/// Ended sessions tolerated in the journal before it is rewritten (and at
/// least as many as there are open ones).
const JOURNAL_ENDED_MAX: usize = 4096;

/// The session journal (see the module docs). Lines:
/// `+ <id> <unix seconds> <repository>`, `- <id>`, and `> <id>`: the
/// session's data file is being moved into the store as a blob (see
/// [`Journal::consumed`]).
pub struct Journal {
    inner: std::sync::Mutex<JournalInner>,
}

struct JournalInner {
    dir: PathBuf,
    file: File,
    /// Open sessions as the journal records them: start time and repository.
    open: HashMap<UploadId, (u64, String)>,
    /// `-` lines (and superseded lines) since the last rewrite.
    ended: usize,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl JournalInner {
    fn append(&mut self, line: &str) -> io::Result<()> {
        self.file.write_all(line.as_bytes())
    }

    /// Replaces the journal with one holding only the open sessions
    /// (written aside and renamed: a crash leaves the old or the new one).
    fn rewrite(&mut self) -> io::Result<()> {
        let mut text = String::new();
        for (id, (started, repo)) in &self.open {
            text.push_str(&format!("+ {id} {started} {repo}\n"));
        }
        let tmp = self.dir.join(JOURNAL_TMP);
        fs::write(&tmp, text)?;
        fs::rename(&tmp, self.dir.join(JOURNAL))?;
        self.file = open_append(&self.dir.join(JOURNAL))?;
        self.ended = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Journal {
    /// Reads the journal and the session files under `dir`, resumes every
    /// open session, removes what belongs to no open session, and rewrites
    /// the journal compactly.
    pub fn open(dir: &Path) -> io::Result<(Journal, HashMap<UploadId, Upload>)> {
        let mut open: HashMap<UploadId, (u64, String)> = HashMap::new();
        let mut consumed: std::collections::HashSet<UploadId> = std::collections::HashSet::new();
        if let Ok(text) = fs::read_to_string(dir.join(JOURNAL)) {
            // A torn last line (no newline) was never completed: ignored,
            // like any line that does not parse.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for line in complete.lines() {
                let mut fields = line.splitn(4, ' ');
                match (fields.next(), fields.next().map(str::parse::<UploadId>)) {
                    (Some("+"), Some(Ok(id))) => {
                        let started = fields.next().and_then(|t| t.parse().ok());
                        let repo = fields
                            .next()
                            .filter(|r| r.parse::<RepositoryName>().is_ok());
                        if let (Some(started), Some(repo)) = (started, repo) {
                            open.insert(id, (started, repo.to_owned()));
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
        let mut sessions = HashMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == JOURNAL {
                continue;
            }
            if let Ok(id) = name.parse::<UploadId>() {
                // The earlier layout: a directory per session.
                match Upload::reopen_legacy(&path) {
                    Some(upload) => {
                        sessions.insert(id, upload);
                    }
                    None => {
                        let _ = fs::remove_dir_all(&path);
                    }
                }
                continue;
            }
            let data_of = name
                .strip_suffix(".data")
                .and_then(|n| n.parse::<UploadId>().ok())
                .filter(|id| open.contains_key(id));
            match data_of {
                Some(id) => {
                    let file = OpenOptions::new().read(true).write(true).open(&path)?;
                    let (started, repo) = &open[&id];
                    let Ok(repo) = repo.parse() else { continue };
                    let len = file.metadata()?.len();
                    sessions.insert(
                        id,
                        Upload {
                            repo,
                            path,
                            file: Some(file),
                            legacy_dir: None,
                            len,
                            started: UNIX_EPOCH + Duration::from_secs(*started),
                            hasher: None,
                            leased: false,
                        },
                    );
                }
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        // Open sessions that never received a byte have no data file.
        // Neither has a session whose data file was moved into the store
        // by a finish that a crash cut short: it ended (the client starts
        // again, as after any unanswered final PUT), it is not empty.
        for (id, (started, repo)) in &open {
            if sessions.contains_key(id) || consumed.contains(id) {
                continue;
            }
            if let Ok(repo) = repo.parse() {
                let mut upload = Upload::create(dir, *id, repo);
                upload.started = UNIX_EPOCH + Duration::from_secs(*started);
                sessions.insert(*id, upload);
            }
        }
        open.retain(|id, _| sessions.get(id).is_some_and(|u| u.legacy_dir.is_none()));
        let mut inner = JournalInner {
            dir: dir.to_owned(),
            file: open_append(&dir.join(JOURNAL))?,
            open,
            ended: 0,
        };
        inner.rewrite()?;
        Ok((
            Journal {
                inner: std::sync::Mutex::new(inner),
            },
            sessions,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new session.
    pub fn start(&self, id: UploadId, upload: &Upload) -> io::Result<()> {
        let started = unix_secs(upload.started);
        let repo = upload.repo.as_str();
        let mut inner = self.lock();
        inner.append(&format!("+ {id} {started} {repo}\n"))?;
        inner.open.insert(id, (started, repo.to_owned()));
        Ok(())
    }

    /// Records that the session's data file is about to be moved into the
    /// store as a blob: if a crash follows, the session must not come back
    /// as an empty one (its acknowledged bytes are gone from it), so it
    /// ends at the next open unless its data file is still there.
    pub fn consumed(&self, id: UploadId) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.open.contains_key(&id) {
            return Ok(()); // a session of the earlier layout
        }
        inner.append(&format!("> {id}\n"))?;
        inner.ended += 1;
        Ok(())
    }

    /// Records that a session ended (finished, cancelled or purged).
    /// Best effort: a session whose end is not recorded comes back empty
    /// after a restart, and is purged as idle.
    pub fn end(&self, id: UploadId) {
        let mut inner = self.lock();
        if inner.open.remove(&id).is_none() {
            return; // a session of the earlier layout
        }
        if inner.append(&format!("- {id}\n")).is_err() {
            return;
        }
        inner.ended += 2;
        if inner.ended > JOURNAL_ENDED_MAX.max(inner.open.len()) {
            let _ = inner.rewrite();
        }
    }
}
