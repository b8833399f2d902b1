//! Manifests: `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.
//!
//! Content negotiation is lenient: the stored media type is served whatever
//! the Accept header says (modern clients list every type they parse; the
//! body's `mediaType` lets them refuse what they cannot use).

use berth_engine::manifest::MANIFEST_BYTES_MAX;
use berth_engine::{Reference, RepositoryName};

use super::ctx::{blocking, location, Ctx};
use crate::exchange::{Body, Response};
use crate::exchange::{Request, RequestBody};
use crate::oci_error::{ApiError, ErrorCode};

fn parse_reference(text: &str) -> Result<Reference, ApiError> {
    text.parse().map_err(|e| match e {
        berth_engine::ReferenceError::Digest(_) => ApiError::new(
            ErrorCode::DigestInvalid,
            format!("invalid digest {text:?}: {e}"),
        ),
        berth_engine::ReferenceError::Tag(_) => {
            ApiError::new(ErrorCode::TagInvalid, format!("invalid tag {text:?}: {e}"))
        }
    })
}

/// A reference to look up: a malformed digest is 400 DIGEST_INVALID, but a
/// string that is not a valid tag names no manifest and can never exist, so
/// it is 404 MANIFEST_UNKNOWN (the conformance suite probes with one).
pub(crate) fn existing_reference(text: &str) -> Result<Reference, ApiError> {
    match text.parse::<Reference>() {
        Ok(reference) => Ok(reference),
        Err(berth_engine::ReferenceError::Tag(_)) => Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("no manifest is named {text:?} (not a valid tag)"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::DigestInvalid,
            format!("invalid digest {text:?}: {e}"),
        )),
    }
}

/// Serves a manifest's exact bytes (or only its headers for HEAD).
pub fn get(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    reference: &str,
    head_only: bool,
) -> Result<Response, ApiError> {
    let reference = existing_reference(reference)?;
    let manifest = ctx.engine.manifest(repo, &reference)?;
    let etag = format!("\"{}\"", manifest.digest);
    if super::blobs::if_none_match(request, &etag) {
        return Ok(Response::new(304)
            .header("Docker-Content-Digest", manifest.digest.to_string())
            .header("ETag", etag));
    }
    let body = if head_only {
        Body::Sized(manifest.bytes.len() as u64)
    } else {
        Body::Shared(manifest.bytes)
    };
    let mut response = Response::new(200)
        .header("Content-Type", manifest.media_type)
        .header("Docker-Content-Digest", manifest.digest.to_string())
        .header("ETag", etag);
    if matches!(reference, Reference::Digest(_)) {
        response = response.header("Cache-Control", "max-age=31536000");
    }
    Ok(response.body(body))
}

/// Reads the whole manifest body, refusing more than the manifest limit
/// with 413 before reading it.
async fn read_manifest_body(body: &mut RequestBody<'_>) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::SizeTooLarge,
            format!("manifest exceeds the {MANIFEST_BYTES_MAX}-byte limit"),
        )
    };
    if body
        .declared_len()
        .is_some_and(|n| n > MANIFEST_BYTES_MAX as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(body.declared_len().unwrap_or(4096) as usize);
    loop {
        match body.chunk().await {
            Ok(Some(piece)) => {
                if bytes.len() + piece.len() > MANIFEST_BYTES_MAX {
                    return Err(too_large());
                }
                bytes.extend_from_slice(piece);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => return Err(ApiError::new(ErrorCode::ManifestInvalid, e.to_string())),
        }
    }
}

/// Stores a manifest under a tag or digest (201).
pub async fn put(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    reference: &str,
    body: &mut RequestBody<'_>,
) -> Result<Response, ApiError> {
    let reference = parse_reference(reference)?;
    let bytes = read_manifest_body(body).await?;
    let content_type = request.head.headers.get("content-type").map(str::to_owned);
    let (engine, repo_owned) = (ctx.engine.clone(), repo.clone());
    let stored = blocking(move || {
        engine.put_manifest(&repo_owned, &reference, content_type.as_deref(), &bytes)
    })
    .await?;
    let mut response = Response::new(201)
        .header(
            "Location",
            location(
                ctx,
                request,
                &format!("/v2/{repo}/manifests/{}", stored.digest),
            ),
        )
        .header("Docker-Content-Digest", stored.digest.to_string());
    if let Some(subject) = stored.subject {
        response = response.header("OCI-Subject", subject.to_string());
    }
    Ok(response)
}

/// Deletes a tag, or a manifest by digest with every tag naming it (202).
pub async fn delete(
    ctx: &Ctx,
    repo: &RepositoryName,
    reference: &str,
) -> Result<Response, ApiError> {
    if !ctx.settings.delete_enabled {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "deletes are disabled (storage.delete.enabled is false)",
        ));
    }
    let reference = existing_reference(reference)?;
    let (engine, repo_owned) = (ctx.engine.clone(), repo.clone());
    blocking(move || match &reference {
        Reference::Tag(tag) => engine.delete_tag(&repo_owned, tag),
        Reference::Digest(digest) => engine.delete_manifest(&repo_owned, digest),
    })
    .await?;
    Ok(Response::new(202))
}
