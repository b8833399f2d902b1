//! Engine behaviour tests against a real temporary directory.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::upload::{block as bulk, UploadLease};
use crate::*;

fn repo(name: &str) -> RepositoryName {
    name.parse().unwrap()
}

fn push_blob(engine: &Engine, r: &RepositoryName, data: &[u8]) -> Digest {
    let id = engine.start_upload(r).unwrap();
    let mut at = 0;
    for chunk in data.chunks(7) {
        at = engine.upload_append(r, id, at, chunk).unwrap();
    }
    let digest = Digest::sha256_of(data);
    engine.finish_upload(r, id, &digest).unwrap();
    digest
}

/// Reads a blob the way the server sends it: `len` bytes at `offset`.
fn read_all(b: BlobRead) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0u8; b.len as usize];
    b.file.read_exact_at(&mut out, b.offset).unwrap();
    out
}

fn image_manifest(config: &Digest, layer: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string()}]
    }))
    .unwrap()
}

#[test]
fn blobs_manifests_and_tags_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("team/app");
    let (config, layer, manifest_digest, body);
    {
        let engine = Engine::open(dir.path()).unwrap();
        config = push_blob(&engine, &r, b"{}");
        layer = push_blob(&engine, &r, b"layer bytes, more than seven of them");
        body = image_manifest(&config, &layer);
        let tag: Reference = "v1".parse().unwrap();
        manifest_digest = engine
            .put_manifest(&r, &tag, Some(manifest::OCI_MANIFEST), &body)
            .unwrap()
            .digest;
    }
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.catalog(), vec!["team/app".to_string()]);
    assert_eq!(engine.tags(&r).unwrap(), vec!["v1".to_string()]);
    assert_eq!(
        read_all(engine.open_blob(&r, &layer).unwrap()),
        b"layer bytes, more than seven of them"
    );
    let by_tag = engine.manifest(&r, &"v1".parse().unwrap()).unwrap();
    assert_eq!(&by_tag.bytes[..], &body[..]);
    assert_eq!(by_tag.digest, manifest_digest);
    assert_eq!(by_tag.media_type, manifest::OCI_MANIFEST);
    let by_digest = engine
        .manifest(&r, &Reference::Digest(manifest_digest.clone()))
        .unwrap();
    assert_eq!(&by_digest.bytes[..], &body[..]);
}

#[test]
fn a_served_manifest_comes_from_memory_but_only_while_the_repository_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (r, other) = (repo("team/app"), repo("team/other"));
    let config = push_blob(&engine, &r, b"{}");
    let layer = push_blob(&engine, &r, b"layer bytes, more than seven of them");
    let body = image_manifest(&config, &layer);
    let tag: Reference = "v1".parse().unwrap();
    let digest = engine
        .put_manifest(&r, &tag, Some(manifest::OCI_MANIFEST), &body)
        .unwrap()
        .digest;
    assert_eq!(engine.manifests.bytes(), 0);
    let first = engine.manifest(&r, &tag).unwrap();
    assert_eq!(engine.manifests.bytes(), body.len());
    let again = engine.manifest(&r, &tag).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first.bytes, &again.bytes),
        "not from memory"
    );
    assert_eq!(&again.bytes[..], &body[..]);
    // Cached bytes never make a manifest visible where it is not linked...
    let by_digest = Reference::Digest(digest.clone());
    assert!(matches!(
        engine.manifest(&other, &by_digest),
        Err(EngineError::NameUnknown | EngineError::ManifestUnknown)
    ));
    // ...nor after it was deleted.
    engine.delete_manifest(&r, &digest).unwrap();
    for reference in [&tag, &by_digest] {
        assert!(matches!(
            engine.manifest(&r, reference),
            Err(EngineError::ManifestUnknown)
        ));
    }
}

#[test]
fn blobs_are_visible_only_where_linked_and_mount_links_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let d = push_blob(&engine, &a, b"shared");
    assert!(matches!(
        engine.blob_len(&b, &d),
        Err(EngineError::BlobUnknown(_))
    ));
    assert!(matches!(
        engine.mount_blob(&a, &b, &d),
        Err(EngineError::BlobUnknown(_))
    ));
    assert_eq!(engine.mount_blob(&b, &a, &d).unwrap(), 6);
    assert_eq!(read_all(engine.open_blob(&b, &d).unwrap()), b"shared");
}

#[test]
fn wrong_digest_stores_nothing_and_keeps_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let id = engine.start_upload(&r).unwrap();
    engine.upload_append(&r, id, 0, b"abc").unwrap();
    let wrong = Digest::sha256_of(b"abd");
    assert!(matches!(
        engine.finish_upload(&r, id, &wrong),
        Err(EngineError::DigestMismatch { .. })
    ));
    assert!(engine.blob_len(&r, &wrong).is_err());
    assert!(engine.catalog().is_empty());
    assert_eq!(engine.upload_len(&r, id).unwrap(), 3);
    engine
        .finish_upload(&r, id, &Digest::sha256_of(b"abc"))
        .unwrap();
    assert!(matches!(
        engine.upload_len(&r, id),
        Err(EngineError::UploadUnknown)
    ));
}

#[test]
fn out_of_order_chunks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let id = engine.start_upload(&r).unwrap();
    engine.upload_append(&r, id, 0, b"abc").unwrap();
    let err = engine.upload_append(&r, id, 2, b"x").unwrap_err();
    assert!(matches!(
        err,
        EngineError::RangeMismatch {
            expected: 3,
            got: 2
        }
    ));
    assert!(matches!(
        engine.upload_len(&repo("other"), id),
        Err(EngineError::UploadUnknown)
    ));
}

#[test]
fn uploads_resume_after_reopen_with_sha512() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    let id = {
        let engine = Engine::open(dir.path()).unwrap();
        let id = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, id, 0, b"first half ").unwrap();
        id
    };
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().uploads_resumed, 1);
    assert_eq!(engine.upload_len(&r, id).unwrap(), 11);
    engine.upload_append(&r, id, 11, b"second half").unwrap();
    let digest = Digest::of(Algorithm::Sha512, b"first half second half");
    engine.finish_upload(&r, id, &digest).unwrap();
    assert_eq!(engine.blob_len(&r, &digest).unwrap(), 22);
}

#[test]
fn manifests_must_reference_present_blobs_and_match_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let config = push_blob(&engine, &r, b"{}");
    let missing = Digest::sha256_of(b"never pushed");
    let body = image_manifest(&config, &missing);
    let err = engine
        .put_manifest(&r, &"t".parse().unwrap(), None, &body)
        .unwrap_err();
    assert!(matches!(err, EngineError::ManifestBlobUnknown(d) if d == missing));
    let layer = push_blob(&engine, &r, b"layer");
    let body = image_manifest(&config, &layer);
    let wrong = Reference::Digest(Digest::sha256_of(b"something else"));
    assert!(matches!(
        engine.put_manifest(&r, &wrong, None, &body),
        Err(EngineError::DigestMismatch { .. })
    ));
    assert!(engine.tags(&r).unwrap().is_empty());
}

#[test]
fn deletes_remove_tags_manifests_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let config = push_blob(&engine, &r, b"{}");
    let layer = push_blob(&engine, &r, b"layer");
    let body = image_manifest(&config, &layer);
    let stored = engine
        .put_manifest(&r, &"a".parse().unwrap(), None, &body)
        .unwrap();
    engine
        .put_manifest(&r, &"b".parse().unwrap(), None, &body)
        .unwrap();
    engine.delete_tag(&r, &"a".parse().unwrap()).unwrap();
    assert_eq!(engine.tags(&r).unwrap(), vec!["b".to_string()]);
    engine.delete_manifest(&r, &stored.digest).unwrap();
    assert!(engine.tags(&r).unwrap().is_empty());
    engine.delete_blob(&r, &layer).unwrap();
    assert!(engine.open_blob(&r, &layer).is_err());
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert!(engine.tags(&r).unwrap().is_empty());
    assert!(engine.open_blob(&r, &layer).is_err());
    assert!(engine.open_blob(&r, &config).is_ok());
}

#[test]
fn a_torn_log_tail_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("r");
    {
        let engine = Engine::open(dir.path()).unwrap();
        push_blob(&engine, &r, b"kept");
    }
    let log = dir.path().join("meta/log");
    let mut bytes = std::fs::read(&log).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(b"BRML\x01\0\0\0\xff\0\0\0garbage");
    std::fs::write(&log, &bytes).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(
        engine.open_report().torn_tail_bytes,
        (bytes.len() - whole) as u64
    );
    assert_eq!(engine.catalog(), vec!["r".to_string()]);
    push_blob(&engine, &r, b"after");
    drop(engine);
    assert_eq!(
        Engine::open(dir.path())
            .unwrap()
            .open_report()
            .torn_tail_bytes,
        0
    );
}

#[test]
fn concurrent_commits_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    push_blob(
                        &engine,
                        &repo(&format!("r{t}")),
                        format!("{t}-{i}").as_bytes(),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.catalog().len(), 8);
    for t in 0..8 {
        for i in 0..20 {
            let d = Digest::sha256_of(format!("{t}-{i}").as_bytes());
            assert!(engine.blob_len(&repo(&format!("r{t}")), &d).is_ok());
        }
    }
}

#[test]
fn referrers_are_listed_by_subject_and_filtered_by_artifact_type() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let config = push_blob(&engine, &r, b"{}");
    let layer = push_blob(&engine, &r, b"layer");
    let subject = engine
        .put_manifest(
            &r,
            &"base".parse().unwrap(),
            None,
            &image_manifest(&config, &layer),
        )
        .unwrap()
        .digest;
    let referrer = |artifact_type: &str, note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": manifest::OCI_MANIFEST, "digest": subject.to_string(), "size": 1},
            "annotations": {"note": note}
        }))
        .unwrap()
    };
    let sbom = engine
        .put_manifest(
            &r,
            &"sbom".parse().unwrap(),
            None,
            &referrer("application/spdx+json", "s"),
        )
        .unwrap();
    assert_eq!(sbom.subject.as_ref(), Some(&subject));
    engine
        .put_manifest(
            &r,
            &"sig".parse().unwrap(),
            None,
            &referrer("application/vnd.dev.sig", "g"),
        )
        .unwrap();
    let all = engine.referrers(&r, &subject, None).unwrap();
    assert_eq!(all.len(), 2);
    let sboms = engine
        .referrers(&r, &subject, Some("application/spdx+json"))
        .unwrap();
    assert_eq!(sboms.len(), 1);
    assert_eq!(sboms[0].digest, sbom.digest);
    assert_eq!(sboms[0].annotations.as_ref().unwrap()["note"], "s");
    assert!(engine
        .referrers(&repo("other"), &subject, None)
        .unwrap()
        .is_empty());
    engine.delete_manifest(&r, &sbom.digest).unwrap();
    assert_eq!(engine.referrers(&r, &subject, None).unwrap().len(), 1);
}

#[test]
fn mount_from_any_finds_a_linked_blob() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let d = push_blob(&engine, &repo("a"), b"shared");
    assert_eq!(engine.mount_blob_from_any(&repo("b"), &d).unwrap(), 6);
    assert!(engine.blob_len(&repo("b"), &d).is_ok());
    let missing = Digest::sha256_of(b"nowhere");
    assert!(matches!(
        engine.mount_blob_from_any(&repo("b"), &missing),
        Err(EngineError::BlobUnknown(_))
    ));
}

#[test]
fn one_process_at_a_time_owns_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::open(dir.path()).unwrap();
    assert!(matches!(
        Engine::open(dir.path()),
        Err(EngineError::Locked(_))
    ));
    drop(first);
    assert!(Engine::open(dir.path()).is_ok());
}

#[test]
fn idle_uploads_are_purged_and_active_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let idle = engine.start_upload(&r).unwrap();
    engine.upload_append(&r, idle, 0, b"abandoned").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let active = engine.start_upload(&r).unwrap();
    engine.upload_append(&r, active, 0, b"fresh").unwrap();
    let would = engine
        .purge_uploads(std::time::Duration::from_millis(200), true)
        .unwrap();
    assert_eq!(would, vec![idle]);
    assert!(
        engine.upload_len(&r, idle).is_ok(),
        "a dry run removed the session"
    );
    assert_eq!(
        engine
            .purge_uploads(std::time::Duration::from_millis(200), false)
            .unwrap(),
        vec![idle]
    );
    assert!(matches!(
        engine.upload_len(&r, idle),
        Err(EngineError::UploadUnknown)
    ));
    assert_eq!(engine.upload_len(&r, active).unwrap(), 5);
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert!(
        matches!(engine.upload_len(&r, idle), Err(EngineError::UploadUnknown)),
        "purged session came back"
    );
}

#[test]
fn random_operation_sequences_match_the_model() {
    let mut state = 0x2545f4914f6cdd1du64;
    for run in 0..40 {
        let ops: Vec<u8> = (0..300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = model_check::run(dir.path(), &ops) {
            panic!("run {run} diverged from the model: {e}\nops: {ops:?}");
        }
    }
}

/// The files under `uploads/` other than the session journal.
fn session_files(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "sessions")
        .collect();
    names.sort();
    names
}

#[test]
fn a_session_costs_no_file_until_it_receives_bytes_and_survives_reopen_empty() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("lazy/app");
    let (empty, partial) = {
        let engine = Engine::open(dir.path()).unwrap();
        let empty = engine.start_upload(&r).unwrap();
        assert!(session_files(dir.path()).is_empty());
        let partial = engine.start_upload(&r).unwrap();
        engine.upload_append(&r, partial, 0, b"half ").unwrap();
        assert_eq!(session_files(dir.path()), vec![format!("{partial}.data")]);
        (empty, partial)
    };
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().uploads_resumed, 2);
    assert_eq!(engine.upload_len(&r, empty).unwrap(), 0);
    assert_eq!(engine.upload_len(&r, partial).unwrap(), 5);
    assert!(matches!(
        engine.upload_len(&repo("other"), empty),
        Err(EngineError::UploadUnknown)
    ));
    engine.upload_append(&r, partial, 5, b"full").unwrap();
    let d = Digest::sha256_of(b"half full");
    assert_eq!(engine.finish_upload(&r, partial, &d).unwrap(), 9);
    let e = Digest::sha256_of(b"late");
    engine.upload_append(&r, empty, 0, b"late").unwrap();
    engine.finish_upload(&r, empty, &e).unwrap();
    assert!(session_files(dir.path()).is_empty());
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().uploads_resumed, 0);
    assert_eq!(read_blob(&engine, &r, &d), b"half full");
}

fn read_blob(engine: &Engine, r: &RepositoryName, d: &Digest) -> Vec<u8> {
    let blob = engine.open_blob(r, d).unwrap();
    let mut out = vec![0u8; blob.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&blob.file, &mut out, blob.offset).unwrap();
    out
}

#[test]
fn a_whole_small_blob_in_one_put_never_touches_a_session_file() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("fast");
    let id = engine.start_upload(&r).unwrap();
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        engine.finish_upload_with(&r, id, b"body", &wrong),
        Err(EngineError::DigestMismatch { .. })
    ));
    // A refused digest leaves the bytes in the session, as a PATCH would.
    assert_eq!(engine.upload_len(&r, id).unwrap(), 4);
    let d = Digest::sha256_of(b"body");
    engine.finish_upload_with(&r, id, b"", &d).unwrap();
    assert_eq!(read_blob(&engine, &r, &d), b"body");
    let id = engine.start_upload(&r).unwrap();
    let d2 = Digest::sha256_of(b"straight in");
    assert_eq!(
        engine
            .finish_upload_with(&r, id, b"straight in", &d2)
            .unwrap(),
        11
    );
    assert!(session_files(dir.path()).is_empty());
    assert!(matches!(
        engine.upload_len(&r, id),
        Err(EngineError::UploadUnknown)
    ));
    assert_eq!(read_blob(&engine, &r, &d2), b"straight in");
    // A session that already holds bytes takes the tail as an append.
    let id = engine.start_upload(&r).unwrap();
    engine.upload_append(&r, id, 0, b"head ").unwrap();
    let d3 = Digest::sha256_of(b"head tail");
    engine.finish_upload_with(&r, id, b"tail", &d3).unwrap();
    assert_eq!(read_blob(&engine, &r, &d3), b"head tail");
}

#[test]
fn the_session_journal_stays_small_and_tolerates_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("j");
    let kept = {
        let engine = Engine::open(dir.path()).unwrap();
        for _ in 0..5000 {
            let id = engine.start_upload(&r).unwrap();
            engine.cancel_upload(&r, id).unwrap();
        }
        let kept = engine.start_upload(&r).unwrap();
        let journal = fs::metadata(dir.path().join("uploads/sessions")).unwrap();
        assert!(journal.len() < 4200 * 90, "{} bytes", journal.len());
        kept
    };
    // A line cut short (a power loss mid-append) and garbage are ignored.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("uploads/sessions"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"+ not-a-uuid 0 j\n+ 0a0a").unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().uploads_resumed, 1);
    assert_eq!(engine.upload_len(&r, kept).unwrap(), 0);
    let journal = fs::read_to_string(dir.path().join("uploads/sessions")).unwrap();
    assert_eq!(journal.lines().count(), 1, "{journal}");
}

#[test]
fn sessions_of_the_directory_layout_are_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("old/layout");
    drop(Engine::open(dir.path()).unwrap());
    let id = UploadId::random();
    let session = dir.path().join(format!("uploads/{id}"));
    fs::create_dir(&session).unwrap();
    fs::write(session.join("repo"), "old/layout").unwrap();
    fs::write(session.join("data"), b"written by 0.x ").unwrap();
    // An incomplete one is removed.
    let broken = dir.path().join(format!("uploads/{}", UploadId::random()));
    fs::create_dir(&broken).unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.open_report().uploads_resumed, 1);
    assert!(!broken.exists());
    engine.upload_append(&r, id, 15, b"resumed").unwrap();
    let d = Digest::sha256_of(b"written by 0.x resumed");
    engine.finish_upload(&r, id, &d).unwrap();
    assert!(!session.exists());
    assert_eq!(read_blob(&engine, &r, &d), b"written by 0.x resumed");
}

/// Pushes `data` into a leased session block by block, as the server's
/// pipeline does, and returns the hasher that followed it.
fn write_leased(lease: &mut UploadLease, from: u64, data: &[u8]) -> u64 {
    let mut at = from;
    let mut rest = data;
    while !rest.is_empty() {
        let mut block = Block::new(at);
        let n = block.fill(rest);
        lease.hasher.update(block.bytes());
        lease.writer.write(&block).unwrap();
        rest = &rest[n..];
        at = block.end();
    }
    at
}

#[test]
fn a_leased_session_takes_bulk_blocks_and_commits_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("bulk");
    let data: Vec<u8> = (0..3 * bulk::BLOCK_BYTES + 999)
        .map(|i| (i % 251) as u8)
        .collect();
    let id = engine.start_upload(&r).unwrap();
    // An ordinary small chunk first, so the lease starts mid-page.
    engine.upload_append(&r, id, 0, &data[..1000]).unwrap();
    let mut lease = engine.lease_upload(&r, id, 1000).unwrap();
    let end = write_leased(&mut lease, 1000, &data[1000..]);
    assert_eq!(
        engine
            .end_upload_lease(&r, id, end, Some(lease.hasher))
            .unwrap(),
        data.len() as u64
    );
    let digest = Digest::sha256_of(&data);
    engine.finish_upload(&r, id, &digest).unwrap();
    assert_eq!(read_blob(&engine, &r, &digest), data);
}

#[test]
fn a_leased_session_refuses_every_other_writer_until_the_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("bulk");
    let id = engine.start_upload(&r).unwrap();
    assert!(matches!(
        engine.lease_upload(&r, id, 5),
        Err(EngineError::RangeMismatch {
            expected: 0,
            got: 5
        })
    ));
    let lease = engine.lease_upload(&r, id, 0).unwrap();
    let digest = Digest::sha256_of(b"x");
    assert!(matches!(
        engine.upload_append(&r, id, 0, b"x"),
        Err(EngineError::UploadBusy)
    ));
    assert!(matches!(
        engine.finish_upload(&r, id, &digest),
        Err(EngineError::UploadBusy)
    ));
    assert!(matches!(
        engine.finish_upload_with(&r, id, b"x", &digest),
        Err(EngineError::UploadBusy)
    ));
    assert!(matches!(
        engine.lease_upload(&r, id, 0),
        Err(EngineError::UploadBusy)
    ));
    engine
        .end_upload_lease(&r, id, 0, Some(lease.hasher))
        .unwrap();
    engine.upload_append(&r, id, 0, b"x").unwrap();
    engine.finish_upload(&r, id, &digest).unwrap();
}

#[test]
fn a_lease_ended_short_keeps_only_the_written_prefix_and_rehashes_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("bulk");
    let data: Vec<u8> = (0..2 * bulk::BLOCK_BYTES).map(|i| (i % 13) as u8).collect();
    let id;
    {
        let engine = Engine::open(dir.path()).unwrap();
        id = engine.start_upload(&r).unwrap();
        let mut lease = engine.lease_upload(&r, id, 0).unwrap();
        write_leased(&mut lease, 0, &data);
        // The writer got only the first block to disk while the hasher saw
        // more, so the pipeline hands back no hash: the session keeps the
        // first block (the rest is cut off the file) and rehashes it.
        drop(lease.hasher);
        let first = bulk::BLOCK_BYTES as u64;
        assert_eq!(engine.end_upload_lease(&r, id, first, None).unwrap(), first);
        assert_eq!(engine.upload_len(&r, id).unwrap(), first);
        let half = Digest::sha256_of(&data[..first as usize]);
        assert!(matches!(
            engine.finish_upload(&r, id, &Digest::sha256_of(&data)),
            Err(EngineError::DigestMismatch { actual, .. }) if actual == half
        ));
    }
    // What a restart resumes from is the same prefix.
    let engine = Engine::open(dir.path()).unwrap();
    let first = bulk::BLOCK_BYTES;
    assert_eq!(engine.upload_len(&r, id).unwrap(), first as u64);
    engine
        .upload_append(&r, id, first as u64, &data[first..])
        .unwrap();
    let digest = Digest::sha256_of(&data);
    engine.finish_upload(&r, id, &digest).unwrap();
    assert_eq!(read_blob(&engine, &r, &digest), data);
}

#[test]
fn a_descriptor_size_that_is_not_the_stored_length_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let r = repo("r");
    let config = push_blob(&engine, &r, b"{}");
    let layer = push_blob(&engine, &r, b"twelve bytes");
    let image = |layer_size: u64| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": layer_size}]
        }))
        .unwrap()
    };
    let tag: Reference = "v1".parse().unwrap();
    let wrong = image(13);
    let err = engine
        .put_manifest(&r, &tag, None, &wrong)
        .expect_err("a wrong layer size was accepted");
    match &err {
        EngineError::ManifestInvalid(ManifestError::SizeMismatch {
            digest,
            declared: 13,
            stored: 12,
            what: "blob",
        }) => assert_eq!(digest, &layer),
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&layer.to_string()) && message.contains("13") && message.contains("12"),
        "{message}"
    );
    // Nothing was written: no tag, no manifest by digest, and after a
    // reopen (the log replayed) still nothing.
    assert!(engine.tags(&r).unwrap().is_empty());
    let by_digest = Reference::Digest(Digest::sha256_of(&wrong));
    assert!(engine.manifest(&r, &by_digest).is_err());
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert!(engine.tags(&r).unwrap().is_empty());
    assert!(engine.manifest(&r, &by_digest).is_err());

    // The right size is accepted; an index must give each child's stored length.
    let child = engine
        .put_manifest(&r, &tag, None, &image(12))
        .unwrap()
        .digest;
    let child_len = image(12).len() as u64;
    let index = |size: u64| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": [{"mediaType": manifest::OCI_MANIFEST, "digest": child.to_string(), "size": size}]
        }))
        .unwrap()
    };
    let list: Reference = "list".parse().unwrap();
    assert!(matches!(
        engine.put_manifest(&r, &list, None, &index(child_len + 1)),
        Err(EngineError::ManifestInvalid(ManifestError::SizeMismatch {
            what: "manifest",
            ..
        }))
    ));
    assert_eq!(engine.tags(&r).unwrap(), vec!["v1".to_string()]);
    engine
        .put_manifest(&r, &list, None, &index(child_len))
        .unwrap();
    assert_eq!(
        engine.tags(&r).unwrap(),
        vec!["list".to_string(), "v1".to_string()]
    );
}
