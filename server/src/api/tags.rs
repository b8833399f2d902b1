//! Listings: `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n` /
//! `last` pagination and a `Link` header when more remain.

use berth_engine::RepositoryName;

use super::error::{ApiError, ErrorCode};
use super::query::Query;
use super::response::Response;
use super::{location, Ctx};
use crate::conn::Request;

/// Largest page a client may ask for.
pub const PAGE_ENTRIES_MAX: usize = 10_000;

struct Page {
    entries: Vec<String>,
    next: Option<(usize, String)>,
}

fn paginate(all: Vec<String>, query: &Query) -> Result<Page, ApiError> {
    let n = match query.get("n") {
        None => None,
        Some(text) => Some(
            text.parse::<usize>()
                .ok()
                .filter(|n| *n <= PAGE_ENTRIES_MAX)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("n must be an integer from 0 to {PAGE_ENTRIES_MAX}, got {text:?}"),
                    )
                })?,
        ),
    };
    let after: Vec<String> = match query.get("last") {
        Some(last) => all.into_iter().filter(|e| e.as_str() > last).collect(),
        None => all,
    };
    let Some(n) = n else {
        return Ok(Page {
            entries: after,
            next: None,
        });
    };
    let more = after.len() > n && n > 0;
    let entries: Vec<String> = after.into_iter().take(n).collect();
    let next = match (more, entries.last()) {
        (true, Some(last)) => Some((n, last.clone())),
        _ => None,
    };
    Ok(Page { entries, next })
}

fn with_link(
    ctx: &Ctx,
    request: &Request<'_>,
    response: Response,
    path: &str,
    next: Option<(usize, String)>,
) -> Response {
    match next {
        Some((n, last)) => {
            let url = location(ctx, request, &format!("{path}?n={n}&last={last}"));
            response.header("Link", format!("<{url}>; rel=\"next\""))
        }
        None => response,
    }
}

/// The repository's tags, sorted bytewise.
pub fn list(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    query: &Query,
) -> Result<Response, ApiError> {
    let page = paginate(ctx.engine.tags(repo)?, query)?;
    let response = Response::json(
        200,
        &serde_json::json!({"name": repo.as_str(), "tags": page.entries}),
    );
    Ok(with_link(
        ctx,
        request,
        response,
        &format!("/v2/{repo}/tags/list"),
        page.next,
    ))
}

/// Every repository name, sorted.
pub fn catalog(ctx: &Ctx, request: &Request<'_>, query: &Query) -> Result<Response, ApiError> {
    let page = paginate(ctx.engine.catalog(), query)?;
    let response = Response::json(200, &serde_json::json!({"repositories": page.entries}));
    Ok(with_link(ctx, request, response, "/v2/_catalog", page.next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:02}")).collect()
    }

    #[test]
    fn pages_follow_n_and_last() {
        let page = paginate(names(5), &Query::parse(Some("n=2"))).unwrap();
        assert_eq!(page.entries, ["t00", "t01"]);
        assert_eq!(page.next, Some((2, "t01".into())));
        let page = paginate(names(5), &Query::parse(Some("n=2&last=t03"))).unwrap();
        assert_eq!(page.entries, ["t04"]);
        assert_eq!(page.next, None);
        let page = paginate(names(5), &Query::parse(Some("n=0"))).unwrap();
        assert!(page.entries.is_empty() && page.next.is_none());
        let page = paginate(names(3), &Query::parse(Some("n=3"))).unwrap();
        assert_eq!(page.next, None);
    }

    #[test]
    fn bad_n_is_refused() {
        for q in ["n=-1", "n=x", "n=99999999"] {
            let err = paginate(names(1), &Query::parse(Some(q))).err().unwrap();
            assert_eq!(err.code, ErrorCode::PaginationNumberInvalid);
        }
    }
}
