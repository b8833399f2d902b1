//! Listings: `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n` /
//! `last` pagination and a `Link` header when more remain.

use berth_engine::RepositoryName;

use super::ctx::{location, Ctx};
use super::query::Query;
use crate::exchange::Request;
use crate::exchange::{Body, Response};
use crate::oci_error::{ApiError, ErrorCode};

/// Largest page a client may ask for.
pub const PAGE_ENTRIES_MAX: usize = 10_000;

/// One page of a listing, rendered.
struct Page {
    /// The JSON body.
    body: Vec<u8>,
    /// `n` and the last entry of this page when more entries follow.
    next: Option<(usize, String)>,
}

/// The `n` query parameter: the page size asked for, if any.
fn page_size(query: &Query) -> Result<Option<usize>, ApiError> {
    let Some(text) = query.get("n") else {
        return Ok(None);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| *n <= PAGE_ENTRIES_MAX)
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n must be an integer from 0 to {PAGE_ENTRIES_MAX}, got {text:?}"),
            )
        })
}

/// Renders `{<fields>,"<key>":[...]}` with the entries from `entries` (the
/// ones after the client's `last`, in order), at most `n` of them. `fields`
/// are the members before the list, already JSON (`"name":"x",` or empty).
/// Written straight from the engine's entries: no copy of the whole list.
fn render(
    fields: &str,
    key: &str,
    entries: &mut dyn Iterator<Item = &str>,
    n: Option<usize>,
) -> Page {
    let mut body = Vec::with_capacity(256);
    body.push(b'{');
    body.extend_from_slice(fields.as_bytes());
    push_json_string(&mut body, key);
    body.extend_from_slice(b":[");
    let limit = n.unwrap_or(usize::MAX);
    let mut taken = 0usize;
    let mut last = None;
    for entry in (&mut *entries).take(limit) {
        if taken > 0 {
            body.push(b',');
        }
        push_json_string(&mut body, entry);
        taken += 1;
        last = Some(entry);
    }
    body.extend_from_slice(b"]}");
    let more = taken > 0 && entries.next().is_some();
    let next = match (n, last) {
        (Some(n), Some(last)) if more => Some((n, last.to_owned())),
        _ => None,
    };
    Page { body, next }
}

/// Appends `text` as a JSON string (quoted and escaped).
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, nor can serialising a str.
    let _ = serde_json::to_writer(out, text);
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

fn json_page(page: Vec<u8>) -> Response {
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(Body::Bytes(page))
}

/// The repository's tags, sorted bytewise.
pub fn list(
    ctx: &Ctx,
    request: &Request<'_>,
    repo: &RepositoryName,
    query: &Query,
) -> Result<Response, ApiError> {
    let n = page_size(query)?;
    // Serialising a str cannot fail.
    let name = serde_json::to_string(repo.as_str()).unwrap_or_default();
    let fields = format!("\"name\":{name},");
    let page = ctx.engine.visit_tags(repo, query.get("last"), |tags| {
        render(&fields, "tags", tags, n)
    })?;
    Ok(with_link(
        ctx,
        request,
        json_page(page.body),
        &format!("/v2/{repo}/tags/list"),
        page.next,
    ))
}

/// Every repository name, sorted.
pub fn catalog(ctx: &Ctx, request: &Request<'_>, query: &Query) -> Result<Response, ApiError> {
    let n = page_size(query)?;
    let page = ctx.engine.visit_catalog(query.get("last"), |names| {
        render("", "repositories", names, n)
    });
    Ok(with_link(
        ctx,
        request,
        json_page(page.body),
        "/v2/_catalog",
        page.next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:02}")).collect()
    }

    /// A page of `all` as the handlers make it: the entries after `last`.
    fn page(all: &[String], q: &str) -> (serde_json::Value, Option<(usize, String)>) {
        let query = Query::parse(Some(q));
        let n = page_size(&query).unwrap();
        let last = query.get("last");
        let mut after = all
            .iter()
            .map(String::as_str)
            .filter(|e| last.is_none_or(|l| *e > l));
        let page = render("\"name\":\"r\",", "tags", &mut after, n);
        (serde_json::from_slice(&page.body).unwrap(), page.next)
    }

    #[test]
    fn pages_follow_n_and_last() {
        let (body, next) = page(&names(5), "n=2");
        assert_eq!(
            body,
            serde_json::json!({"name": "r", "tags": ["t00", "t01"]})
        );
        assert_eq!(next, Some((2, "t01".into())));
        let (body, next) = page(&names(5), "n=2&last=t03");
        assert_eq!(body["tags"], serde_json::json!(["t04"]));
        assert_eq!(next, None);
        let (body, next) = page(&names(5), "n=0");
        assert_eq!(body["tags"], serde_json::json!([]));
        assert_eq!(next, None);
        let (_, next) = page(&names(3), "n=3");
        assert_eq!(next, None);
        let (body, next) = page(&names(3), "");
        assert_eq!(body["tags"], serde_json::json!(["t00", "t01", "t02"]));
        assert_eq!(next, None);
    }

    #[test]
    fn entries_are_json_escaped_and_the_body_is_compact() {
        let all = ["a\"b".to_string(), "c\\d".to_string()];
        let mut entries = all.iter().map(String::as_str);
        let page = render("", "repositories", &mut entries, None);
        assert_eq!(page.body, br#"{"repositories":["a\"b","c\\d"]}"#);
    }

    #[test]
    fn bad_n_is_refused() {
        for q in ["n=-1", "n=x", "n=99999999"] {
            let err = page_size(&Query::parse(Some(q))).err().unwrap();
            assert_eq!(err.code, ErrorCode::PaginationNumberInvalid);
        }
    }
}
