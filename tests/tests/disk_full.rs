//! A full disk: berth's data directory on a small filesystem (a 40 MiB
//! tmpfs, or a loop-mounted ext4 image where tmpfs cannot be mounted; the
//! test needs root and fails, never skips, without either).
//!
//! 1. A filler file takes part of the filesystem (so space can be freed
//!    later: DELETE only unlinks per repository and frees nothing).
//! 2. 2 MiB blobs (monolithic and chunked, every third one with a tagged
//!    manifest) are pushed until one fails. That failure must be a clear
//!    HTTP error (4xx/5xx with a JSON error body; no hang, no dropped
//!    connection), the log must name the problem (ENOSPC / "No space left
//!    on device"), and the server must stay up.
//! 3. Smaller and smaller blobs and manifests squeeze out the rest: every
//!    answer is a 201 or a clear error.
//! 4. Everything acknowledged is read back exactly (bytes, digests, tags).
//! 5. The filler is deleted; a new blob and manifest push must succeed.
//! 6. Graceful restart: everything again, and another push.
//! 7. The disk is filled to the last byte again, the server is SIGKILLed
//!    and started on the full disk: everything must still be served; then
//!    space is freed and a push must succeed.
//!
//! Only the HTTP API and the process are used (no reading of data files).

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::cmd;
use berth_tests::durability::{
    absolute, agent, blob_bytes, error_code, first_difference, image_manifest, seed_from_env,
    sha256_digest, try_request, with_query, Rng, TransportError, OCI_MANIFEST,
};
use berth_tests::http::{HttpResponse, ACCEPT_MANIFESTS};
use berth_tests::registry::{Registry, RegistryCommand};
use berth_tests::step;

const FS_MIB: u64 = 40;
const FILLER_MIB: usize = 8;
const BIG: usize = 2 * 1024 * 1024;
const REPO: &str = "full/app";

/// A small filesystem mounted on a temp dir; unmounted on drop.
struct SmallFs {
    mount: PathBuf,
    kind: &'static str,
    _dir: tempfile::TempDir,
}

fn run_quiet(program: &str, args: &[&str]) -> Result<(), String> {
    let mut c = Command::new(program);
    c.args(args);
    match c.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{}` failed ({}): {}",
            cmd::describe(&c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", cmd::describe(&c))),
    }
}

impl SmallFs {
    fn mount(size_mib: u64) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("berth-disk-full.")
            .tempdir()
            .expect("temp dir");
        let mount = dir.path().join("mnt");
        fs::create_dir(&mount).expect("create the mount point");
        let m = mount.to_str().expect("utf-8 temp path");
        let tmpfs = run_quiet(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0755"),
                "tmpfs",
                m,
            ],
        );
        if tmpfs.is_ok() {
            return SmallFs {
                mount,
                kind: "tmpfs",
                _dir: dir,
            };
        }
        let image = dir.path().join("fs.img");
        let loop_ext4 = (|| {
            File::create(&image)
                .and_then(|f| f.set_len(size_mib * 1024 * 1024))
                .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
            let img = image.to_str().expect("utf-8 temp path");
            run_quiet("mkfs.ext4", &["-q", "-F", "-m", "0", img])?;
            run_quiet("mount", &["-o", "loop", img, m])
        })();
        match loop_ext4 {
            Ok(()) => SmallFs { mount, kind: "loop-mounted ext4", _dir: dir },
            Err(ext4) => panic!(
                "disk_full needs a small filesystem and could mount neither (run as root, with tmpfs or loop devices available):\n  tmpfs: {}\n  ext4 on a loop device: {ext4}",
                tmpfs.unwrap_err()
            ),
        }
    }

    /// Free bytes (statvfs).
    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.mount.to_str().unwrap()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and an out-pointer to a zeroed struct.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let m = self.mount.to_str().unwrap_or_default().to_string();
        if run_quiet("umount", &[&m]).is_err() {
            if let Err(e) = run_quiet("umount", &["-l", &m]) {
                eprintln!("[disk_full] could not unmount {m}: {e}");
            }
        }
    }
}

/// Writes a file of `mib` MiB of non-zero bytes (really allocated).
fn write_filler(path: &Path, mib: usize) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let chunk = vec![0xA5u8; 1024 * 1024];
    for _ in 0..mib {
        f.write_all(&chunk)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    f.sync_all().expect("fsync the filler");
}

/// Fills the filesystem to the last byte with `path`; returns its size.
fn fill_to_the_brim(path: &Path) -> u64 {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut written = 0u64;
    for size in [1024 * 1024, 64 * 1024, 4096, 512, 1] {
        let chunk = vec![0x5Au8; size];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
    }
    let _ = f.sync_all();
    written
}

#[derive(Clone, Debug)]
enum Acked {
    Blob {
        digest: String,
        seed: u64,
        size: usize,
    },
    Manifest {
        tag: String,
        digest: String,
        bytes: Vec<u8>,
    },
}

struct Pusher {
    base: String,
    agent: ureq::Agent,
    rng: Rng,
    acked: Vec<Acked>,
    problems: Vec<String>,
    n: u64,
    /// Every push attempt and how it ended (printed on failure).
    trace: Vec<String>,
}

/// What a push attempt came to.
enum Outcome {
    Ok,
    /// A clean HTTP error: status and error code.
    Refused(u16, String),
    /// No clean answer (transport error, or an error without a JSON body).
    Broken(String),
}

impl Pusher {
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, TransportError> {
        try_request(&self.agent, method, url, headers, body)
    }

    /// Judges a non-success answer: clean (JSON error body) or not.
    fn judge(
        &mut self,
        what: &str,
        res: Result<HttpResponse, TransportError>,
        want: u16,
    ) -> Result<HttpResponse, Outcome> {
        match res {
            Ok(r) if r.status == want => Ok(r),
            Ok(r) if r.status >= 400 => match error_code(&r) {
                Some(code) => Err(Outcome::Refused(
                    r.status,
                    format!("{code}: {}", r.json()["errors"][0]["message"]),
                )),
                None => {
                    let p = format!(
                        "{what}: {} without a JSON error body: {:?}",
                        r.status,
                        r.text()
                    );
                    self.problems.push(p.clone());
                    Err(Outcome::Broken(p))
                }
            },
            Ok(r) => {
                let p = format!("{what}: unexpected {} {:?}", r.status, r.text());
                self.problems.push(p.clone());
                Err(Outcome::Broken(p))
            }
            Err(e) => {
                let p = format!("{what}: no HTTP answer (dropped connection, hang or crash): {e}");
                self.problems.push(p.clone());
                Err(Outcome::Broken(p))
            }
        }
    }

    fn push_blob(&mut self, size: usize, chunked: bool) -> Outcome {
        let o = self.push_blob_inner(size, chunked);
        let what = format!(
            "{} blob {size} B",
            if chunked { "chunked" } else { "monolithic" }
        );
        self.note(what, &o);
        o
    }

    fn push_manifest(&mut self) -> Outcome {
        let o = self.push_manifest_inner();
        self.note(format!("manifest v{}", self.n), &o);
        o
    }

    fn note(&mut self, what: String, o: &Outcome) {
        let end = match o {
            Outcome::Ok => "acknowledged".to_string(),
            Outcome::Refused(s, e) => format!("{s} {e}"),
            Outcome::Broken(e) => format!("BROKEN {e}"),
        };
        self.trace.push(format!("{what}: {end}"));
    }

    fn push_blob_inner(&mut self, size: usize, chunked: bool) -> Outcome {
        let seed = self.rng.next_u64();
        let data = blob_bytes(seed, size);
        let digest = sha256_digest(&data);
        let what = format!(
            "{} upload of {size} B ({digest})",
            if chunked { "chunked" } else { "monolithic" }
        );
        let done = if !chunked {
            let url = format!("{}/v2/{REPO}/blobs/uploads/?digest={digest}", self.base);
            let res = self.send(
                "POST",
                &url,
                &[("Content-Type", "application/octet-stream")],
                Some(&data),
            );
            match self.judge(&what, res, 201) {
                Ok(r) => r,
                Err(o) => return o,
            }
        } else {
            let res = self.send(
                "POST",
                &format!("{}/v2/{REPO}/blobs/uploads/", self.base),
                &[],
                None,
            );
            let start = match self.judge(&format!("{what}: POST"), res, 202) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let mut location = absolute(&self.base, start.header("Location").unwrap_or_default());
            let half = size / 2;
            let mut result = None;
            for (a, b) in [(0, half), (half, size)] {
                if b <= a {
                    continue;
                }
                let range = format!("{a}-{}", b - 1);
                let res = self.send(
                    "PATCH",
                    &location,
                    &[
                        ("Content-Range", &range),
                        ("Content-Type", "application/octet-stream"),
                    ],
                    Some(&data[a..b]),
                );
                match self.judge(&format!("{what}: PATCH {range}"), res, 202) {
                    Ok(r) => {
                        if let Some(l) = r.header("Location") {
                            location = absolute(&self.base, l);
                        }
                    }
                    Err(o) => {
                        result = Some(o);
                        break;
                    }
                }
            }
            let finished = match result {
                Some(o) => Err(o),
                None => {
                    let res = self.send(
                        "PUT",
                        &with_query(&location, "digest", &digest),
                        &[],
                        Some(&[]),
                    );
                    self.judge(&format!("{what}: PUT"), res, 201)
                }
            };
            match finished {
                Ok(r) => r,
                Err(o) => {
                    // A client abandons the session (and frees what it holds).
                    if let Ok(r) = self.send("DELETE", &location, &[], None) {
                        if !matches!(r.status, 204 | 404) && error_code(&r).is_none() {
                            self.problems.push(format!(
                                "{what}: cancelling the session: {} {:?}",
                                r.status,
                                r.text()
                            ));
                        }
                    }
                    return o;
                }
            }
        };
        if done.header("Docker-Content-Digest") != Some(digest.as_str()) {
            self.problems.push(format!(
                "{what}: 201 with Docker-Content-Digest {:?}",
                done.header("Docker-Content-Digest")
            ));
        }
        self.acked.push(Acked::Blob { digest, seed, size });
        Outcome::Ok
    }

    /// A manifest over the last blob pushed, tagged uniquely.
    fn push_manifest_inner(&mut self) -> Outcome {
        let Some((digest, size)) = self.acked.iter().rev().find_map(|a| match a {
            Acked::Blob { digest, size, .. } => Some((digest.clone(), *size)),
            _ => None,
        }) else {
            return Outcome::Ok;
        };
        self.n += 1;
        let tag = format!("v{}", self.n);
        let bytes = image_manifest((&digest, size), &[(digest.clone(), size)], &tag);
        let md = sha256_digest(&bytes);
        let url = format!("{}/v2/{REPO}/manifests/{tag}", self.base);
        let res = self.send("PUT", &url, &[("Content-Type", OCI_MANIFEST)], Some(&bytes));
        match self.judge(&format!("PUT manifest {REPO}:{tag}"), res, 201) {
            Ok(_) => {
                self.acked.push(Acked::Manifest {
                    tag,
                    digest: md,
                    bytes,
                });
                Outcome::Ok
            }
            Err(o) => o,
        }
    }
}

/// Reads back everything acknowledged; returns the problems found.
fn verify_all(base: &str, acked: &[Acked], when: &str) -> Vec<String> {
    let agent = agent(Duration::from_secs(60));
    let mut problems = Vec::new();
    let get = |url: &str, headers: &[(&str, &str)]| {
        try_request(&agent, "GET", url, headers, None)
            .unwrap_or_else(|e| panic!("{when}: GET {url}: the server did not answer: {e}"))
    };
    let mut tags = Vec::new();
    for a in acked {
        match a {
            Acked::Blob { digest, seed, size } => {
                let r = get(&format!("{base}/v2/{REPO}/blobs/{digest}"), &[]);
                let want = blob_bytes(*seed, *size);
                if r.status != 200 {
                    problems.push(format!(
                        "{when}: acknowledged blob {digest} ({size} B): GET -> {} {}",
                        r.status,
                        r.text()
                    ));
                } else if r.body != want {
                    problems.push(format!(
                        "{when}: blob {digest}: {} B back, {size} B acknowledged, first difference at {}",
                        r.body.len(),
                        first_difference(&r.body, &want)
                    ));
                } else if r
                    .header("Docker-Content-Digest")
                    .is_some_and(|h| h != digest)
                {
                    problems.push(format!(
                        "{when}: blob {digest}: Docker-Content-Digest {:?}",
                        r.header("Docker-Content-Digest")
                    ));
                }
            }
            Acked::Manifest { tag, digest, bytes } => {
                tags.push(tag.clone());
                for reference in [tag.as_str(), digest.as_str()] {
                    let r = get(
                        &format!("{base}/v2/{REPO}/manifests/{reference}"),
                        &[("Accept", ACCEPT_MANIFESTS)],
                    );
                    if r.status != 200 {
                        problems.push(format!(
                            "{when}: acknowledged manifest {REPO}:{reference}: GET -> {} {}",
                            r.status,
                            r.text()
                        ));
                    } else if &r.body != bytes
                        || r.header("Docker-Content-Digest") != Some(digest.as_str())
                        || sha256_digest(&r.body) != *digest
                    {
                        problems.push(format!(
                            "{when}: manifest {REPO}:{reference}: bytes or Docker-Content-Digest ({:?}) differ from the acknowledged {digest}",
                            r.header("Docker-Content-Digest")
                        ));
                    }
                }
            }
        }
    }
    let r = get(&format!("{base}/v2/{REPO}/tags/list"), &[]);
    if r.status == 200 {
        let mut listed: Vec<String> = r.json()["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        listed.sort();
        tags.sort();
        if listed != tags {
            problems.push(format!(
                "{when}: tags/list {listed:?}, acknowledged {tags:?}"
            ));
        }
    } else if !tags.is_empty() {
        problems.push(format!("{when}: tags/list -> {} {}", r.status, r.text()));
    }
    problems
}

/// The registry's log once it contains one of `needles`, or after 5 s.
fn log_naming(r: &Registry, needles: &[&str]) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = r.log_tail(400);
        let lower = log.to_lowercase();
        if needles.iter().any(|n| lower.contains(&n.to_lowercase())) {
            return (true, log);
        }
        if Instant::now() > deadline {
            return (false, log);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_up(r: &Registry) -> Result<(), String> {
    if let Some(pid) = r.pid() {
        if !cmd::pid_alive(pid) {
            return Err(format!("the server process {pid} is gone"));
        }
    }
    match try_request(
        &agent(Duration::from_secs(10)),
        "GET",
        &r.url("/v2/"),
        &[],
        None,
    ) {
        Ok(res) if res.status == 200 => Ok(()),
        Ok(res) => Err(format!("GET /v2/ -> {}", res.status)),
        Err(e) => Err(format!("GET /v2/ failed: {e}")),
    }
}

/// The log's error and warning lines and failed requests (for the report).
fn log_errors(r: &Registry, max: usize) -> String {
    let log = r.log_tail(20000);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("WARN")
                || l.contains(" 500 ")
                || l.contains(" 507 ")
                || l.contains("panicked")
        })
        .collect();
    let skip = lines.len().saturating_sub(max);
    lines[skip..].join("\n")
}

const ENOSPC_WORDS: [&str; 4] = [
    "no space left on device",
    "os error 28",
    "enospc",
    "disk full",
];

#[test]
fn a_full_disk_gives_clear_errors_and_loses_nothing() {
    let t0 = Instant::now();
    let seed = seed_from_env("BERTH_DISK_FULL_SEED");
    let small = SmallFs::mount(FS_MIB);
    step(
        t0,
        &format!(
            "{FS_MIB} MiB {} on {} ({} MiB free); seed {seed:#x}",
            small.kind,
            small.mount.display(),
            small.free_bytes() / 1048576
        ),
    );
    let filler = small.mount.join("filler");
    write_filler(&filler, FILLER_MIB);

    let mut command = RegistryCommand::from_env();
    command
        .env
        .push(("REGISTRY_STORAGE_DELETE_ENABLED".into(), "true".into()));
    let mut registry = Registry::start_with(command, &small.mount.join("data"));
    let mut p = Pusher {
        base: registry.base_url(),
        agent: agent(Duration::from_secs(60)),
        rng: Rng::new(seed),
        acked: Vec::new(),
        problems: Vec::new(),
        n: 0,
        trace: Vec::new(),
    };

    // 2. Big blobs until one fails.
    let mut first_failure = None;
    for i in 0..200 {
        let t = Instant::now();
        let outcome = p.push_blob(BIG, i % 2 == 1);
        let took = t.elapsed();
        match outcome {
            Outcome::Ok => {
                if i % 3 == 2 {
                    match p.push_manifest() {
                        Outcome::Ok => {}
                        Outcome::Refused(status, e) => {
                            first_failure = Some((
                                format!("manifest after blob #{i}"),
                                format!("{status} {e}"),
                                took,
                            ));
                            break;
                        }
                        Outcome::Broken(e) => {
                            first_failure = Some((format!("manifest after blob #{i}"), e, took));
                            break;
                        }
                    }
                }
            }
            Outcome::Refused(status, e) => {
                first_failure = Some((
                    format!(
                        "blob #{i} ({}, {BIG} B)",
                        if i % 2 == 1 { "chunked" } else { "monolithic" }
                    ),
                    format!("{status} {e}"),
                    took,
                ));
                break;
            }
            Outcome::Broken(e) => {
                first_failure = Some((format!("blob #{i}"), e, took));
                break;
            }
        }
    }
    let Some((what, error, took)) = first_failure else {
        panic!("200 pushes of {BIG} B into a {FS_MIB} MiB filesystem all succeeded: the disk never filled (is the data dir on it?)");
    };
    let acked_before = p.acked.len();
    step(
        t0,
        &format!(
            "first failure after {acked_before} acknowledged pushes: {what} -> {error} (answered in {:.2}s); {} KiB free",
            took.as_secs_f64(),
            small.free_bytes() / 1024
        ),
    );
    let (named, log) = log_naming(&registry, &ENOSPC_WORDS);
    if !named {
        p.problems.push(format!(
            "the server log does not name the storage problem ({ENOSPC_WORDS:?}) after the failed push; tail:\n{}",
            cmd::tail_str(&log, 15)
        ));
    }
    if let Err(e) = server_up(&registry) {
        panic!(
            "the server did not survive the full disk: {e}\n{:?}\n--- log ---\n{}",
            p.problems,
            registry.log_tail(40)
        );
    }

    // 3. Squeeze: smaller pushes until they fail too; every answer clean.
    let mut refused = 0;
    for size in [256 * 1024, 32 * 1024, 4096, 512, 1] {
        for j in 0..40 {
            match p.push_blob(size, j % 2 == 1) {
                Outcome::Ok => {
                    if j % 4 == 3 {
                        if let Outcome::Refused(..) = p.push_manifest() {
                            refused += 1;
                        }
                    }
                }
                Outcome::Refused(..) | Outcome::Broken(_) => {
                    refused += 1;
                    if let Outcome::Refused(..) = p.push_manifest() {
                        refused += 1;
                    }
                    break;
                }
            }
        }
    }
    step(
        t0,
        &format!(
            "squeezed: {} acknowledged in all ({} after the first failure), {refused} refused; {} KiB free",
            p.acked.len(),
            p.acked.len() - acked_before,
            small.free_bytes() / 1024
        ),
    );
    if let Err(e) = server_up(&registry) {
        panic!(
            "the server did not survive the full disk: {e}\n{:?}\n--- log ---\n{}",
            p.problems,
            registry.log_tail(40)
        );
    }

    // 4. Everything acknowledged, read back while the disk is full.
    let mut problems = std::mem::take(&mut p.problems);
    problems.extend(verify_all(&p.base, &p.acked, "disk full"));

    // 5. Free space; a new push must succeed.
    fs::remove_file(&filler).expect("delete the filler");
    step(
        t0,
        &format!("filler deleted: {} KiB free", small.free_bytes() / 1024),
    );
    let push_after = |p: &mut Pusher, when: &str, problems: &mut Vec<String>| {
        match p.push_blob(1024 * 1024, false) {
            Outcome::Ok => {}
            Outcome::Refused(s, e) => {
                problems.push(format!("{when}: a 1 MiB monolithic push failed: {s} {e}"))
            }
            Outcome::Broken(e) => problems.push(format!("{when}: {e}")),
        }
        match p.push_blob(300 * 1024, true) {
            Outcome::Ok => {}
            Outcome::Refused(s, e) => {
                problems.push(format!("{when}: a 300 KiB chunked push failed: {s} {e}"))
            }
            Outcome::Broken(e) => problems.push(format!("{when}: {e}")),
        }
        match p.push_manifest() {
            Outcome::Ok => {}
            Outcome::Refused(s, e) => {
                problems.push(format!("{when}: a manifest push failed: {s} {e}"))
            }
            Outcome::Broken(e) => problems.push(format!("{when}: {e}")),
        }
        problems.append(&mut p.problems);
    };
    push_after(&mut p, "after freeing space (no restart)", &mut problems);
    problems.extend(verify_all(&p.base, &p.acked, "after freeing space"));
    step(
        t0,
        &format!(
            "pushed after freeing space; {} problem(s) so far",
            problems.len()
        ),
    );

    // 6. Graceful restart.
    registry.restart();
    problems.extend(verify_all(&p.base, &p.acked, "after a restart"));
    push_after(&mut p, "after the restart", &mut problems);
    problems.extend(verify_all(
        &p.base,
        &p.acked,
        "after the restart and a push",
    ));
    step(
        t0,
        &format!(
            "restarted: {} acknowledged objects; {} problem(s) so far",
            p.acked.len(),
            problems.len()
        ),
    );

    // 7. Full to the last byte, kill -9, start on the full disk.
    let brim = small.mount.join("brim");
    let filled = fill_to_the_brim(&brim);
    // The server may still need a little room: leave it what it can get.
    let mut refused_full = 0;
    for j in 0..8 {
        if !matches!(p.push_blob(4096, j % 2 == 1), Outcome::Ok) {
            refused_full += 1;
        }
    }
    problems.append(&mut p.problems);
    step(
        t0,
        &format!("filled to the brim ({} MiB, {} B free), {refused_full}/8 small pushes refused; kill -9", filled / 1048576, small.free_bytes()),
    );
    registry.kill();
    registry.start_again();
    if let Err(e) = server_up(&registry) {
        problems.push(format!("start on a full disk after kill -9: {e}"));
    }
    problems.extend(verify_all(
        &p.base,
        &p.acked,
        "after kill -9 and a start on a full disk",
    ));
    fs::remove_file(&brim).expect("delete the brim filler");
    push_after(
        &mut p,
        "after kill -9 on a full disk and freeing space",
        &mut problems,
    );
    problems.extend(verify_all(&p.base, &p.acked, "at the end"));
    let log = registry.log_tail(5000);
    if log.contains("panicked at") {
        problems.push(format!(
            "the registry log shows a panic:\n{}",
            registry.log_tail(60)
        ));
    }
    step(
        t0,
        &format!(
            "done: {} acknowledged objects, {} problem(s)",
            p.acked.len(),
            problems.len()
        ),
    );
    if !problems.is_empty() {
        eprintln!(
            "[disk_full] registry errors and warnings (last 60):\n{}",
            log_errors(&registry, 60)
        );
        eprintln!(
            "[disk_full] push attempts in order:\n  {}",
            p.trace.join("\n  ")
        );
    }
    assert!(
        problems.is_empty(),
        "full-disk handling (seed {seed:#x}, {} on {}): {} problem(s):\n  {}\n--- registry log tail ---\n{}",
        small.kind,
        small.mount.display(),
        problems.len(),
        problems.join("\n  "),
        registry.log_tail(30)
    );
}

/// Waits until `GET /debug/health` answers `status`; the last answer.
fn wait_health(r: &Registry, status: u16, within: Duration) -> HttpResponse {
    let t0 = Instant::now();
    loop {
        let health = r.health();
        if health.status == status || t0.elapsed() > within {
            return health;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Health tells the truth about a full disk: the background probe writes
/// and syncs a non-empty record and checks the free space, so a full file
/// system turns `/debug/health` 503 within a few probe intervals, naming
/// the failed checks; freeing space makes it healthy again.
#[test]
fn health_turns_unhealthy_when_the_disk_is_full() {
    let small = SmallFs::mount(FS_MIB);
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return;
    }
    for (k, v) in [
        ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "200ms"),
        ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "2"),
        ("REGISTRY_HEALTH_STORAGEDRIVER_FREEBYTESMIN", "1048576"),
    ] {
        command.env.push((k.into(), v.into()));
    }
    let registry = Registry::start_with(command, &small.mount.join("data"));
    let health = wait_health(&registry, 200, Duration::from_secs(5));
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json(), serde_json::json!({}));

    let filler = small.mount.join("filler");
    fill_to_the_brim(&filler);
    let health = wait_health(&registry, 503, Duration::from_secs(5));
    assert_eq!(health.status, 503, "{}", health.text());
    let body = health.json();
    let free = body["storagedriver_freespace"].as_str().unwrap_or_default();
    assert!(free.contains("free"), "{body}");
    let write = body["storagedriver_filesystem"]
        .as_str()
        .unwrap_or_default();
    assert!(write.contains("write"), "{body}");
    assert!(
        !health.text().contains(small.mount.to_str().unwrap_or("/")),
        "no paths in the answer: {body}"
    );

    fs::remove_file(&filler).expect("remove the filler");
    let health = wait_health(&registry, 200, Duration::from_secs(5));
    assert_eq!(health.status, 200, "{}", health.text());
}
