//! Blob reads and deletes: `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`,
//! with single byte ranges (206/416) and `If-None-Match` (304).

use berth_engine::{Digest, RepositoryName};
use berth_http::{parse_range, RangeRequest};

use super::error::{ApiError, ErrorCode};
use super::response::{Body, Response};
use super::{blocking, Ctx};
use crate::conn::Request;

/// Blobs are immutable: caches may keep them for a year.
pub const IMMUTABLE_CACHE_CONTROL: &str = "max-age=31536000";

/// Whether the request's `If-None-Match` names `etag` (or `*`).
pub fn if_none_match(request: &Request<'_>, etag: &str) -> bool {
    request
        .head
        .headers
        .get_all("if-none-match")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// Serves a blob (or only its headers for HEAD), honouring Range and
/// If-None-Match.
pub fn get(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    head_only: bool,
) -> Result<Response, ApiError> {
    let len = ctx.engine.blob_len(repo, digest)?;
    let etag = format!("\"{digest}\"");
    let base = |status: u16| {
        Response::new(status)
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", etag.clone())
            .header("Cache-Control", IMMUTABLE_CACHE_CONTROL)
    };
    if if_none_match(request, &etag) {
        return Ok(base(304));
    }
    let range = match request.head.headers.get("range") {
        Some(value) => parse_range(value, len),
        None => RangeRequest::Full,
    };
    let (status, start, count) = match range {
        RangeRequest::Full => (200, 0, len),
        RangeRequest::Partial { start, end } => (206, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let error = ApiError::new(
                ErrorCode::RangeInvalid,
                format!("range not satisfiable for a {len}-byte blob"),
            );
            return Ok(Response::error(&error).header("Content-Range", format!("bytes */{len}")));
        }
        RangeRequest::Multiple => {
            let error = ApiError::new(
                ErrorCode::RangeInvalid,
                "multiple ranges in one request are not supported; ask for one range",
            );
            return Ok(Response::error(&error).header("Content-Range", format!("bytes */{len}")));
        }
    };
    let mut response = base(status)
        .header("Content-Type", "application/octet-stream")
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        response = response.header(
            "Content-Range",
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    let body = if head_only {
        Body::Sized(count)
    } else {
        let mut blob = ctx.engine.open_blob(repo, digest)?;
        blob.offset += start;
        blob.len = count;
        Body::Blob(blob)
    };
    Ok(response.body(body))
}

/// Unlinks a blob from the repository (202), if deletes are enabled.
pub async fn delete(
    ctx: &Ctx,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Response, ApiError> {
    if !ctx.settings.delete_enabled {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            "deletes are disabled (storage.delete.enabled is false)",
        ));
    }
    let (engine, repo_owned, digest_owned) = (ctx.engine.clone(), repo.clone(), digest.clone());
    blocking(move || engine.delete_blob(&repo_owned, &digest_owned)).await?;
    Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()))
}
