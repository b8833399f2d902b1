//! Upload sessions: a blob being received, possibly over several requests.
//!
//! Each session is a directory `uploads/<id>/` holding `data` (the bytes so
//! far) and `repo` (the repository it belongs to). Bytes are hashed as they
//! arrive so that finishing costs no second read; after a restart the hash
//! is rebuilt from `data` on first use, so a client can resume.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    dir: PathBuf,
    file: File,
    len: u64,
    /// sha256 of `data[..len]`, or `None` until rebuilt after a restart.
    hasher: Option<Hasher>,
}

impl Upload {
    /// Creates the session directory under `uploads_dir`.
    pub fn create(uploads_dir: &Path, id: UploadId, repo: RepositoryName) -> io::Result<Upload> {
        let dir = uploads_dir.join(id.to_string());
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("repo"), repo.as_str())?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("data"))?;
        Ok(Upload {
            repo,
            dir,
            file,
            len: 0,
            hasher: Some(Hasher::new(Algorithm::Sha256)),
        })
    }

    /// Reopens a session directory left by an earlier run; `None` if it is
    /// not a complete session (it is then removed by the caller).
    pub fn reopen(dir: &Path) -> Option<Upload> {
        let repo = fs::read_to_string(dir.join("repo")).ok()?.parse().ok()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("data"))
            .ok()?;
        let len = file.metadata().ok()?.len();
        Some(Upload {
            repo,
            dir: dir.to_owned(),
            file,
            len,
            hasher: None,
        })
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The session's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the received bytes.
    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn rehash(&mut self, algorithm: Algorithm) -> io::Result<Hasher> {
        let mut hasher = Hasher::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < self.len {
            let want = buf.len().min((self.len - offset) as usize);
            let n = self.file.read_at(&mut buf[..want], offset)?;
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
        if self.hasher.is_none() {
            self.hasher = Some(self.rehash(Algorithm::Sha256)?);
        }
        self.file.write_all_at(data, self.len)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.len += data.len() as u64;
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
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// The digest of the received bytes with `algorithm`, and fsyncs them.
    pub fn digest_and_sync(&mut self, algorithm: Algorithm) -> io::Result<Digest> {
        let digest = match &self.hasher {
            Some(h) if algorithm == Algorithm::Sha256 => h.clone().finish(),
            _ => self.rehash(algorithm)?.finish(),
        };
        self.file.sync_data()?;
        Ok(digest)
    }
}
