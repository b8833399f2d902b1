//! A manifest whose descriptor gives a size other than the stored length of
//! the blob (or child manifest) it names is refused with 400
//! `MANIFEST_INVALID` naming the digest and both sizes, and nothing is
//! written: the tag is not created and the manifest is not stored. The
//! right sizes are accepted.

use berth_tests::http::{request, HttpResponse};
use berth_tests::registry::{Registry, RegistryCommand};
use sha2::{Digest as _, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn push_blob(r: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let url = r.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let res = request(
        "POST",
        &url,
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    digest
}

fn put(r: &Registry, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> HttpResponse {
    request(
        "PUT",
        &r.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[("Content-Type", media_type)],
        Some(body),
    )
}

fn get_status(r: &Registry, repo: &str, reference: &str) -> u16 {
    request(
        "GET",
        &r.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)],
        None,
    )
    .status
}

fn image(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]
    }))
    .expect("json")
}

fn assert_refused(response: &HttpResponse, digest: &str, declared: usize, stored: usize) {
    assert_eq!(response.status, 400, "{}", response.text());
    let body = response.json();
    let error = &body["errors"][0];
    assert_eq!(error["code"], "MANIFEST_INVALID", "{body}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(digest)
            && message.contains(&format!("size {declared}"))
            && message.contains(&format!("{stored} bytes")),
        "{message}"
    );
    assert_eq!(error["detail"]["digest"], digest);
    assert_eq!(error["detail"]["size"], declared);
    assert_eq!(error["detail"]["stored"], stored);
}

#[test]
fn descriptor_sizes_must_match_what_the_registry_holds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = RegistryCommand::from_env();
    if !command.is_berth {
        // registry:2 accepts wrong sizes; this is berth's behaviour.
        return;
    }
    let r = Registry::start_with(command, &dir.path().join("data"));
    let repo = "sizes/app";
    let config_bytes = b"{\"architecture\":\"amd64\"}";
    let layer_bytes = b"layer bytes: thirty-one of them";
    let config = push_blob(&r, repo, config_bytes);
    let layer = push_blob(&r, repo, layer_bytes);

    // A wrong layer size, then a wrong config size: refused, nothing written.
    let wrong_layer = image(&config, config_bytes.len(), &layer, layer_bytes.len() + 1);
    let res = put(&r, repo, "v1", OCI_MANIFEST, &wrong_layer);
    assert_refused(&res, &layer, layer_bytes.len() + 1, layer_bytes.len());
    let wrong_config = image(&config, 2, &layer, layer_bytes.len());
    let res = put(
        &r,
        repo,
        &sha256(&wrong_config),
        OCI_MANIFEST,
        &wrong_config,
    );
    assert_refused(&res, &config, 2, config_bytes.len());
    assert_eq!(get_status(&r, repo, "v1"), 404, "the tag was created");
    assert_eq!(
        get_status(&r, repo, &sha256(&wrong_layer)),
        404,
        "the manifest was stored"
    );
    assert_eq!(
        get_status(&r, repo, &sha256(&wrong_config)),
        404,
        "the manifest was stored"
    );
    let tags = request("GET", &r.url(&format!("/v2/{repo}/tags/list")), &[], None);
    assert!(
        tags.status == 404 || tags.json()["tags"].as_array().is_none_or(|t| t.is_empty()),
        "{}",
        tags.text()
    );

    // The right sizes are accepted.
    let good = image(&config, config_bytes.len(), &layer, layer_bytes.len());
    assert_eq!(put(&r, repo, "v1", OCI_MANIFEST, &good).status, 201);

    // An index must give each child manifest's stored length.
    let child = sha256(&good);
    let index = |size: usize| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": size,
                           "platform": {"architecture": "amd64", "os": "linux"}}]
        }))
        .expect("json")
    };
    let res = put(&r, repo, "multi", OCI_INDEX, &index(good.len() - 1));
    assert_refused(&res, &child, good.len() - 1, good.len());
    assert_eq!(
        get_status(&r, repo, "multi"),
        404,
        "the index tag was created"
    );
    assert_eq!(
        put(&r, repo, "multi", OCI_INDEX, &index(good.len())).status,
        201
    );
    assert_eq!(get_status(&r, repo, "multi"), 200);
}
