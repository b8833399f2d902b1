//! Fixtures every scenario needs, pushed through the registry API (or
//! written as files for a static server such as nginx): an image (config,
//! five small layers, an OCI manifest tagged `bench`), a blob of the
//! requested size, and extra tags for tags-list. Content is deterministic,
//! so every target serves the same bytes and re-runs skip existing blobs.

use std::path::Path;

use berth_bench::random_bytes;
use sha2::{Digest, Sha256};

use crate::http::{location_path, Body, Conn, Response, Sink};

pub const TAG: &str = "bench";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Appends `key=value` to a path that may already have a query.
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{key}={value}")
}

/// The image: config + layers + manifest bytes and its digest.
pub struct Image {
    pub blobs: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// The image of `config`, `layers` and their `manifest` (blobs config
    /// first, the digest computed here).
    fn new(config: Vec<u8>, layers: Vec<Vec<u8>>, manifest: Vec<u8>) -> Image {
        let digest = sha256_digest(&manifest);
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            blobs,
            manifest,
            digest,
        }
    }
}

pub fn image() -> Image {
    let layers: Vec<Vec<u8>> = (0..5)
        .map(|i| random_bytes(2048 + i * 100, 1001 + i as u64))
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "berth-bench"}]
    }))
    .expect("json");
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256_digest(l), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(&config), "size": config.len()},
        "layers": layer_descs,
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z", "org.opencontainers.image.title": "berth-bench"}
    }))
    .expect("json");
    Image::new(config, layers, manifest)
}

/// The blob used by blob-head and blob-get: `size` deterministic bytes.
pub fn sized_blob(size: usize) -> (Vec<u8>, String) {
    let data = random_bytes(size, 0xb10b ^ size as u64);
    let digest = sha256_digest(&data);
    (data, digest)
}

fn fail(what: &str, method: &str, path: &str, r: &Response) -> String {
    format!("{what}: {method} {path} answered\n{}", r.describe())
}

/// Pushes a blob with POST + PUT unless the repository already has it.
pub fn ensure_blob(conn: &mut Conn, repo: &str, data: &[u8], digest: &str) -> Result<(), String> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let r = conn
        .request("HEAD", &path, &[], Body::None, Sink::Keep)
        .map_err(|e| format!("HEAD {path}: {e}"))?;
    if r.status == 200 {
        return Ok(());
    }
    let post = format!("/v2/{repo}/blobs/uploads/");
    let r = conn
        .request("POST", &post, &[], Body::None, Sink::Keep)
        .map_err(|e| format!("POST {post}: {e}"))?;
    if r.status != 202 {
        return Err(fail("starting an upload", "POST", &post, &r));
    }
    let loc = location_path(
        r.header("location")
            .ok_or_else(|| fail("upload without Location", "POST", &post, &r))?,
    );
    let put = with_query(&loc, "digest", digest);
    let r = conn
        .request(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Body::Bytes(data),
            Sink::Keep,
        )
        .map_err(|e| format!("PUT {put}: {e}"))?;
    if r.status != 201 {
        return Err(fail("finishing an upload", "PUT", &put, &r));
    }
    Ok(())
}

pub fn put_manifest(
    conn: &mut Conn,
    repo: &str,
    reference: &str,
    manifest: &[u8],
) -> Result<(), String> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = conn
        .request(
            "PUT",
            &path,
            &[("Content-Type", MANIFEST_TYPE)],
            Body::Bytes(manifest),
            Sink::Keep,
        )
        .map_err(|e| format!("PUT {path}: {e}"))?;
    if r.status != 201 {
        return Err(fail("pushing the manifest", "PUT", &path, &r));
    }
    Ok(())
}

/// Checks the registry answers /v2/ (auth included).
pub fn check_base(conn: &mut Conn) -> Result<(), String> {
    let r = conn
        .request("GET", "/v2/", &[], Body::None, Sink::Keep)
        .map_err(|e| format!("GET /v2/: {e}"))?;
    if r.status != 200 {
        return Err(fail(
            "the registry refuses the base endpoint (need --user/--password?)",
            "GET",
            "/v2/",
            &r,
        ));
    }
    Ok(())
}

/// Pushes the image, tagged `bench` and, for tags-list, `t0`..`t{tags-1}`.
pub fn push_image(conn: &mut Conn, repo: &str, tags: usize) -> Result<Image, String> {
    let img = image();
    for b in &img.blobs {
        ensure_blob(conn, repo, b, &sha256_digest(b))?;
    }
    put_manifest(conn, repo, TAG, &img.manifest)?;
    for i in 0..tags {
        put_manifest(conn, repo, &format!("t{i}"), &img.manifest)?;
    }
    Ok(img)
}

/// Writes the same fixtures as files under `root`, laid out as the URLs a
/// registry serves them at, for a static file server (nginx) as ceiling.
pub fn write_static(
    root: &Path,
    repo: &str,
    tags: usize,
    blob: Option<(&[u8], &str)>,
) -> Result<Image, String> {
    let img = image();
    let base = root.join("v2").join(repo);
    let io = |e: std::io::Error| format!("writing static fixtures under {}: {e}", root.display());
    for dir in ["manifests", "blobs", "tags"] {
        std::fs::create_dir_all(base.join(dir)).map_err(io)?;
    }
    std::fs::write(base.join("manifests").join(TAG), &img.manifest).map_err(io)?;
    std::fs::write(base.join("manifests").join(&img.digest), &img.manifest).map_err(io)?;
    for b in &img.blobs {
        std::fs::write(base.join("blobs").join(sha256_digest(b)), b).map_err(io)?;
    }
    if let Some((data, digest)) = blob {
        let path = base.join("blobs").join(digest);
        if std::fs::metadata(&path)
            .map(|m| m.len() != data.len() as u64)
            .unwrap_or(true)
        {
            std::fs::write(&path, data).map_err(io)?;
        }
    }
    let mut names: Vec<String> = (0..tags).map(|i| format!("t{i}")).collect();
    names.push(TAG.to_string());
    names.sort();
    let list = serde_json::to_vec(&serde_json::json!({"name": repo, "tags": names})).expect("json");
    std::fs::write(base.join("tags").join("list"), list).map_err(io)?;
    Ok(img)
}

/// The CI fleet's image: `layers` layers of `layer_size` deterministic
/// bytes (other seeds than `image`'s), a config and an OCI manifest.
pub fn fleet_image(layers: usize, layer_size: usize) -> Image {
    let layers: Vec<Vec<u8>> = (0..layers)
        .map(|i| random_bytes(layer_size, 0xf1ee7 + i as u64))
        .collect();
    let config = fleet_config(&layers, "base");
    let manifest = manifest_for(&config, &layers);
    Image::new(config, layers, manifest)
}

/// An image config over `layers`; `build` makes it unique per push.
pub fn fleet_config(layers: &[Vec<u8>], build: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["BUILD=".to_string() + build], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": format!("berth-bench fleet {build}")}]
    }))
    .expect("json")
}

/// An OCI manifest for `config` and `layers` (digests computed here).
pub fn manifest_for(config: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
    manifest_for_digests(
        &sha256_digest(config),
        config.len(),
        &layers
            .iter()
            .map(|l| (sha256_digest(l), l.len()))
            .collect::<Vec<_>>(),
    )
}

pub fn manifest_for_digests(
    config_digest: &str,
    config_len: usize,
    layers: &[(String, usize)],
) -> Vec<u8> {
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": layer_descs,
    }))
    .expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_deterministic_and_valid() {
        let a = image();
        assert_eq!(a.digest, image().digest);
        assert!(berth_engine::manifest::parse_manifest(Some(MANIFEST_TYPE), &a.manifest).is_ok());
        assert_eq!(sized_blob(4096).1, sized_blob(4096).1);
        assert_eq!(with_query("/a?x=1", "digest", "d"), "/a?x=1&digest=d");
        assert_eq!(with_query("/a", "digest", "d"), "/a?digest=d");
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        let f = fleet_image(2, 100);
        assert_eq!(f.blobs.len(), 3);
        assert!(berth_engine::manifest::parse_manifest(Some(MANIFEST_TYPE), &f.manifest).is_ok());
        assert_ne!(
            fleet_config(&f.blobs[1..], "a"),
            fleet_config(&f.blobs[1..], "b")
        );
    }
}
