//! Reads in pull-through cache mode: manifests, blobs and tag lists served
//! from the cache when it can, from upstream (and then cached) when it must.
//! The machinery is in [`crate::proxy`]; this maps requests onto it.

use std::sync::Arc;

use berth_engine::{Digest, Reference, RepositoryName};

use super::ctx::Ctx;
use super::query::Query;
use super::{blobs, manifests, tags};
use crate::exchange::Request;
use crate::exchange::{Body, Response};
use crate::oci_error::{ApiError, ErrorCode};
use crate::proxy::fetch::{FetchFailure, FetchJob, GrowingBlob, Joined};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::Proxy;

/// Runs a blocking call (upstream I/O, fsync) off the event loop.
async fn off_loop<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    compio::runtime::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(ErrorCode::Unknown, "proxy task panicked"))
}

/// Runs `call` on the proxy and repository off the event loop: every
/// conversation with upstream blocks.
async fn on_upstream<T: Send + 'static>(
    proxy: &Arc<Proxy>,
    repo: &RepositoryName,
    call: impl FnOnce(&Proxy, &RepositoryName) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (p, r) = (proxy.clone(), repo.clone());
    off_loop(move || call(&p, &r)).await
}

/// The API error for a failed fetch of `what`.
fn fetch_error(failure: FetchFailure, not_found: ErrorCode) -> ApiError {
    match failure {
        FetchFailure::NotFound(m) => ApiError::new(not_found, m),
        FetchFailure::Outage(m) => ApiError::new(ErrorCode::Unavailable, m),
        FetchFailure::Invalid(m) => {
            let mut e = ApiError::new(ErrorCode::Unavailable, m);
            e.status = Some(502);
            e
        }
        FetchFailure::Storage(m) => ApiError::new(ErrorCode::Unknown, m),
    }
}

fn upstream_error(error: UpstreamError, not_found: ErrorCode) -> ApiError {
    fetch_error(FetchFailure::from(error), not_found)
}

/// `GET|HEAD /v2/<name>/manifests/<reference>` through the cache.
pub async fn manifest(
    ctx: &Ctx,
    proxy: &Arc<Proxy>,
    request: &Request<'_>,
    repo: &RepositoryName,
    reference_text: &str,
    head_only: bool,
) -> Result<Response, ApiError> {
    let reference = manifests::existing_reference(reference_text)?;
    // Serves the cached manifest and records the pull (digest and length
    // come from the response: the bytes are read once).
    let serve_cached = |ctx: &Ctx| {
        let response = manifests::get(ctx, request, repo, reference_text, head_only)?;
        let digest = response
            .headers
            .iter()
            .find(|(name, _)| *name == "Docker-Content-Digest")
            .and_then(|(_, value)| value.parse::<Digest>().ok());
        if let Some(digest) = digest {
            let len = response.body.len();
            proxy
                .cache
                .with(|c| c.touch(&digest, len, crate::proxy::cache::unix_now()));
        }
        Ok::<Response, ApiError>(response)
    };
    let local = ctx.engine.manifest_digest(repo, &reference).ok();
    let tag = match &reference {
        Reference::Digest(_) if local.is_some() => {
            proxy.metrics.count_hit();
            return serve_cached(ctx);
        }
        Reference::Digest(_) => None,
        Reference::Tag(tag) => {
            if local.is_some() && proxy.tag_is_fresh(repo, tag.as_str()) {
                proxy.metrics.count_hit();
                return serve_cached(ctx);
            }
            Some(tag.as_str().to_owned())
        }
    };
    // One upstream conversation per reference at a time; whoever waited
    // finds the answer cached.
    let flight = proxy.manifest_flight(repo, reference_text);
    let _flight = flight.lock().await;
    let local = ctx.engine.manifest_digest(repo, &reference).ok();
    if let Some(tag) = &tag {
        if local.is_some() && proxy.tag_is_fresh(repo, tag) {
            proxy.metrics.count_hit();
            return serve_cached(ctx);
        }
        if let Some(local_digest) = &local {
            let t = tag.clone();
            match on_upstream(proxy, repo, move |p, r| p.head_manifest(r, &t)).await? {
                Ok(Some(upstream_digest)) if upstream_digest == *local_digest => {
                    proxy.mark_tag_fresh(repo, tag);
                    proxy.metrics.count_hit();
                    return serve_cached(ctx);
                }
                Ok(_) => {}
                Err(e) if e.is_outage() => {
                    proxy.metrics.count_stale();
                    log::warn!("proxy: serving {repo}:{tag} stale ({local_digest}): {e}");
                    return Ok(serve_cached(ctx)?.header(
                        "Warning",
                        "110 berth \"Response is Stale: upstream unreachable\"",
                    ));
                }
                Err(e) => return Err(upstream_error(e, ErrorCode::ManifestUnknown)),
            }
        }
    }
    proxy.metrics.count_miss();
    let (engine, reference_owned) = (ctx.engine.clone(), reference.clone());
    let fetched = on_upstream(proxy, repo, move |p, r| {
        p.fetch_manifest(&engine, r, &reference_owned)
    })
    .await?;
    match fetched {
        Ok(_) => serve_cached(ctx),
        Err(failure) => Err(fetch_error(failure, ErrorCode::ManifestUnknown)),
    }
}

/// `GET|HEAD /v2/<name>/blobs/<digest>` through the cache.
pub async fn blob(
    ctx: &Ctx,
    proxy: &Arc<Proxy>,
    request: &Request<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    head_only: bool,
) -> Result<Response, ApiError> {
    if let Some(response) = cached_blob(ctx, proxy, request, repo, digest, head_only).await? {
        proxy.metrics.count_hit();
        return Ok(response);
    }
    proxy.metrics.count_miss();
    if head_only {
        let d = digest.clone();
        let len = on_upstream(proxy, repo, move |p, r| p.head_blob(r, &d))
            .await?
            .map_err(|e| upstream_error(e, ErrorCode::BlobUnknown))?;
        let mut response = Response::new(200)
            .header("Docker-Content-Digest", digest.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Accept-Ranges", "bytes");
        if let Some(len) = len {
            response = response.body(Body::Sized(len));
        }
        return Ok(response);
    }
    let job = || FetchJob {
        engine: ctx.engine.clone(),
        upstream: proxy.upstream().clone(),
        repo: repo.clone(),
        metrics: proxy.metrics.clone(),
    };
    let mut joined = proxy.inflight.join_or_start(digest, job(), true);
    if let Ok(Joined::Stored) = joined {
        // A fetch committed it meanwhile.
        if let Some(response) = cached_blob(ctx, proxy, request, repo, digest, false).await? {
            return Ok(response);
        }
        // Stored, but only as something no repository links as a blob
        // (say, a manifest): fetch it as a blob after all.
        joined = proxy.inflight.join_or_start(digest, job(), false);
    }
    let fetch = match joined {
        Ok(Joined::Started(fetch)) => fetch,
        Ok(Joined::Coalesced(fetch)) => {
            proxy.metrics.count_coalesced();
            fetch
        }
        Ok(Joined::Stored) => {
            return Err(ApiError::new(
                ErrorCode::Unknown,
                format!("{digest}: the store holds it but it cannot be served"),
            ))
        }
        Err(e) => {
            return Err(ApiError::new(
                ErrorCode::Unknown,
                format!("cannot start a fetch thread: {e}"),
            ))
        }
    };
    let len = match fetch.started().await {
        Ok(Some(len)) => len,
        Ok(None) => {
            // Upstream announced no length: serve once it is committed.
            fetch
                .finished()
                .await
                .map_err(|f| fetch_error(f, ErrorCode::BlobUnknown))?;
            return cached_blob(ctx, proxy, request, repo, digest, false)
                .await?
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::BlobUnknown, format!("{digest} vanished"))
                });
        }
        Err(failure) => return Err(fetch_error(failure, ErrorCode::BlobUnknown)),
    };
    let (status, start, count) = match blobs::requested_range(request, len) {
        Ok(range) => range,
        Err(response) => return Ok(*response),
    };
    let file = fetch
        .reader()
        .map_err(|e| ApiError::new(ErrorCode::Unknown, format!("staging file: {e}")))?;
    let growing = GrowingBlob {
        fetch,
        file,
        start,
        len: count,
    };
    Ok(blobs::blob_response(digest, status, start, count, len)
        .hold(proxy.cache.pin(digest, len))
        .body(Body::Streaming(Box::new(growing))))
}

/// Serves the blob from the store if it is there (linking it into `repo`
/// first when another repository brought it), pinned while it is sent.
async fn cached_blob(
    ctx: &Ctx,
    proxy: &Arc<Proxy>,
    request: &Request<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    head_only: bool,
) -> Result<Option<Response>, ApiError> {
    let len = match ctx.engine.blob_len(repo, digest) {
        Ok(len) => len,
        Err(_) if ctx.engine.blob_stored(digest) => {
            let (engine, r, d) = (ctx.engine.clone(), repo.clone(), digest.clone());
            match off_loop(move || engine.mount_blob_from_any(&r, &d)).await? {
                Ok(len) => len,
                Err(_) => return Ok(None),
            }
        }
        Err(_) => return Ok(None),
    };
    let pin = proxy.cache.pin(digest, len);
    Ok(Some(
        blobs::get(ctx, request, repo, digest, head_only)?.hold(pin),
    ))
}

/// `GET /v2/<name>/tags/list`: upstream's list, or the cached tags when
/// upstream is down.
pub async fn tags_list(
    ctx: &Ctx,
    proxy: &Arc<Proxy>,
    request: &Request<'_>,
    repo: &RepositoryName,
    query: &Query,
) -> Result<Response, ApiError> {
    let q = request.head.query().unwrap_or("").to_owned();
    match on_upstream(proxy, repo, move |p, r| p.tags_list(r, &q)).await? {
        Ok((body, link)) => {
            let mut response = Response::new(200)
                .header("Content-Type", "application/json")
                .body(Body::Bytes(body));
            if let Some(link) = link {
                response = response.header("Link", link);
            }
            Ok(response)
        }
        Err(e) if e.is_outage() => {
            log::warn!("proxy: listing the cached tags of {repo}: {e}");
            proxy.metrics.count_stale();
            Ok(tags::list(ctx, request, repo, query)?.header(
                "Warning",
                "110 berth \"Response is Stale: upstream unreachable\"",
            ))
        }
        Err(e) => Err(upstream_error(e, ErrorCode::NameUnknown)),
    }
}
