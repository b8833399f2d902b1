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

/// Pushes `data` as one blob (`POST ?digest=` with the body) with extra
/// `headers` (e.g. Authorization); returns its digest. Panics unless 201.
pub fn push_blob(base_url: &str, repo: &str, data: &[u8], headers: &[(&str, &str)]) -> String {
    let digest = crate::images::sha256_digest(data);
    let url = format!("{base_url}/v2/{repo}/blobs/uploads/?digest={digest}");
    let mut all = vec![("Content-Type", "application/octet-stream")];
    all.extend_from_slice(headers);
    let agent = http::agent(std::time::Duration::from_secs(300));
    let r = http::try_request(&agent, "POST", &url, &all, Some(data))
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    if r.status == 202 {
        // Registries without monolithic POST (Distribution 2.8) answer with
        // a session: finish it with one PUT, as clients do.
        let location = r.header("Location").expect("202 without Location");
        let location = if location.starts_with('/') {
            format!("{base_url}{location}")
        } else {
            location.to_owned()
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={digest}");
        let r = http::try_request(&agent, "PUT", &put, &all, Some(data))
            .unwrap_or_else(|e| panic!("PUT {put}: {e}"));
        assert_eq!(r.status, 201, "PUT {put}: {}", r.text());
        return digest;
    }
    assert_eq!(r.status, 201, "POST {url}: {}", r.text());
    digest
}

/// An image pushed by [`push_image`].
pub struct PushedImage {
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// Every blob (config first, then layers) with its bytes.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Pushes an OCI image made of `config` and `layers` to `repo:tag`.
pub fn push_image(
    base_url: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
    headers: &[(&str, &str)],
) -> PushedImage {
    let mut blobs = Vec::new();
    let config_digest = push_blob(base_url, repo, config, headers);
    blobs.push((config_digest.clone(), config.to_vec()));
    let mut descriptors = Vec::new();
    for layer in layers {
        let d = push_blob(base_url, repo, layer, headers);
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": layer.len()
        }));
        blobs.push((d, layer.clone()));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descriptors
    }))
    .expect("json");
    let url = format!("{base_url}/v2/{repo}/manifests/{tag}");
    let mut all = vec![("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    all.extend_from_slice(headers);
    let r = http::request("PUT", &url, &all, Some(&manifest));
    assert_eq!(r.status, 201, "PUT {url}: {}", r.text());
    PushedImage {
        manifest_digest: crate::images::sha256_digest(&manifest),
        manifest,
        blobs,
    }
}
