//! The in-memory view of all metadata, rebuilt by replaying the log. Applying
//! an [`Op`] is deterministic and infallible, so replay after a crash yields
//! exactly the state that was acknowledged.

use std::collections::{BTreeMap, HashMap};

use crate::digest::Digest;
use crate::metalog::Op;

/// A manifest's metadata (its bytes live in the blob store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRecord {
    /// Length in bytes.
    pub len: u64,
    /// Media type it is served with.
    pub media_type: String,
    /// Blobs and child manifests it references.
    pub references: Vec<Digest>,
    /// Its subject, if any.
    pub subject: Option<Digest>,
    /// Its artifact type, if any.
    pub artifact_type: Option<String>,
    /// When it was pushed (Unix seconds; 0 if unknown).
    pub at: u64,
}

/// One repository's links, manifests and tags.
#[derive(Clone, Debug, Default)]
pub struct Repository {
    /// Blobs linked into the repository, with their lengths.
    pub blobs: HashMap<Digest, u64>,
    /// Manifests in the repository.
    pub manifests: HashMap<Digest, ManifestRecord>,
    /// Tags, sorted, each naming a manifest in `manifests`.
    pub tags: BTreeMap<String, Digest>,
    /// When each blob link was made (Unix seconds; absent if unknown).
    pub linked_at: HashMap<Digest, u64>,
}

impl Repository {
    fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty() && self.tags.is_empty()
    }
}

/// All repositories, sorted by name (the catalog order).
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Repositories by name.
    pub repos: BTreeMap<String, Repository>,
}

impl State {
    /// Applies one op. Ops that name something absent are no-ops, so replay
    /// never fails.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::LinkBlob {
                repo,
                digest,
                len,
                at,
                written: _,
            } => {
                let r = self.repos.entry(repo.clone()).or_default();
                r.blobs.insert(digest.clone(), *len);
                match at {
                    Some(at) => r.linked_at.insert(digest.clone(), *at),
                    None => r.linked_at.remove(digest),
                };
            }
            Op::UnlinkBlob { repo, digest } => {
                self.edit(repo, |r| {
                    r.blobs.remove(digest);
                    r.linked_at.remove(digest);
                });
            }
            Op::PutManifest {
                repo,
                digest,
                len,
                media_type,
                references,
                subject,
                artifact_type,
                at,
                written: _,
            } => {
                let record = ManifestRecord {
                    len: *len,
                    media_type: media_type.clone(),
                    references: references.clone(),
                    subject: subject.clone(),
                    artifact_type: artifact_type.clone(),
                    at: at.unwrap_or(0),
                };
                self.repos
                    .entry(repo.clone())
                    .or_default()
                    .manifests
                    .insert(digest.clone(), record);
            }
            Op::DeleteManifest { repo, digest } => {
                self.edit(repo, |r| {
                    r.manifests.remove(digest);
                    r.tags.retain(|_, target| target != digest);
                });
            }
            Op::SetTag { repo, tag, digest } => {
                self.repos
                    .entry(repo.clone())
                    .or_default()
                    .tags
                    .insert(tag.clone(), digest.clone());
            }
            Op::DeleteTag { repo, tag } => {
                self.edit(repo, |r| {
                    r.tags.remove(tag);
                });
            }
        }
    }

    fn edit(&mut self, repo: &str, change: impl FnOnce(&mut Repository)) {
        if let Some(r) = self.repos.get_mut(repo) {
            change(r);
            if r.is_empty() {
                self.repos.remove(repo);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_a_manifest_removes_its_tags_and_empty_repos_vanish() {
        let d = Digest::sha256_of(b"m");
        let mut s = State::default();
        s.apply(&Op::PutManifest {
            repo: "r".into(),
            digest: d.clone(),
            len: 1,
            media_type: "x".into(),
            references: vec![],
            subject: None,
            artifact_type: None,
            at: None,
            written: None,
        });
        s.apply(&Op::SetTag {
            repo: "r".into(),
            tag: "a".into(),
            digest: d.clone(),
        });
        s.apply(&Op::SetTag {
            repo: "r".into(),
            tag: "b".into(),
            digest: d.clone(),
        });
        assert_eq!(s.repos["r"].tags.len(), 2);
        s.apply(&Op::DeleteManifest {
            repo: "r".into(),
            digest: d,
        });
        assert!(s.repos.is_empty());
    }
}
