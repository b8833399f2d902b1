//! Manifest validation: which media types berth accepts, what a manifest
//! references, and whether the sizes its descriptors declare agree with
//! what the repository stores. Pure: bytes (and stored lengths) in, a
//! [`ParsedManifest`] or a [`ManifestError`] out. The stored bytes are always the client's exact bytes; parsing only
//! decides whether to accept them and what they point at.

use serde_json::Value;

use crate::digest::Digest;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Largest manifest body accepted, as registry:2 and the spec suggest.
pub const MANIFEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Whether a manifest lists images (an index) or describes one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest: config + layers.
    Image,
    /// OCI image index or Docker manifest list: child manifests.
    Index,
}

/// What a valid manifest is and what it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The media type to serve it with (one of the four accepted types).
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// Blobs that must exist in the repository: the config and every
    /// layer that is not non-distributable (has no `urls`).
    pub blobs: Vec<Digest>,
    /// Child manifests that must exist in the repository (indexes only).
    pub children: Vec<Digest>,
    /// The `subject` this manifest refers to, if any (need not exist).
    pub subject: Option<Digest>,
    /// `artifactType`, or for images without it the config media type.
    pub artifact_type: Option<String>,
    /// The `size` each descriptor of `blobs` and `children` declares, where
    /// it is a whole number (in the order of the descriptors).
    pub declared_sizes: Vec<DeclaredSize>,
}

/// A descriptor's digest and the size it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredSize {
    /// What is referenced.
    pub digest: Digest,
    /// The descriptor's `size`.
    pub size: u64,
    /// Whether it names a child manifest (an index's `manifests[]`) rather
    /// than a blob.
    pub is_manifest: bool,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Docker schema 1 manifests are deprecated and refused.
    #[error("Docker schema 1 manifests are not supported; push a schema 2 or OCI manifest")]
    Schema1Unsupported,
    /// The body is not what an accepted manifest type must be.
    #[error("manifest invalid: {0}")]
    Invalid(String),
    /// A descriptor's `size` is not the length of what it names, as stored.
    #[error("manifest invalid: descriptor {digest} declares size {declared}, but the stored {what} is {stored} bytes")]
    SizeMismatch {
        /// The descriptor's digest.
        digest: Digest,
        /// The size it declares.
        declared: u64,
        /// The stored length.
        stored: u64,
        /// "blob" or "manifest".
        what: &'static str,
    },
}

fn invalid(message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(message.into())
}

/// The media type without parameters (`; charset=...`), trimmed.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn is_accepted_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST
    )
}

fn descriptor_digest(descriptor: &Value, what: &str) -> Result<Digest, ManifestError> {
    let text = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what} has no digest")))?;
    text.parse()
        .map_err(|e| invalid(format!("{what} digest {text:?}: {e}")))
}

/// The descriptor's `size`, when it is a whole number (a missing or
/// malformed size is not checked here).
fn descriptor_size(descriptor: &Value) -> Option<u64> {
    descriptor.get("size").and_then(Value::as_u64)
}

/// Checks each size `parsed` declares against the stored length of what it
/// names: `blob_len` for blobs (config, layers) and `manifest_len` for an
/// index's child manifests, each `None` when the repository does not hold
/// it (then there is nothing to compare). The first disagreement is
/// refused, naming the descriptor's digest and both sizes.
pub fn check_declared_sizes(
    parsed: &ParsedManifest,
    blob_len: impl Fn(&Digest) -> Option<u64>,
    manifest_len: impl Fn(&Digest) -> Option<u64>,
) -> Result<(), ManifestError> {
    for declared in &parsed.declared_sizes {
        let (stored, what) = if declared.is_manifest {
            (manifest_len(&declared.digest), "manifest")
        } else {
            (blob_len(&declared.digest), "blob")
        };
        match stored {
            Some(stored) if stored != declared.size => {
                return Err(ManifestError::SizeMismatch {
                    digest: declared.digest.clone(),
                    declared: declared.size,
                    stored,
                    what,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

fn descriptors<'a>(root: &'a Value, field: &str) -> Result<&'a [Value], ManifestError> {
    match root.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(format!("{field} must be an array"))),
    }
}

/// Validates a manifest body pushed with `content_type` (the request's
/// Content-Type, if any).
///
/// Guarantees on `Ok`: the body is a JSON object with `schemaVersion` 2, its
/// media type is one of the four accepted types and agrees with both the
/// `mediaType` field and the Content-Type where those are given, and every
/// referenced digest is well-formed.
pub fn parse_manifest(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ParsedManifest, ManifestError> {
    let header_type = content_type.map(essence).filter(|t| !t.is_empty());
    if header_type.is_some_and(|t| DOCKER_SCHEMA1.contains(&t)) {
        return Err(ManifestError::Schema1Unsupported);
    }
    let root: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if !root.is_object() {
        return Err(invalid("not a JSON object"));
    }
    match root.get("schemaVersion").and_then(Value::as_i64) {
        Some(2) => {}
        Some(1) => return Err(ManifestError::Schema1Unsupported),
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    let body_type = match root.get("mediaType") {
        None => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => return Err(invalid("mediaType must be a string")),
    };
    if let (Some(body_type), Some(header_type)) = (body_type, header_type) {
        if body_type != header_type && is_accepted_type(header_type) {
            return Err(invalid(format!(
                "mediaType {body_type:?} does not match Content-Type {header_type:?}"
            )));
        }
    }
    let media_type = match (body_type, header_type) {
        (Some(t), _) => t.to_owned(),
        (None, Some(t)) if is_accepted_type(t) => t.to_owned(),
        // Neither says: OCI allows mediaType to be absent; infer from shape.
        (None, _) if root.get("manifests").is_some() => OCI_INDEX.to_owned(),
        (None, _) if root.get("config").is_some() => OCI_MANIFEST.to_owned(),
        (None, _) => {
            return Err(invalid(
                "cannot tell the manifest type: no mediaType and no Content-Type",
            ))
        }
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err(ManifestError::Schema1Unsupported);
    }
    if !is_accepted_type(&media_type) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type:?}"
        )));
    }
    let kind = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => ManifestKind::Index,
        _ => ManifestKind::Image,
    };
    let subject = match root.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(descriptor_digest(s, "subject")?),
    };
    let declared_artifact_type = root
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut parsed = ParsedManifest {
        media_type,
        kind,
        blobs: Vec::new(),
        children: Vec::new(),
        subject,
        artifact_type: declared_artifact_type,
        declared_sizes: Vec::new(),
    };
    let declare = |sizes: &mut Vec<DeclaredSize>, digest: &Digest, descriptor, is_manifest| {
        if let Some(size) = descriptor_size(descriptor) {
            sizes.push(DeclaredSize {
                digest: digest.clone(),
                size,
                is_manifest,
            });
        }
    };
    match kind {
        ManifestKind::Image => {
            let config = root
                .get("config")
                .ok_or_else(|| invalid("image manifest has no config"))?;
            let digest = descriptor_digest(config, "config")?;
            declare(&mut parsed.declared_sizes, &digest, config, false);
            parsed.blobs.push(digest);
            if parsed.artifact_type.is_none() {
                parsed.artifact_type = config
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            if root.get("layers").is_none() {
                return Err(invalid("image manifest has no layers array"));
            }
            for layer in descriptors(&root, "layers")? {
                let digest = descriptor_digest(layer, "layer")?;
                let foreign = layer
                    .get("urls")
                    .and_then(Value::as_array)
                    .is_some_and(|u| !u.is_empty());
                if !foreign {
                    declare(&mut parsed.declared_sizes, &digest, layer, false);
                    parsed.blobs.push(digest);
                }
            }
        }
        ManifestKind::Index => {
            if root.get("manifests").is_none() {
                return Err(invalid("index has no manifests array"));
            }
            for child in descriptors(&root, "manifests")? {
                let digest = descriptor_digest(child, "manifests[]")?;
                declare(&mut parsed.declared_sizes, &digest, child, true);
                parsed.children.push(digest);
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('a'), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 3},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar", "digest": d('c'), "size": 3, "urls": ["https://x"]}
            ]
        });
        if let Some(t) = media_type {
            v["mediaType"] = t.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn image_references_config_and_distributable_layers() {
        let m = parse_manifest(Some(OCI_MANIFEST), &image(Some(OCI_MANIFEST))).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(
            m.blobs.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
            vec![d('a'), d('b')]
        );
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_comes_from_body_header_or_shape() {
        assert_eq!(
            parse_manifest(None, &image(None)).unwrap().media_type,
            OCI_MANIFEST
        );
        let docker = parse_manifest(Some(DOCKER_MANIFEST), &image(None)).unwrap();
        assert_eq!(docker.media_type, DOCKER_MANIFEST);
        let with_params = parse_manifest(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            &image(Some(OCI_MANIFEST)),
        );
        assert!(with_params.is_ok());
    }

    #[test]
    fn mismatched_media_type_is_invalid() {
        let err = parse_manifest(Some(DOCKER_MANIFEST), &image(Some(OCI_MANIFEST))).unwrap_err();
        assert!(matches!(err, ManifestError::Invalid(_)));
    }

    #[test]
    fn schema1_is_refused() {
        let body = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(
            parse_manifest(None, body),
            Err(ManifestError::Schema1Unsupported)
        );
        assert_eq!(
            parse_manifest(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                &image(None)
            ),
            Err(ManifestError::Schema1Unsupported)
        );
    }

    #[test]
    fn index_references_children_and_subject() {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": d('1'), "size": 1}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('2'), "size": 1}
        }))
        .unwrap();
        let m = parse_manifest(Some(OCI_INDEX), &body).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.children.len(), 1);
        assert_eq!(m.subject.unwrap().to_string(), d('2'));
    }

    #[test]
    fn declared_sizes_are_checked_against_stored_lengths() {
        let m = parse_manifest(Some(OCI_MANIFEST), &image(Some(OCI_MANIFEST))).unwrap();
        // The non-distributable layer (urls) is not held, so not checked.
        assert_eq!(
            m.declared_sizes
                .iter()
                .map(|s| (s.digest.to_string(), s.size, s.is_manifest))
                .collect::<Vec<_>>(),
            vec![(d('a'), 2, false), (d('b'), 3, false)]
        );
        let stored = |a: u64, b: u64| {
            move |digest: &Digest| match digest.to_string() {
                s if s == d('a') => Some(a),
                s if s == d('b') => Some(b),
                _ => None,
            }
        };
        assert_eq!(check_declared_sizes(&m, stored(2, 3), |_| None), Ok(()));
        let err = check_declared_sizes(&m, stored(2, 4), |_| None).unwrap_err();
        assert_eq!(
            err,
            ManifestError::SizeMismatch {
                digest: d('b').parse().unwrap(),
                declared: 3,
                stored: 4,
                what: "blob"
            }
        );
        let text = err.to_string();
        assert!(
            text.contains(&d('b')) && text.contains(" 3") && text.contains(" 4 "),
            "{text}"
        );
        // A blob the repository does not hold has no size to compare; a
        // manifest length never stands in for a blob's.
        assert_eq!(check_declared_sizes(&m, |_| None, |_| Some(99)), Ok(()));

        // An index's children are compared with stored manifest lengths.
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d('1'), "size": 10},
                {"mediaType": OCI_MANIFEST, "digest": d('2')}
            ]
        }))
        .unwrap();
        let m = parse_manifest(None, &index).unwrap();
        assert_eq!(m.declared_sizes.len(), 1, "a missing size is not checked");
        assert_eq!(check_declared_sizes(&m, |_| Some(1), |_| Some(10)), Ok(()));
        assert!(matches!(
            check_declared_sizes(&m, |_| None, |_| Some(11)),
            Err(ManifestError::SizeMismatch {
                declared: 10,
                stored: 11,
                what: "manifest",
                ..
            })
        ));
    }

    #[test]
    fn garbage_is_invalid_never_a_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"schemaVersion\":2}",
            b"{\"schemaVersion\":2,\"config\":{}}",
            b"\xff",
        ] {
            assert!(parse_manifest(None, body).is_err());
        }
        let bad_digest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:XYZ"},"layers":[]}"#;
        assert!(parse_manifest(None, bad_digest).is_err());
    }
}
