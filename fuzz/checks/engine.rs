//! Property checks for the `berth-engine` fuzz targets (`names`, `manifest`,
//! `metalog`). Each entry point takes the raw fuzzer input and panics if a
//! property fails. Kept apart from `http.rs` so the `berth-http` regression
//! test does not need the engine.
#![allow(dead_code)] // each fuzz target uses one entry point

use berth_engine::manifest::{
    check_declared_sizes, essence, parse_manifest, ManifestError, ManifestKind, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use berth_engine::metalog::{decode_log, encode_record};
use berth_engine::{Digest, Reference, RepositoryName, Tag};

// ----------------------------------------------------------------------- names

/// `names`: the input (if UTF-8) through `RepositoryName`, `Tag`, `Digest`
/// and `Reference` `FromStr`. Each accepts exactly what a plain, regex-free
/// restatement of its grammar accepts, and an accepted value displays as
/// the input string.
pub fn names(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    let name = s.parse::<RepositoryName>();
    assert_eq!(
        name.is_ok(),
        is_repository_name(s),
        "RepositoryName {s:?}: {name:?}"
    );
    if let Ok(name) = &name {
        assert_eq!((name.to_string().as_str(), name.as_str()), (s, s));
    }

    let tag = s.parse::<Tag>();
    assert_eq!(tag.is_ok(), is_tag(s), "Tag {s:?}: {tag:?}");
    if let Ok(tag) = &tag {
        assert_eq!((tag.to_string().as_str(), tag.as_str()), (s, s));
    }

    let digest = s.parse::<Digest>();
    assert_eq!(digest.is_ok(), is_digest(s), "Digest {s:?}: {digest:?}");
    if let Ok(digest) = &digest {
        assert_eq!(digest.to_string(), s);
        assert_eq!(digest.hex().len(), digest.algorithm().hex_len());
    }

    // A reference is a tag or a digest, told apart by ':'.
    match s.parse::<Reference>() {
        Ok(reference) => {
            assert_eq!(reference.to_string(), s);
            match reference {
                Reference::Tag(t) => assert_eq!(tag.as_ref(), Ok(&t)),
                Reference::Digest(d) => assert_eq!(digest.as_ref(), Ok(&d)),
            }
        }
        Err(e) => assert!(tag.is_err() && digest.is_err(), "Reference {s:?}: {e:?}"),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes, restated: every `/`-separated component is made of
/// `[a-z0-9._-]`, starts and ends alphanumeric, and each run of
/// non-alphanumerics in it is `.`, `_`, `__` or dashes only.
fn is_repository_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let component_ok = |c: &str| {
        c.starts_with(alnum)
            && c.ends_with(alnum)
            && c.chars()
                .all(|ch| alnum(ch) || matches!(ch, '.' | '_' | '-'))
            && c.split(alnum)
                .filter(|run| !run.is_empty())
                .all(|run| matches!(run, "." | "_" | "__") || run.bytes().all(|b| b == b'-'))
    };
    (1..=255).contains(&s.len()) && s.split('/').all(component_ok)
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (1..=128).contains(&s.len())
        && s.starts_with(word)
        && s.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// `sha256:` or `blake3:` and 64, or `sha512:` and 128, lowercase hex digits.
fn is_digest(s: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match s.split_once(':') {
        Some(("sha256" | "blake3", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

// -------------------------------------------------------------------- manifest

const ACCEPTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Content-Types the first input byte chooses from; a byte past the list
/// means "the input up to the first NUL is the Content-Type".
const CONTENT_TYPES: [Option<&str>; 10] = [
    None,
    Some(""),
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_LIST),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json"),
    Some("application/octet-stream"),
];

/// `manifest`: the first byte picks a Content-Type (see `CONTENT_TYPES`),
/// the rest is the body given to `parse_manifest`. On `Ok`: the media type
/// is one of the four accepted, agrees with the body's `mediaType` and with
/// an accepted Content-Type, and decides the kind; the body is an object
/// with `schemaVersion` 2; an image has a config blob and no children, an
/// index no blobs; every digest re-parses from its display form.
pub fn manifest(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match CONTENT_TYPES.get(usize::from(selector) % 12) {
        Some(&ct) => (ct.map(str::to_owned), rest),
        None => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let ct = String::from_utf8_lossy(&rest[..end]).into_owned();
            (Some(ct), rest.get(end + 1..).unwrap_or(&[]))
        }
    };
    let Ok(m) = parse_manifest(content_type.as_deref(), body) else {
        return;
    };

    assert!(
        ACCEPTED.contains(&m.media_type.as_str()),
        "media type {:?}",
        m.media_type
    );
    let index = matches!(m.media_type.as_str(), OCI_INDEX | DOCKER_LIST);
    assert_eq!(
        m.kind,
        if index {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        }
    );
    match m.kind {
        ManifestKind::Image => assert!(!m.blobs.is_empty() && m.children.is_empty()),
        ManifestKind::Index => assert!(m.blobs.is_empty()),
    }
    if let Some(ct) = content_type.as_deref().map(essence) {
        if ACCEPTED.contains(&ct) {
            assert_eq!(m.media_type, ct, "Content-Type {content_type:?}");
        }
    }
    let root: serde_json::Value = serde_json::from_slice(body).expect("accepted body is JSON");
    assert_eq!(root.get("schemaVersion").and_then(|v| v.as_i64()), Some(2));
    if let Some(declared) = root.get("mediaType") {
        assert_eq!(declared.as_str(), Some(m.media_type.as_str()));
    }
    for d in m.blobs.iter().chain(&m.children).chain(&m.subject) {
        assert_eq!(d.to_string().parse::<Digest>().as_ref(), Ok(d));
    }
    // Declared sizes are those of referenced descriptors, blobs and children
    // told apart, at most one per descriptor; every stored length equal to
    // them passes the size check, and the first one off by one is named.
    assert!(m.declared_sizes.len() <= m.blobs.len() + m.children.len());
    for s in &m.declared_sizes {
        let named = if s.is_manifest { &m.children } else { &m.blobs };
        assert!(named.contains(&s.digest), "{s:?}");
    }
    let size_of = |d: &Digest, manifest: bool| {
        m.declared_sizes
            .iter()
            .find(|s| &s.digest == d && s.is_manifest == manifest)
            .map(|s| s.size)
    };
    let consistent = m
        .declared_sizes
        .iter()
        .all(|s| size_of(&s.digest, s.is_manifest) == Some(s.size));
    if consistent {
        assert_eq!(
            check_declared_sizes(&m, |d| size_of(d, false), |d| size_of(d, true)),
            Ok(())
        );
    }
    if let Some(first) = m.declared_sizes.first() {
        let off = |d: &Digest, manifest: bool| {
            (d == &first.digest && manifest == first.is_manifest)
                .then(|| first.size.wrapping_add(1))
        };
        match check_declared_sizes(&m, |d| off(d, false), |d| off(d, true)) {
            Err(ManifestError::SizeMismatch {
                digest,
                declared,
                stored,
                ..
            }) => {
                assert_eq!(
                    (&digest, stored),
                    (&first.digest, first.size.wrapping_add(1))
                );
                assert_eq!(declared, first.size);
            }
            other => panic!("an off-by-one size passed: {other:?}"),
        }
    }
}

// --------------------------------------------------------------------- metalog

/// Whether `metalog` asserts the full re-encoding property. `decode_log`
/// currently accepts two kinds of checksum-valid records that
/// `encode_record` never writes (see fuzz/README.md, "Known issues"):
/// nonzero reserved header bytes, and payloads that are the same ops in a
/// non-canonical JSON spelling (whitespace, key order, unknown fields).
/// Until the engine refuses them, such a record is only checked to decode to
/// the ops it holds; set this to `true` once it does.
const METALOG_STRICT: bool = false;

/// `metalog`: arbitrary bytes as a metadata log image. `decode_log` must
/// not panic; `valid_bytes <= len`; the valid prefix alone decodes to the
/// same batches; the valid prefix is exactly one record per batch; and
/// re-encoding each decoded batch with `encode_record` gives back exactly
/// that record's bytes (every accepted record is one the encoder could have
/// written; relaxed for the two known deviations unless `METALOG_STRICT`).
pub fn metalog(data: &[u8]) {
    let replay = decode_log(data);
    let valid = usize::try_from(replay.valid_bytes).expect("valid_bytes fits usize");
    assert!(valid <= data.len());
    let prefix = decode_log(&data[..valid]);
    assert_eq!(
        (&prefix.batches, prefix.valid_bytes),
        (&replay.batches, replay.valid_bytes)
    );

    let mut pos = 0;
    for batch in &replay.batches {
        // Record framing per the layout in metalog.rs: 16-byte header, the
        // payload length at bytes 8..12.
        let header = &data[pos..pos + 16];
        let len = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        let record = &data[pos..pos + 16 + len];
        pos += record.len();
        let mut ours = Vec::new();
        encode_record(batch, &mut ours);
        let known_deviation = record[5..8] != [0, 0, 0] || record[16..] != ours[16..];
        if METALOG_STRICT || !known_deviation {
            assert!(
                record == ours.as_slice(),
                "record at {} is not what encode_record writes",
                pos - record.len()
            );
        } else {
            assert_eq!(record[..5], ours[..5]); // magic and version
            assert_eq!(
                decode_log(record).batches.as_slice(),
                std::slice::from_ref(batch)
            );
        }
        // What the encoder writes, the decoder reads back whole.
        let back = decode_log(&ours);
        assert_eq!(
            (back.batches.as_slice(), back.valid_bytes),
            (std::slice::from_ref(batch), ours.len() as u64)
        );
    }
    assert_eq!(pos, valid, "records do not add up to valid_bytes");
}
