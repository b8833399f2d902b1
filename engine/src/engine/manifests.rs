//! The engine's manifest and tag writes (push, delete) and the referrers
//! listing.

use crate::digest::Digest;
use crate::error::{EngineError, Result};
use crate::io::OpenMode;
use crate::manifest;
use crate::metalog::Op;
use crate::names::{Reference, RepositoryName, Tag};
use crate::state;
use crate::upload::UploadId;

use super::{unix_now, Engine, Referrer, StoredManifest};

impl Engine {
    // ----- manifests and tags ------------------------------------------

    /// Manifests in `repo` whose `subject` is `subject`, optionally only those
    /// of one artifact type, sorted by digest. An unknown repository or
    /// subject has no referrers (an empty list, not an error).
    pub fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let mut found: Vec<(Digest, state::ManifestRecord)> = {
            let state = self.meta.read();
            let Some(r) = state.repos.get(repo.as_str()) else {
                return Ok(Vec::new());
            };
            r.manifests
                .iter()
                .filter(|(_, m)| m.subject.as_ref() == Some(subject))
                .filter(|(_, m)| {
                    artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type
                })
                .map(|(d, m)| (d.clone(), m.clone()))
                .collect()
        };
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(found.len());
        for (digest, record) in found {
            let bytes = self.read_stored(&digest)?;
            let annotations = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("annotations").and_then(|a| a.as_object().cloned()));
            out.push(Referrer {
                media_type: record.media_type,
                digest,
                size: record.len,
                artifact_type: record.artifact_type,
                annotations,
            });
        }
        Ok(out)
    }

    /// Validates and stores a manifest pushed as `reference` with the given
    /// Content-Type. Verifies the body against a digest reference, refuses
    /// manifests whose blobs or children are not in `repo`, and makes the
    /// bytes, the manifest record and the tag durable together: after a
    /// crash the tag update is wholly there or not at all. Blocks for fsync.
    pub fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<StoredManifest> {
        self.store_manifest(repo, reference, content_type, body, true)
    }

    /// [`Engine::put_manifest`], optionally without refusing manifests
    /// whose blobs or children `repo` lacks (a pull-through cache fetches
    /// those lazily).
    pub(crate) fn store_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
        require_references: bool,
    ) -> Result<StoredManifest> {
        let parsed = manifest::parse_manifest(content_type, body)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), body);
                if actual != *expected {
                    return Err(EngineError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(body),
        };
        let _gate = self.gate_shared();
        {
            // A descriptor's size must be the stored length of what it
            // names, wherever the repository holds it.
            let state = self.meta.read();
            let r = state.repos.get(repo.as_str());
            manifest::check_declared_sizes(
                &parsed,
                |d| r.and_then(|r| r.blobs.get(d).copied()),
                |d| r.and_then(|r| r.manifests.get(d)).map(|m| m.len),
            )?;
        }
        if require_references {
            let state = self.meta.read();
            let r = state.repos.get(repo.as_str());
            for blob in &parsed.blobs {
                if !r.is_some_and(|r| r.blobs.contains_key(blob)) {
                    return Err(EngineError::ManifestBlobUnknown(blob.clone()));
                }
            }
            for child in &parsed.children {
                if !r.is_some_and(|r| r.manifests.contains_key(child)) {
                    return Err(EngineError::ManifestBlobUnknown(child.clone()));
                }
            }
        }
        let mut references = parsed.blobs.clone();
        references.extend(parsed.children.iter().cloned());
        let mut ops = vec![Op::PutManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
            len: body.len() as u64,
            media_type: parsed.media_type,
            references,
            subject: parsed.subject.clone(),
            artifact_type: parsed.artifact_type,
            at: Some(unix_now()),
            written: None,
        }];
        if let Reference::Tag(tag) = reference {
            ops.push(Op::SetTag {
                repo: repo.to_string(),
                tag: tag.to_string(),
                digest: digest.clone(),
            });
        }
        if body.len() as u64 <= self.store.opts.small_blob_max {
            self.store.put_small_linked(&digest, body, ops)?;
        } else {
            if !self.store.contains(&digest) {
                let tmp = self.root.join("tmp").join(UploadId::random().to_string());
                let file = self.io.open(&tmp, OpenMode::CREATE_NEW)?;
                file.write_all_at(body, 0)?;
                file.sync_data()?;
                self.store.install_large(&digest, &tmp)?;
            }
            self.meta.commit(ops)?;
        }
        Ok(StoredManifest {
            digest,
            subject: parsed.subject,
        })
    }

    /// Deletes a manifest by digest, and every tag pointing at it.
    pub fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        self.resolve(repo, &Reference::Digest(digest.clone()))?;
        self.meta.commit(vec![Op::DeleteManifest {
            repo: repo.to_string(),
            digest: digest.clone(),
        }])
    }

    /// Deletes a tag; the manifest it named stays.
    pub fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> Result<()> {
        self.resolve(repo, &Reference::Tag(tag.clone()))?;
        self.meta.commit(vec![Op::DeleteTag {
            repo: repo.to_string(),
            tag: tag.to_string(),
        }])
    }
}
