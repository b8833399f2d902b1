//! Test images as OCI image layouts, made by this crate: no downloads, and
//! bit-for-bit reproducible (seeded xorshift payloads, fixed timestamps,
//! uid/gid 0, sorted tar entries, gzip without name or mtime).
//!
//! * [`multi`]: one linux/amd64 image with four gzip layers, one of them
//!   24 MiB of incompressible data; `docker load` accepts it once converted
//!   to a docker-archive.
//! * [`index`]: an OCI image index over two small images (linux/amd64 and
//!   linux/arm64/v8).
//!
//! Every layout's `index.json` entry carries `org.opencontainers.image.ref.name`
//! = the tag, so `skopeo copy oci:DIR:TAG …` works. [`assert_same_blobs`]
//! compares a layout pulled back from a registry with the original.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Timestamp of every tar entry (2023-11-14T22:13:20Z).
pub const EPOCH: u64 = 1_700_000_000;
/// The same instant as written in image configs.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Annotation that names a tag in an OCI layout's index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Size of the big file in the [`multi`] image.
pub const MULTI_BIG_FILE: usize = 24 << 20;

/// xorshift64* pseudo-random generator: deterministic payload bytes from a seed.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One blob of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// One platform's image inside an image index.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// Digest of the platform's image manifest.
    pub manifest_digest: String,
    /// Digest of its config (what docker calls the image ID).
    pub config_digest: String,
}

/// An OCI image layout written by [`multi`] or [`index`].
#[derive(Clone, Debug)]
pub struct OciLayout {
    /// The layout directory (holds `oci-layout`, `index.json`, `blobs/`).
    pub dir: PathBuf,
    /// The tag its index.json names (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Digest of the top-level manifest (image manifest or image index).
    pub digest: String,
    /// Media type of the top-level manifest.
    pub media_type: String,
    /// Config digest (= docker image ID) for a single image; None for an index.
    pub config_digest: Option<String>,
    /// The platform images of an index (empty for a single image).
    pub platforms: Vec<PlatformImage>,
    /// Every blob of the layout (manifests, configs, layers), sorted by digest.
    pub blobs: Vec<Blob>,
}

impl OciLayout {
    /// The skopeo/containers-image reference `oci:DIR:TAG`.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Path of a blob file in this layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Total bytes of all blobs.
    pub fn total_size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Path of blob `digest` (`sha256:…`) in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("not a digest: {digest:?}"));
    dir.join("blobs").join(alg).join(hex)
}

/// Writes blobs into a fresh layout directory and remembers them.
struct LayoutWriter {
    dir: PathBuf,
    blobs: BTreeMap<String, Blob>,
}

impl LayoutWriter {
    fn create(dir: &Path) -> Self {
        if dir.exists() {
            fs::remove_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
        }
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", blobs.display()));
        write_file(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        LayoutWriter {
            dir: dir.to_path_buf(),
            blobs: BTreeMap::new(),
        }
    }

    /// Stores `data` as a blob and returns its descriptor.
    fn put(&mut self, data: &[u8], media_type: &str) -> Value {
        let digest = sha256_digest(data);
        if !self.blobs.contains_key(&digest) {
            write_file(&blob_path(&self.dir, &digest), data);
            self.blobs.insert(
                digest.clone(),
                Blob {
                    digest: digest.clone(),
                    size: data.len() as u64,
                    media_type: media_type.to_string(),
                },
            );
        }
        json!({"mediaType": media_type, "digest": digest, "size": data.len()})
    }

    /// Writes index.json naming `top` as `tag` and returns the layout.
    fn finish(
        self,
        tag: &str,
        top: &Value,
        config_digest: Option<String>,
        platforms: Vec<PlatformImage>,
    ) -> OciLayout {
        let mut entry = top.clone();
        entry["annotations"] = json!({ REF_NAME: tag });
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [entry]});
        write_file(&self.dir.join("index.json"), &to_json(&index));
        OciLayout {
            dir: self.dir,
            tag: tag.to_string(),
            digest: top["digest"]
                .as_str()
                .expect("descriptor has a digest")
                .to_string(),
            media_type: top["mediaType"]
                .as_str()
                .expect("descriptor has a mediaType")
                .to_string(),
            config_digest,
            platforms,
            blobs: self.blobs.into_values().collect(),
        }
    }
}

fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Compact JSON bytes (serde_json's map is sorted, so the output is stable).
fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialising a serde_json::Value cannot fail")
}

/// One entry of a layer tar.
enum Entry {
    Dir(&'static str),
    File {
        path: &'static str,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: &'static str,
        target: &'static str,
    },
}

/// A built layer: the gzip blob and the digest of the uncompressed tar.
struct Layer {
    gzip: Vec<u8>,
    diff_id: String,
}

/// Builds a deterministic tar (entries sorted by path, uid/gid 0, fixed
/// mtime) and gzips it (level "fast", no name, mtime 0).
fn build_layer(mut entries: Vec<Entry>) -> Layer {
    let path_of = |e: &Entry| match e {
        Entry::Dir(p) => *p,
        Entry::File { path, .. } => *path,
        Entry::Symlink { path, .. } => *path,
    };
    entries.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    let mut tar = tar::Builder::new(Vec::new());
    for e in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(EPOCH);
        h.set_username("root").expect("short user name");
        h.set_groupname("root").expect("short group name");
        let (path, data): (String, &[u8]) = match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                (format!("{}/", p.trim_end_matches('/')), &[])
            }
            Entry::File { path, mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                (path.to_string(), data)
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                h.set_link_name(target)
                    .unwrap_or_else(|e| panic!("bad symlink target {target}: {e}"));
                (path.to_string(), &[])
            }
        };
        h.set_path(&path)
            .unwrap_or_else(|e| panic!("bad tar path {path}: {e}"));
        h.set_cksum();
        tar.append(&h, data)
            .unwrap_or_else(|e| panic!("tar append {path}: {e}"));
    }
    let tar = tar
        .into_inner()
        .expect("finishing an in-memory tar cannot fail");
    let diff_id = sha256_digest(&tar);
    let mut gz = GzEncoder::new(
        Vec::with_capacity(tar.len() + tar.len() / 64 + 1024),
        Compression::fast(),
    );
    gz.write_all(&tar).expect("gzip into memory cannot fail");
    let gzip = gz.finish().expect("gzip into memory cannot fail");
    Layer { gzip, diff_id }
}

/// Writes an image (config + manifest) from `layers` into `w`; returns the
/// manifest descriptor and the config digest.
fn put_image(
    w: &mut LayoutWriter,
    arch: &str,
    variant: Option<&str>,
    title: &str,
    layers: &[(&str, Layer)],
) -> (Value, String) {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for (name, layer) in layers {
        layer_descs.push(w.put(&layer.gzip, MT_LAYER_GZIP));
        diff_ids.push(json!(layer.diff_id));
        history
            .push(json!({"created": CREATED, "created_by": format!("berth-tests: layer {name}")}));
    }
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/opt/app/run.sh"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": title}
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config_desc = w.put(&to_json(&config), MT_CONFIG);
    let config_digest = config_desc["digest"].as_str().expect("digest").to_string();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
        "annotations": {"org.opencontainers.image.title": title, "org.opencontainers.image.created": CREATED}
    });
    (w.put(&to_json(&manifest), MT_MANIFEST), config_digest)
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Writes the `multi` image into `dir` (replaced if it exists), tagged `tag`:
/// linux/amd64, four gzip layers (small files + symlink; 1 MiB; 24 MiB;
/// 256 KiB + an executable script), all payloads incompressible.
pub fn multi(dir: &Path, tag: &str) -> OciLayout {
    let mut rng = XorShift::new(0x6265_7274_685f_6d31); // "berth_m1"
    let base = build_layer(vec![
        Entry::Dir("etc"),
        Entry::File {
            path: "etc/berth-test-release",
            mode: 0o644,
            data: text("NAME=berth-tests\nVERSION=1\n"),
        },
        Entry::Dir("usr"),
        Entry::Dir("usr/share"),
        Entry::Dir("usr/share/berth"),
        Entry::File {
            path: "usr/share/berth/README",
            mode: 0o644,
            data: text("image made by berth-tests\n"),
        },
        Entry::Symlink {
            path: "usr/share/berth/latest",
            target: "README",
        },
    ]);
    let one = build_layer(vec![
        Entry::Dir("opt"),
        Entry::Dir("opt/data"),
        Entry::File {
            path: "opt/data/random-1m.bin",
            mode: 0o644,
            data: rng.bytes(1 << 20),
        },
    ]);
    let big = build_layer(vec![
        Entry::Dir("opt"),
        Entry::Dir("opt/data"),
        Entry::File {
            path: "opt/data/random-24m.bin",
            mode: 0o644,
            data: rng.bytes(MULTI_BIG_FILE),
        },
    ]);
    let app = build_layer(vec![
        Entry::Dir("opt"),
        Entry::Dir("opt/app"),
        Entry::File {
            path: "opt/app/run.sh",
            mode: 0o755,
            data: text("#!/bin/sh\necho berth-tests\n"),
        },
        Entry::File {
            path: "opt/app/state.bin",
            mode: 0o600,
            data: rng.bytes(256 << 10),
        },
    ]);
    let mut w = LayoutWriter::create(dir);
    let (desc, config) = put_image(
        &mut w,
        "amd64",
        None,
        "berth-tests multi",
        &[
            ("base", base),
            ("data-1m", one),
            ("data-24m", big),
            ("app", app),
        ],
    );
    w.finish(tag, &desc, Some(config), Vec::new())
}

/// Writes the `index` image into `dir` (replaced if it exists), tagged `tag`:
/// an OCI image index over linux/amd64 and linux/arm64/v8, each a one-layer
/// image (64 KiB of random data plus a text file naming its platform).
pub fn index(dir: &Path, tag: &str) -> OciLayout {
    let mut w = LayoutWriter::create(dir);
    let mut entries = Vec::new();
    let mut platforms = Vec::new();
    for (i, (arch, variant)) in [("amd64", None), ("arm64", Some("v8"))]
        .into_iter()
        .enumerate()
    {
        let mut rng = XorShift::new(0x6265_7274_685f_6930 + i as u64); // "berth_i0" + i
        let layer = build_layer(vec![
            Entry::Dir("etc"),
            Entry::File {
                path: "etc/platform",
                mode: 0o644,
                data: text(&format!("linux/{arch}\n")),
            },
            Entry::Dir("opt"),
            Entry::File {
                path: "opt/payload.bin",
                mode: 0o644,
                data: rng.bytes(64 << 10),
            },
        ]);
        let title = format!("berth-tests index linux/{arch}");
        let (mut desc, config) = put_image(&mut w, arch, variant, &title, &[("platform", layer)]);
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        desc["platform"] = platform;
        platforms.push(PlatformImage {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(String::from),
            manifest_digest: desc["digest"].as_str().expect("digest").to_string(),
            config_digest: config,
        });
        entries.push(desc);
    }
    let idx = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries});
    let desc = w.put(&to_json(&idx), MT_INDEX);
    w.finish(tag, &desc, None, platforms)
}

/// The digest that the layout at `dir` gives for `tag` in its index.json.
pub fn layout_digest(dir: &Path, tag: &str) -> String {
    let path = dir.join("index.json");
    let raw = fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no manifests array", path.display()));
    manifests
        .iter()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("{} names no tag {tag:?}: {v}", path.display()))
        .to_string()
}

/// Every blob under `dir/blobs/sha256` with its size (names only; see
/// [`verify_blob_digests`] to hash the contents).
pub fn layout_blobs(dir: &Path) -> BTreeMap<String, u64> {
    let blobs = dir.join("blobs").join("sha256");
    let rd =
        fs::read_dir(&blobs).unwrap_or_else(|e| panic!("cannot list {}: {e}", blobs.display()));
    let mut out = BTreeMap::new();
    for ent in rd {
        let ent = ent.unwrap_or_else(|e| panic!("cannot list {}: {e}", blobs.display()));
        let meta = ent
            .metadata()
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", ent.path().display()));
        out.insert(
            format!("sha256:{}", ent.file_name().to_string_lossy()),
            meta.len(),
        );
    }
    out
}

/// Panics if a blob of the layout at `dir` does not hash to its file name.
pub fn verify_blob_digests(dir: &Path) {
    for digest in layout_blobs(dir).keys() {
        let path = blob_path(dir, digest);
        let data =
            fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert_eq!(
            &sha256_digest(&data),
            digest,
            "blob {} does not match its name",
            path.display()
        );
    }
}

/// Asserts that the layout at `actual` holds exactly the blobs of `expected`
/// (same digest set, same sizes, same bytes: so every pulled blob also
/// matches its digest) and names the same digest for its tag.
pub fn assert_same_blobs(expected: &OciLayout, actual: &Path) {
    let want: BTreeMap<String, u64> = expected
        .blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size))
        .collect();
    let got = layout_blobs(actual);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "blob set of {} differs from the generated layout {}",
        actual.display(),
        expected.dir.display()
    );
    assert_eq!(got, want, "blob sizes of {} differ", actual.display());
    for digest in want.keys() {
        let a =
            fs::read(expected.blob_path(digest)).unwrap_or_else(|e| panic!("read {digest}: {e}"));
        let b = fs::read(blob_path(actual, digest))
            .unwrap_or_else(|e| panic!("read pulled {digest}: {e}"));
        assert!(
            a == b,
            "blob {digest} differs byte-wise between {} and {}",
            expected.dir.display(),
            actual.display()
        );
    }
    assert_eq!(
        layout_digest(actual, &expected.tag),
        expected.digest,
        "pulled layout's {} digest",
        expected.tag
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_blob(l: &OciLayout, digest: &str) -> Value {
        serde_json::from_slice(&fs::read(l.blob_path(digest)).expect("blob")).expect("json blob")
    }

    #[test]
    fn index_is_deterministic_and_consistent() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let a = index(&tmp.path().join("a"), "latest");
        let b = index(&tmp.path().join("b"), "latest");
        assert_eq!(a.digest, b.digest, "two runs give the same index digest");
        assert_eq!(a.blobs, b.blobs);
        assert_eq!(layout_digest(&a.dir, "latest"), a.digest);
        verify_blob_digests(&a.dir);
        let idx = json_blob(&a, &a.digest);
        assert_eq!(idx["mediaType"], MT_INDEX);
        let archs: Vec<&str> = idx["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
            .collect();
        assert_eq!(archs, ["amd64", "arm64"]);
        for p in &a.platforms {
            let m = json_blob(&a, &p.manifest_digest);
            assert_eq!(
                m["config"]["digest"].as_str(),
                Some(p.config_digest.as_str())
            );
            let cfg = json_blob(&a, &p.config_digest);
            assert_eq!(cfg["architecture"].as_str(), Some(p.architecture.as_str()));
            // diff_ids are the digests of the uncompressed layers.
            let layer = fs::read(a.blob_path(m["layers"][0]["digest"].as_str().expect("layer")))
                .expect("layer blob");
            let mut tar = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut tar)
                .expect("gunzip");
            assert_eq!(
                cfg["rootfs"]["diff_ids"][0].as_str(),
                Some(sha256_digest(&tar).as_str())
            );
        }
    }

    #[test]
    fn xorshift_is_seeded() {
        assert_eq!(XorShift::new(7).bytes(33), XorShift::new(7).bytes(33));
        assert_ne!(XorShift::new(7).bytes(33), XorShift::new(8).bytes(33));
    }
}
