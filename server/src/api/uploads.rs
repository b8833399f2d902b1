//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic with
//! `?digest=`, or cross-repository mount), and on a session
//! `GET` (status), `PATCH` (append), `PUT ?digest=` (finish), `DELETE`
//! (cancel). Bodies stream into the engine as they arrive; large ones
//! (or of unknown length) into blocks lent by the engine's upload writer
//! ([`berth_engine::BodyWriter`]), which hashes and writes them: this
//! module only moves socket bytes into the blocks.

use std::sync::Arc;

use berth_engine::{BodyWriter, Engine, EngineError, Handed, RepositoryName, UploadId};

use super::ctx::{blocking, location, parse_digest, repository, Ctx};
use super::query::Query;
use super::upload_state::UploadState;
use crate::exchange::Response;
use crate::exchange::{Request, RequestBody};
use crate::oci_error::{ApiError, ErrorCode};

/// `Range` header value for an upload holding `len` bytes (registry:2 says
/// `0-0` for an empty upload too).
fn range_value(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}

/// The session's URL path with its signed `_state` (as registry:2 sends it).
fn session_path(ctx: &Ctx, repo: &RepositoryName, id: UploadId, len: u64) -> String {
    let state = UploadState {
        name: repo.to_string(),
        uuid: id.to_string(),
        offset: len,
    };
    format!(
        "/v2/{repo}/blobs/uploads/{id}?_state={}",
        ctx.settings.upload_state.sign(&state)
    )
}

/// Refuses a `_state` that this registry's secret did not sign, or that
/// names another session. A request without `_state` is accepted: the
/// session id alone identifies it on this node.
pub fn check_state(
    ctx: &Ctx,
    repo: &RepositoryName,
    id: UploadId,
    query: &Query,
) -> Result<(), ApiError> {
    let Some(token) = query.get("_state") else {
        return Ok(());
    };
    let state = ctx
        .settings
        .upload_state
        .verify(token)
        .map_err(|e| ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?;
    if state.name != repo.as_str() || state.uuid != id.to_string() {
        return Err(ApiError::new(
            ErrorCode::BlobUploadInvalid,
            "the _state parameter belongs to another upload session",
        ));
    }
    Ok(())
}

/// The 202 (or 204) answer describing an open session.
fn session_response(
    ctx: &Ctx,
    request: &Request<'_>,
    status: u16,
    repo: &RepositoryName,
    id: UploadId,
    len: u64,
) -> Response {
    Response::new(status)
        .header(
            "Location",
            location(ctx, request, &session_path(ctx, repo, id, len)),
        )
        .header("Range", range_value(len))
        .header("Docker-Upload-UUID", id.to_string())
}

/// A `Content-Range: <start>-<end>` request header (inclusive).
fn content_range(request: &Request<'_>) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(text) = request.head.headers.get("content-range") else {
        return Ok(None);
    };
    berth_http::parse_content_range(text)
        .map(Some)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range must be <start>-<end>, got {text:?}: {e}"),
            )
        })
}

/// 416 with the session's current Range and Location, as the spec requires
/// for an out-of-order chunk.
fn out_of_order(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
    len: u64,
    got: u64,
) -> Response {
    let error = ApiError::new(
        ErrorCode::RangeInvalid,
        format!("chunk starts at {got}, but the upload holds {len} bytes"),
    );
    let mut response = Response::error(&error);
    response.headers.push((
        "Location",
        location(ctx, request, &session_path(ctx, repo, id, len)),
    ));
    response.headers.push(("Range", range_value(len)));
    response
        .headers
        .push(("Docker-Upload-UUID", id.to_string()));
    response
}

/// Outcome of streaming a request body into a session.
pub(super) enum Received {
    /// The body was appended; the session now holds this many bytes.
    Appended(u64),
    /// The chunk did not start where the session ends.
    OutOfOrder {
        /// Bytes the session holds.
        len: u64,
        /// Where the chunk claimed to start.
        got: u64,
    },
}

/// Checks the chunk's Content-Range against the session and streams the
/// body into it.
async fn receive(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
    body: &mut RequestBody<'_>,
) -> Result<Received, ApiError> {
    let len = ctx.engine.upload_len(repo, id)?;
    let mut at = len;
    if let Some((start, end)) = content_range(request)? {
        if start != len {
            return Ok(Received::OutOfOrder { len, got: start });
        }
        if body.declared_len().is_some_and(|n| n != end - start + 1) {
            return Err(ApiError::new(
                ErrorCode::SizeInvalid,
                "Content-Length does not match Content-Range",
            ));
        }
    }
    if BodyWriter::suits(body.declared_len()) {
        // Large or of unknown length: received, hashed and written in parallel.
        return receive_blocks(&ctx.engine, repo, id, at, body).await;
    }
    loop {
        let piece = match body.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => return Ok(Received::Appended(at)),
            Err(e) => return Err(ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())),
        };
        at = match ctx.engine.upload_append(repo, id, at, piece) {
            Ok(n) => n,
            Err(EngineError::RangeMismatch { expected, got }) => {
                return Ok(Received::OutOfOrder { len: expected, got })
            }
            Err(e) => return Err(e.into()),
        };
    }
}

/// Streams `body` into session `id`, which holds `at` bytes, through the
/// engine's upload writer: this loop only fills the blocks it lends.
/// `Appended` with the session's new length, or `OutOfOrder` if the session
/// no longer held `at` bytes. A body that breaks off (client gone, bad
/// framing, a timeout or rate limit of the connection) leaves what arrived
/// before in the session and is reported as `BLOB_UPLOAD_INVALID`, as with
/// smaller bodies; one that stalls leaves what arrived before the block
/// being filled (the abandoned read keeps that block), and the client
/// resumes from the reported range.
async fn receive_blocks(
    engine: &Arc<Engine>,
    repo: &RepositoryName,
    id: UploadId,
    at: u64,
    body: &mut RequestBody<'_>,
) -> Result<Received, ApiError> {
    let mut writer = engine.upload_body(repo, id, at);
    let mut body_error = None;
    'body: loop {
        if let Some(limit) = body.direct_read_limit() {
            // Straight from the socket into the block: no copy.
            let block = writer.block();
            let (storage, room) = block.lend_room(usize::try_from(limit).unwrap_or(usize::MAX));
            let (result, storage) = body.read_direct(storage, room).await;
            match storage {
                Some(storage) => block.take_back(storage, *result.as_ref().unwrap_or(&0)),
                // The abandoned read kept the block's memory and bytes: the
                // session keeps what was handed on before them.
                None => block.lent_lost(),
            }
            if let Err(e) = result {
                body_error = Some(e);
                break;
            }
            if writer.block().is_full() {
                match writer.hand_over().await? {
                    Handed::Taken => {}
                    Handed::Stopped => break 'body,
                    Handed::OutOfOrder { len, got } => {
                        return Ok(Received::OutOfOrder { len, got })
                    }
                }
            }
            continue;
        }
        let mut piece = match body.chunk().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                body_error = Some(e);
                break;
            }
        };
        while !piece.is_empty() {
            let n = writer.block().fill(piece);
            piece = &piece[n..];
            if !writer.block().is_full() {
                continue;
            }
            match writer.hand_over().await? {
                Handed::Taken => {}
                Handed::Stopped => break 'body,
                Handed::OutOfOrder { len, got } => return Ok(Received::OutOfOrder { len, got }),
            }
        }
    }
    let len = writer.finish().await?;
    match body_error {
        Some(e) => Err(ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())),
        None => Ok(Received::Appended(len)),
    }
}

/// Bodies up to this size that carry a whole blob into an empty session are
/// read into memory and stored from there (no session file): one read
/// buffer's worth, so memory per connection stays what it was.
const WHOLE_BODY_BYTES_MAX: u64 = 256 * 1024;

/// The body, read into memory, when it is a whole small blob for an empty
/// session: the session holds `len == 0` bytes, no `Content-Range`, and a
/// declared length of at most [`WHOLE_BODY_BYTES_MAX`]. `None` otherwise
/// (nothing read: the caller streams it into the session).
async fn whole_small_body(
    request: &Request<'_>,
    len: u64,
    body: &mut RequestBody<'_>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let declared = body.declared_len();
    let small = declared.is_some_and(|n| n > 0 && n <= WHOLE_BODY_BYTES_MAX);
    if len != 0 || !small || request.head.headers.get("content-range").is_some() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        match body.chunk().await {
            Ok(Some(piece)) => bytes.extend_from_slice(piece),
            Ok(None) => return Ok(Some(bytes)),
            Err(e) => return Err(ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string())),
        }
    }
}

/// Verifies and commits a session as a blob, with `tail` (a last chunk
/// held in memory) appended first: 201 with Location and
/// Docker-Content-Digest (containerd requires the latter).
async fn commit(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
    digest_text: Option<&str>,
    tail: Option<Vec<u8>>,
) -> Result<Response, ApiError> {
    let digest_text = digest_text.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "the digest query parameter is required",
        )
    })?;
    let digest = parse_digest(digest_text)?;
    let (engine, repo_owned, digest_owned) = (ctx.engine.clone(), repo.clone(), digest.clone());
    blocking(move || match tail {
        Some(tail) => engine.finish_upload_with(&repo_owned, id, &tail, &digest_owned),
        None => engine.finish_upload(&repo_owned, id, &digest_owned),
    })
    .await?;
    Ok(Response::new(201)
        .header(
            "Location",
            location(ctx, request, &format!("/v2/{repo}/blobs/{digest}")),
        )
        .header("Docker-Content-Digest", digest.to_string()))
}

/// `POST /v2/<name>/blobs/uploads/`. `user` is the authenticated user,
/// if any: with the client's address otherwise, the key its open sessions
/// are counted under (beyond a cap: 429 `TOOMANYREQUESTS`, nothing created).
pub async fn start(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    query: &Query,
    body: &mut RequestBody<'_>,
    user: Option<&str>,
) -> Result<Response, ApiError> {
    if let Some(mount) = query.get("mount") {
        let digest = parse_digest(mount)?;
        // Without `from`, the blob is mounted from any repository that has it
        // (the spec's automatic cross-mount).
        let from = query
            .get("from")
            .filter(|f| !f.is_empty())
            .map(repository)
            .transpose()?;
        // With token auth a caller may only read what its token names, so no
        // blob is discovered in repositories it was not granted.
        let automatic_allowed = !matches!(ctx.auth, crate::auth::Auth::Token(_));
        let (engine, repo_owned, digest_owned) = (ctx.engine.clone(), repo.clone(), digest.clone());
        let mounted = blocking(move || match from {
            Some(from) => engine.mount_blob(&repo_owned, &from, &digest_owned),
            None if automatic_allowed => engine.mount_blob_from_any(&repo_owned, &digest_owned),
            None => Err(berth_engine::EngineError::BlobUnknown(digest_owned)),
        });
        match mounted.await {
            Ok(_) => {
                return Ok(Response::new(201)
                    .header(
                        "Location",
                        location(ctx, request, &format!("/v2/{repo}/blobs/{digest}")),
                    )
                    .header("Docker-Content-Digest", digest.to_string()));
            }
            // Not mountable: fall back to a fresh upload session, as the spec says.
            Err(e) if e.code == ErrorCode::BlobUnknown => {}
            Err(e) => return Err(e),
        }
    }
    let digest = query.get("digest");
    if let Some(text) = digest {
        parse_digest(text)?;
    }
    // Users and addresses in separate key spaces: a user named like an
    // address shares no count with it.
    let client = match user {
        Some(user) => format!("user:{user}"),
        None => format!("addr:{}", request.peer.ip()),
    };
    let id = ctx
        .engine
        .start_upload_within(repo, &client, ctx.settings.upload_limits)?;
    if digest.is_none() {
        return Ok(session_response(ctx, request, 202, repo, id, 0));
    }
    let result = match whole_small_body(request, 0, body).await {
        Ok(Some(tail)) => commit(ctx, request, repo, id, digest, Some(tail)).await,
        Ok(None) => match receive(ctx, request, repo, id, body).await {
            Ok(Received::Appended(_)) => commit(ctx, request, repo, id, digest, None).await,
            Ok(Received::OutOfOrder { .. }) => Err(ApiError::new(
                ErrorCode::BlobUploadInvalid,
                "Content-Range must start at 0",
            )),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if result.is_err() {
        // A failed monolithic upload leaves nothing behind.
        let _ = ctx.engine.cancel_upload(repo, id);
    }
    result
}

/// `GET <session>`: 204 with the bytes received so far.
pub fn status(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
) -> Result<Response, ApiError> {
    let len = ctx.engine.upload_len(repo, id)?;
    Ok(session_response(ctx, request, 204, repo, id, len))
}

/// `PATCH <session>`: appends a chunk (202), or 416 if it is out of order.
pub async fn patch(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
    body: &mut RequestBody<'_>,
) -> Result<Response, ApiError> {
    match receive(ctx, request, repo, id, body).await? {
        Received::Appended(len) => Ok(session_response(ctx, request, 202, repo, id, len)),
        Received::OutOfOrder { len, got } => Ok(out_of_order(ctx, request, repo, id, len, got)),
    }
}

/// `PUT <session>?digest=`: appends an optional last chunk, verifies, commits (201).
pub async fn finish(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    id: UploadId,
    query: &Query,
    body: &mut RequestBody<'_>,
) -> Result<Response, ApiError> {
    // An unknown session is 404 whatever else is wrong; then refuse a
    // missing or malformed digest before reading any body.
    let len = ctx.engine.upload_len(repo, id)?;
    let digest_text = query.get("digest");
    match digest_text {
        Some(text) => drop(parse_digest(text)?),
        None => {
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            ))
        }
    }
    if let Some(tail) = whole_small_body(request, len, body).await? {
        return commit(ctx, request, repo, id, digest_text, Some(tail)).await;
    }
    if !body.is_declared_empty() || request.head.headers.get("content-range").is_some() {
        if let Received::OutOfOrder { len, got } = receive(ctx, request, repo, id, body).await? {
            return Ok(out_of_order(ctx, request, repo, id, len, got));
        }
    }
    commit(ctx, request, repo, id, digest_text, None).await
}

/// `DELETE <session>`: abandons the upload (204).
pub fn cancel(ctx: &Ctx, repo: &RepositoryName, id: UploadId) -> Result<Response, ApiError> {
    ctx.engine.cancel_upload(repo, id)?;
    Ok(Response::new(204))
}
