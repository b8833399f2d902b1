//! Blob reads and deletes: `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`,
//! with single byte ranges (206/416) and `If-None-Match` (304).

use berth_engine::{Digest, RepositoryName};
use berth_http::{parse_range, RangeRequest};

use super::ctx::{blocking, Ctx};
use crate::exchange::Request;
use crate::exchange::{Body, Response};
use crate::oci_error::{ApiError, ErrorCode};

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
    if if_none_match(request, &etag) {
        return Ok(Response::new(304)
            .header("Docker-Content-Digest", digest.to_string())
            .header("ETag", etag)
            .header("Cache-Control", IMMUTABLE_CACHE_CONTROL));
    }
    let (status, start, count) = match requested_range(request, len) {
        Ok(range) => range,
        Err(response) => return Ok(*response),
    };
    let response = blob_response(digest, status, start, count, len);
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

/// The status, first byte and byte count a blob request asks for (200 for
/// the whole blob, 206 for one range), or the 416 to answer.
pub fn requested_range(request: &Request<'_>, len: u64) -> Result<(u16, u64, u64), Box<Response>> {
    let range = match request.head.headers.get("range") {
        Some(value) => parse_range(value, len),
        None => RangeRequest::Full,
    };
    let refuse = |message: String| {
        let error = ApiError::new(ErrorCode::RangeInvalid, message);
        Box::new(Response::error(&error).header("Content-Range", format!("bytes */{len}")))
    };
    match range {
        RangeRequest::Full => Ok((200, 0, len)),
        RangeRequest::Partial { start, end } => Ok((206, start, end - start + 1)),
        RangeRequest::Unsatisfiable => Err(refuse(format!(
            "range not satisfiable for a {len}-byte blob"
        ))),
        RangeRequest::Multiple => Err(refuse(
            "multiple ranges in one request are not supported; ask for one range".into(),
        )),
    }
}

/// The headers of a blob response carrying `count` bytes from `start` of a
/// `len`-byte blob (with `Content-Range` for a 206); the caller sets the body.
pub fn blob_response(digest: &Digest, status: u16, start: u64, count: u64, len: u64) -> Response {
    let mut response = Response::new(status)
        .header("Docker-Content-Digest", digest.to_string())
        .header("ETag", format!("\"{digest}\""))
        .header("Cache-Control", IMMUTABLE_CACHE_CONTROL)
        .header("Content-Type", "application/octet-stream")
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        response = response.header(
            "Content-Range",
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    response
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
