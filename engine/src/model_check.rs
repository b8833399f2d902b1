//! Model-based checking: drives an [`Engine`] with a sequence of operations
//! decoded from arbitrary bytes (push, manifest and tag writes, deletes,
//! mounts, garbage collection, reopen, crash with torn tails and with log
//! records whose segment bytes were lost) and after
//! every step compares what it serves with a plain in-memory model. Used by
//! the randomized test in this crate and by the `store_model` fuzz target;
//! not part of the API.
//!
//! The engine runs with four write lanes and small segments, so pushes (some
//! from fresh threads, which land on other lanes) fill several active
//! segments, roll over, and get compacted by collections.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use crate::metalog::{encode_record, Op, Written};
use crate::{active_list, segment};
use crate::{Digest, Engine, EngineError, EngineOptions, GcOptions, Reference, RepositoryName};

const REPOS: [&str; 3] = ["a", "b/c", "d"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];

#[derive(Default)]
struct Model {
    /// (repo, blob digest) → bytes.
    links: BTreeMap<(usize, Digest), Vec<u8>>,
    /// (repo, manifest digest) → (bytes, referenced blobs).
    manifests: BTreeMap<(usize, Digest), (Vec<u8>, Vec<Digest>)>,
    /// (repo, tag) → manifest digest.
    tags: BTreeMap<(usize, usize), Digest>,
}

struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
}

fn repo(i: usize) -> RepositoryName {
    REPOS[i]
        .parse()
        .unwrap_or_else(|_| unreachable!("constant names are valid"))
}

fn image_manifest(blobs: &[Digest], salt: u8) -> Vec<u8> {
    let layers: Vec<_> = blobs[1..]
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].to_string()},
        "layers": layers,
        "annotations": {"salt": salt.to_string()}
    }))
    .unwrap_or_default()
}

fn read_all(engine: &Engine, r: &RepositoryName, d: &Digest) -> Result<Vec<u8>, String> {
    let b = engine
        .open_blob(r, d)
        .map_err(|e| format!("open {r} {d}: {e}"))?;
    let mut out = vec![0u8; b.len as usize];
    b.file
        .read_exact_at(&mut out, b.offset)
        .map_err(|e| format!("read {r} {d}: {e}"))?;
    Ok(out)
}

fn check(engine: &Engine, model: &Model) -> Result<(), String> {
    for ((ri, d), bytes) in &model.links {
        let got = read_all(engine, &repo(*ri), d)?;
        if &got != bytes {
            return Err(format!(
                "{} {d}: served bytes differ from the model",
                REPOS[*ri]
            ));
        }
    }
    for ((ri, d), (bytes, _)) in &model.manifests {
        let m = engine
            .manifest(&repo(*ri), &Reference::Digest(d.clone()))
            .map_err(|e| format!("manifest {d}: {e}"))?;
        if m.bytes[..] != bytes[..] {
            return Err(format!("manifest {d} bytes differ"));
        }
    }
    for (ri, _) in REPOS.iter().enumerate() {
        let expected: Vec<String> = model
            .tags
            .keys()
            .filter(|(r, _)| *r == ri)
            .map(|(_, t)| TAGS[*t].to_string())
            .collect();
        match engine.tags(&repo(ri)) {
            Ok(tags) if tags == expected => {}
            Err(EngineError::NameUnknown) if expected.is_empty() => {}
            other => {
                return Err(format!(
                    "tags of {}: {other:?}, model {expected:?}",
                    REPOS[ri]
                ))
            }
        }
        for (ti, _) in TAGS.iter().enumerate() {
            let want = model.tags.get(&(ri, ti));
            let got = engine
                .manifest(
                    &repo(ri),
                    &Reference::Tag(TAGS[ti].parse().map_err(|_| "tag")?),
                )
                .ok()
                .map(|m| m.digest);
            if got.as_ref() != want {
                return Err(format!(
                    "tag {}:{}: engine {got:?}, model {want:?}",
                    REPOS[ri], TAGS[ti]
                ));
            }
        }
    }
    Ok(())
}

fn options() -> EngineOptions {
    EngineOptions {
        segment_bytes_max: 512,
        active_segments: 4,
        ..EngineOptions::default()
    }
}

/// What a crash leaves: an append cut short (`cut` bytes of a record that
/// was never acknowledged) at the end of every active segment.
fn tear_active_tails(root: &Path, cut: u8) -> Result<(), String> {
    let dir = root.join("segments");
    let list = match std::fs::read(dir.join(active_list::FILE_NAME)) {
        Ok(list) => list,
        // No segment was ever created.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("segments/active: {e}")),
    };
    let segs = active_list::decode(&list).ok_or("segments/active unreadable")?;
    let payload = [cut; 40];
    let mut record = Vec::new();
    segment::encode_record(&Digest::sha256_of(&payload), 0, &payload, &mut record);
    record.truncate(1 + usize::from(cut) % (record.len() - 1));
    for seg in segs {
        let path = dir.join(format!("{seg:08}.seg"));
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        file.write_all_at(&record, len).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What a crash leaves when it cuts a commit round short after the log
/// write: records whose blob bytes (appended in the same round) are not on
/// disk. One links a blob whose record would have ended past the end of a
/// listed segment, one records and tags a manifest in a segment whose
/// creation was lost. Opening must drop both (none was acknowledged).
fn append_lost_round(root: &Path, salt: u8) -> Result<(), String> {
    let dir = root.join("segments");
    let mut segs: Vec<u32> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()
        })
        .collect();
    segs.sort_unstable();
    // Longer than any blob the model pushes, so never stored.
    let lost = Digest::sha256_of(&[salt; 64]);
    let mut ops = Vec::new();
    if let Some(&seg) = segs.first() {
        let len = std::fs::metadata(dir.join(format!("{seg:08}.seg")))
            .map_err(|e| e.to_string())?
            .len();
        let listed = std::fs::read(dir.join(active_list::FILE_NAME))
            .ok()
            .and_then(|bytes| active_list::decode(&bytes))
            .is_some_and(|list| list.contains(&seg));
        if listed {
            ops.push(vec![Op::LinkBlob {
                repo: REPOS[usize::from(salt) % REPOS.len()].into(),
                digest: lost.clone(),
                len: 64,
                at: Some(1),
                written: Some(Written { seg, end: len + 1 }),
            }]);
        }
    }
    let missing = segs.last().map_or(1, |&s| s + 1000);
    ops.push(vec![
        Op::PutManifest {
            repo: REPOS[0].into(),
            digest: lost.clone(),
            len: 64,
            media_type: crate::manifest::OCI_MANIFEST.into(),
            references: Vec::new(),
            subject: None,
            artifact_type: None,
            at: Some(1),
            written: Some(Written {
                seg: missing,
                end: 100,
            }),
        },
        Op::SetTag {
            repo: REPOS[0].into(),
            tag: TAGS[usize::from(salt) % TAGS.len()].into(),
            digest: lost,
        },
    ]);
    let mut records = Vec::new();
    for batch in &ops {
        encode_record(batch, &mut records);
    }
    // Right after the last record, inside the log's padding.
    let path = root.join("meta/log");
    let image = std::fs::read(&path).map_err(|e| format!("meta/log: {e}"))?;
    let end = crate::metalog::decode_log(&image).valid_bytes;
    let log = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("meta/log: {e}"))?;
    log.write_all_at(&records, end).map_err(|e| e.to_string())
}

/// Runs the operations encoded in `ops` against a fresh engine under `root`,
/// checking it against the model after each. `Err` describes the first
/// disagreement.
pub fn run(root: &Path, ops: &[u8]) -> Result<(), String> {
    let mut engine = Some(Engine::open_with(root, options()).map_err(|e| e.to_string())?);
    let mut model = Model::default();
    let mut input = Bytes { data: ops, pos: 0 };
    while let Some(op) = input.next() {
        let Some(e) = engine.as_ref() else {
            return Err("engine missing".into());
        };
        let ri = (input.next().unwrap_or(0) as usize) % REPOS.len();
        let r = repo(ri);
        match op % 8 {
            0 => {
                let len = input.next().unwrap_or(0) as usize % 48;
                let seed = input.next().unwrap_or(0);
                let data: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
                let id = e.start_upload(&r).map_err(|e| e.to_string())?;
                let split = if data.is_empty() {
                    0
                } else {
                    seed as usize % data.len()
                };
                e.upload_append(&r, id, 0, &data[..split])
                    .map_err(|e| e.to_string())?;
                e.upload_append(&r, id, split as u64, &data[split..])
                    .map_err(|e| e.to_string())?;
                let d = Digest::sha256_of(&data);
                if seed % 2 == 1 {
                    // From a fresh thread: the next lane.
                    std::thread::scope(|s| s.spawn(|| e.finish_upload(&r, id, &d)).join())
                        .map_err(|_| "finish panicked")?
                } else {
                    e.finish_upload(&r, id, &d)
                }
                .map_err(|e| format!("finish: {e}"))?;
                model.links.insert((ri, d), data);
            }
            1 => {
                let linked: Vec<Digest> = model
                    .links
                    .keys()
                    .filter(|(x, _)| *x == ri)
                    .map(|(_, d)| d.clone())
                    .collect();
                let count = 1 + input.next().unwrap_or(0) as usize % 3;
                let ti = input.next().unwrap_or(0) as usize % (TAGS.len() + 1);
                if linked.is_empty() {
                    continue;
                }
                let blobs: Vec<Digest> = (0..count)
                    .map(|i| linked[(i * 7 + ti) % linked.len()].clone())
                    .collect();
                let body = image_manifest(&blobs, op);
                let d = Digest::sha256_of(&body);
                let reference = match TAGS.get(ti) {
                    Some(t) => Reference::Tag(t.parse().map_err(|_| "tag")?),
                    None => Reference::Digest(d.clone()),
                };
                e.put_manifest(&r, &reference, None, &body)
                    .map_err(|e| format!("put manifest: {e}"))?;
                model.manifests.insert((ri, d.clone()), (body, blobs));
                if ti < TAGS.len() {
                    model.tags.insert((ri, ti), d);
                }
            }
            2 => {
                let ti = input.next().unwrap_or(0) as usize % TAGS.len();
                let result = e.delete_tag(&r, &TAGS[ti].parse().map_err(|_| "tag")?);
                match (model.tags.remove(&(ri, ti)), result) {
                    (Some(_), Ok(())) => {}
                    (None, Err(EngineError::ManifestUnknown | EngineError::NameUnknown)) => {}
                    (expected, got) => {
                        return Err(format!("delete tag: model {expected:?}, engine {got:?}"))
                    }
                }
            }
            3 => {
                let pick = input.next().unwrap_or(0) as usize;
                let mine: Vec<Digest> = model
                    .manifests
                    .keys()
                    .filter(|(x, _)| *x == ri)
                    .map(|(_, d)| d.clone())
                    .collect();
                let Some(d) = mine.get(pick % mine.len().max(1)).cloned() else {
                    continue;
                };
                e.delete_manifest(&r, &d)
                    .map_err(|e| format!("delete manifest: {e}"))?;
                model.manifests.remove(&(ri, d.clone()));
                model
                    .tags
                    .retain(|(x, _), target| !(*x == ri && *target == d));
            }
            4 => {
                let pick = input.next().unwrap_or(0) as usize;
                let mine: Vec<Digest> = model
                    .links
                    .keys()
                    .filter(|(x, _)| *x == ri)
                    .map(|(_, d)| d.clone())
                    .collect();
                let Some(d) = mine.get(pick % mine.len().max(1)).cloned() else {
                    continue;
                };
                e.delete_blob(&r, &d)
                    .map_err(|e| format!("delete blob: {e}"))?;
                model.links.remove(&(ri, d));
            }
            5 => {
                let options = GcOptions {
                    grace_period: Duration::ZERO,
                    ..GcOptions::default()
                };
                e.garbage_collect(&options)
                    .map_err(|e| format!("gc: {e}"))?;
                let marked: BTreeSet<&Digest> = model
                    .manifests
                    .values()
                    .flat_map(|(_, refs)| refs.iter())
                    .collect();
                let keep: BTreeMap<(usize, Digest), Vec<u8>> = model
                    .links
                    .iter()
                    .filter(|((_, d), _)| marked.contains(d))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                model.links = keep;
            }
            6 => {
                let crash = input.next().unwrap_or(0);
                drop(engine.take());
                if crash % 2 == 1 {
                    tear_active_tails(root, crash)?;
                }
                if crash % 4 >= 2 {
                    let _ = std::fs::remove_file(root.join("segments/index.snap"));
                }
                if crash % 8 >= 4 {
                    append_lost_round(root, crash)?;
                }
                engine =
                    Some(Engine::open_with(root, options()).map_err(|e| format!("reopen: {e}"))?);
            }
            _ => {
                let to = (ri + 1) % REPOS.len();
                let pick = input.next().unwrap_or(0) as usize;
                let mine: Vec<(Digest, Vec<u8>)> = model
                    .links
                    .iter()
                    .filter(|((x, _), _)| *x == ri)
                    .map(|((_, d), v)| (d.clone(), v.clone()))
                    .collect();
                let Some((d, bytes)) = mine.get(pick % mine.len().max(1)).cloned() else {
                    continue;
                };
                e.mount_blob(&repo(to), &r, &d)
                    .map_err(|e| format!("mount: {e}"))?;
                model.links.insert((to, d), bytes);
            }
        }
        let Some(e) = engine.as_ref() else {
            return Err("engine missing".into());
        };
        check(e, &model).map_err(|m| format!("after op {} ({}): {m}", input.pos, op % 8))?;
    }
    Ok(())
}
