//! Blob reads and deletes: `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`.

use berth_engine::{Digest, RepositoryName};

use super::error::{ApiError, ErrorCode};
use super::response::{Body, Response};
use super::{blocking, Ctx};

/// Blobs are immutable: caches may keep them for a year.
const IMMUTABLE_CACHE_CONTROL: &str = "max-age=31536000";

/// Serves a blob, or only its headers for HEAD.
pub fn get(ctx: &Ctx, repo: &RepositoryName, digest: &Digest, head_only: bool) -> Result<Response, ApiError> {
    let body = if head_only {
        Body::Sized(ctx.engine.blob_len(repo, digest)?)
    } else {
        Body::Blob(ctx.engine.open_blob(repo, digest)?)
    };
    Ok(Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest.to_string())
        .header("ETag", format!("\"{digest}\""))
        .header("Cache-Control", IMMUTABLE_CACHE_CONTROL)
        .body(body))
}

/// Unlinks a blob from the repository (202), if deletes are enabled.
pub async fn delete(ctx: &Ctx, repo: &RepositoryName, digest: &Digest) -> Result<Response, ApiError> {
    if !ctx.settings.delete_enabled {
        return Err(ApiError::new(ErrorCode::Unsupported, "deletes are disabled (storage.delete.enabled is false)"));
    }
    let (engine, repo_owned, digest_owned) = (ctx.engine.clone(), repo.clone(), digest.clone());
    blocking(move || engine.delete_blob(&repo_owned, &digest_owned)).await?;
    Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()))
}
