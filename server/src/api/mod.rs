//! The registry API: translates HTTP requests into engine calls and engine
//! results into responses with the spec's headers, statuses and error
//! bodies. Knows OCI; knows nothing of sockets.

mod blobs;
mod ctx;
/// The OCI error table (below this layer, so `auth` can use it too).
pub use crate::oci_error as error;
mod manifests;
mod proxied;
pub mod query;
mod referrers;
pub mod response;
pub mod router;
mod tags;
pub mod upload_state;
mod uploads;

pub use ctx::{ApiSettings, Ctx};
use std::sync::Arc;

use ctx::{parse_digest, repository};

use berth_http::Method;

use crate::exchange::{Handler, Refusal, Request, RequestBody};
use error::{ApiError, ErrorCode};
use query::Query;
use response::Response;
use router::Route;

/// Answers one request. Never panics on client input; every failure becomes
/// an error response.
pub async fn handle(ctx: &Ctx, request: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
    let route = router::route(&request.path);
    // `/debug/...` answers 404 to everyone: registry:2 serves debug
    // endpoints only on `http.debug.addr` (see `crate::debug`).
    let open = matches!(route, Route::Root | Route::Debug);
    let query = Query::parse(request.head.query());
    let scopes = required_scopes(&route, &request.head.method, &query);
    let user = match ctx.auth.authenticate(request, &scopes, open).await {
        Ok(user) => user,
        Err(challenge) => return challenge,
    };
    let mut response = match dispatch(ctx, request, &route, &query, body, user.as_deref()).await {
        Ok(response) => response,
        Err(error) => Response::error(&error),
    };
    response.user = user;
    response
}

impl Handler for Ctx {
    async fn handle(&self, request: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        handle(self, request, body).await
    }

    fn refusal(&self, refusal: Refusal) -> Response {
        let (status, error) = match refusal {
            Refusal::BadHead { status, message } => {
                (status, ApiError::new(ErrorCode::Unknown, message))
            }
            Refusal::BadPath => (
                400,
                ApiError::new(ErrorCode::Unknown, "request path has a malformed %-escape"),
            ),
            Refusal::Unavailable(message) => {
                let error = ApiError::new(ErrorCode::Unavailable, message);
                (error.status(), error)
            }
        };
        let mut response = Response::error(&error);
        response.status = status;
        response
    }
}

async fn dispatch(
    ctx: &Ctx,
    request: &Request<'_>,
    route: &Route,
    query: &Query,
    body: &mut RequestBody<'_>,
    user: Option<&str>,
) -> Result<Response, ApiError> {
    let method = &request.head.method;
    let read = matches!(method, Method::Get | Method::Head);
    if let Some(proxy) = &ctx.proxy {
        if let Some(response) = dispatch_proxied(ctx, proxy, request, route, query).await? {
            return Ok(response);
        }
    }
    match route {
        Route::Root if read => Ok(Response::new(200)),
        Route::Base if read => Ok(Response::json(200, &serde_json::json!({}))),
        Route::Catalog if *method == Method::Get => tags::catalog(ctx, request, query),
        Route::Tags { name } if *method == Method::Get => {
            tags::list(ctx, request, &repository(name)?, query)
        }
        Route::Manifest { name, reference } => {
            let repo = repository(name)?;
            match method {
                Method::Get | Method::Head => {
                    manifests::get(ctx, request, &repo, reference, *method == Method::Head)
                }
                Method::Put => manifests::put(ctx, request, &repo, reference, body).await,
                Method::Delete => manifests::delete(ctx, &repo, reference).await,
                other => Err(ApiError::method_not_allowed(other.as_str())),
            }
        }
        Route::Blob { name, digest } => {
            let repo = repository(name)?;
            let digest = parse_digest(digest)?;
            match method {
                Method::Get | Method::Head => {
                    blobs::get(ctx, request, &repo, &digest, *method == Method::Head)
                }
                Method::Delete => blobs::delete(ctx, &repo, &digest).await,
                other => Err(ApiError::method_not_allowed(other.as_str())),
            }
        }
        Route::UploadStart { name } if *method == Method::Post => {
            uploads::start(ctx, request, &repository(name)?, query, body, user).await
        }
        Route::Upload { name, id } => {
            let repo = repository(name)?;
            let id = id.parse().map_err(|_| {
                ApiError::new(
                    ErrorCode::BlobUploadUnknown,
                    "upload id is not a session this registry issued",
                )
            })?;
            uploads::check_state(ctx, &repo, id, query)?;
            match method {
                Method::Get => uploads::status(ctx, request, &repo, id),
                Method::Patch => uploads::patch(ctx, request, &repo, id, body).await,
                Method::Put => uploads::finish(ctx, request, &repo, id, query, body).await,
                Method::Delete => uploads::cancel(ctx, &repo, id),
                other => Err(ApiError::method_not_allowed(other.as_str())),
            }
        }
        Route::Referrers { name, digest } if *method == Method::Get => {
            referrers::list(ctx, &repository(name)?, &parse_digest(digest)?, query)
        }
        Route::NotFound | Route::Debug => Err(ApiError::no_route(method.as_str(), &request.path)),
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// In pull-through cache mode, answers what the cache handles: reads of
/// proxied repositories go through the cache, writes to them are refused.
/// `None` for what is handled as usual (local repositories, `/v2/`, the
/// catalog, referrers).
async fn dispatch_proxied(
    ctx: &Ctx,
    proxy: &Arc<crate::proxy::Proxy>,
    request: &Request<'_>,
    route: &Route,
    query: &Query,
) -> Result<Option<Response>, ApiError> {
    let method = &request.head.method;
    let read = matches!(method, Method::Get | Method::Head);
    let name = match route {
        Route::Tags { name }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. } => name,
        _ => return Ok(None),
    };
    if proxy.is_local(name) {
        return Ok(None);
    }
    if !read {
        return Err(ApiError::new(
            ErrorCode::Unsupported,
            format!(
                "berth is a pull-through cache of {}: pushes and deletes are refused \
                 (set proxy.localprefix to allow pushes under a local namespace)",
                proxy.upstream().base()
            ),
        ));
    }
    let head_only = *method == Method::Head;
    let response = match route {
        Route::Tags { name } if *method == Method::Get => {
            proxied::tags_list(ctx, proxy, request, &repository(name)?, query).await?
        }
        Route::Manifest { name, reference } => {
            proxied::manifest(
                ctx,
                proxy,
                request,
                &repository(name)?,
                reference,
                head_only,
            )
            .await?
        }
        Route::Blob { name, digest } => {
            let digest = parse_digest(digest)?;
            proxied::blob(ctx, proxy, request, &repository(name)?, &digest, head_only).await?
        }
        _ => return Ok(None),
    };
    Ok(Some(response))
}

/// The accesses a request needs, in token-scope terms: reads need `pull`,
/// writes `pull,push`, deletes `delete`, a mount also `pull` on its source,
/// the catalog `registry:catalog:*`; `/v2/` only a valid token.
fn required_scopes(
    route: &Route,
    method: &Method,
    query: &Query,
) -> Vec<crate::auth::token::Scope> {
    use crate::auth::token::Scope;
    let read = matches!(method, Method::Get | Method::Head);
    match route {
        Route::Catalog => vec![Scope::catalog()],
        Route::Tags { name } | Route::Referrers { name, .. } => {
            vec![Scope::repository(name, &["pull"])]
        }
        Route::Manifest { name, .. } | Route::Blob { name, .. } => {
            if read {
                vec![Scope::repository(name, &["pull"])]
            } else if *method == Method::Delete {
                vec![Scope::repository(name, &["delete"])]
            } else {
                vec![Scope::repository(name, &["pull", "push"])]
            }
        }
        Route::UploadStart { name } => {
            let mut scopes = vec![Scope::repository(name, &["pull", "push"])];
            if let (Some(_), Some(from)) = (query.get("mount"), query.get("from")) {
                if from != name {
                    scopes.push(Scope::repository(from, &["pull"]));
                }
            }
            scopes
        }
        Route::Upload { name, .. } => vec![Scope::repository(name, &["pull", "push"])],
        Route::Root | Route::Base | Route::Debug | Route::NotFound => Vec::new(),
    }
}
