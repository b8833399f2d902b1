//! Distribution API checks made directly over HTTP (what no client reports):
//! a tag's `Docker-Content-Digest`, the stored manifest bytes, tags/list.

use crate::http::{self, HttpResponse, ACCEPT_MANIFESTS};

/// `HEAD /v2/REPO/manifests/REF` accepting every manifest type: the
/// `Docker-Content-Digest` on 200, None on 404; panics on anything else.
pub fn manifest_digest(base_url: &str, repo: &str, reference: &str) -> Option<String> {
    let url = format!("{base_url}/v2/{repo}/manifests/{reference}");
    let r = http::head(&url, &[("Accept", ACCEPT_MANIFESTS)]);
    match r.status {
        200 => Some(
            r.header("Docker-Content-Digest")
                .unwrap_or_else(|| {
                    panic!(
                        "HEAD {url}: 200 without Docker-Content-Digest: {:?}",
                        r.headers
                    )
                })
                .to_string(),
        ),
        404 => None,
        s => panic!("HEAD {url}: unexpected status {s}"),
    }
}

/// `GET /v2/REPO/manifests/REF` accepting every manifest type; panics unless 200.
pub fn get_manifest(base_url: &str, repo: &str, reference: &str) -> HttpResponse {
    let url = format!("{base_url}/v2/{repo}/manifests/{reference}");
    let r = http::get(&url, &[("Accept", ACCEPT_MANIFESTS)]);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    r
}

/// `GET /v2/REPO/tags/list`: the tags, sorted (a `null` list is empty);
/// panics unless 200 with the right `name`.
pub fn tags_list(base_url: &str, repo: &str) -> Vec<String> {
    let url = format!("{base_url}/v2/{repo}/tags/list");
    let r = http::get(&url, &[]);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    let v = r.json();
    assert_eq!(
        v["name"].as_str(),
        Some(repo),
        "GET {url}: wrong name in {v}"
    );
    let mut tags: Vec<String> = match &v["tags"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().expect("tag is a string").to_string())
            .collect(),
        other => panic!("GET {url}: tags is neither an array nor null: {other}"),
    };
    tags.sort();
    tags
}
