//! The pull-through cache (`proxy.remoteurl`) against a real upstream on
//! loopback (a second berth, or Debian's docker-registry), through a
//! fault-injecting relay: one upstream fetch for 50 concurrent pulls with
//! bytes streamed before the transfer ends; upstream dying mid-transfer and
//! serving wrong bytes (every waiter fails, nothing is stored); a warm cache
//! while upstream is down; tag revalidation after `proxy.tagttl`; expiry
//! (`proxy.ttl`) never evicting a pull in flight; pushes refused except
//! under `proxy.localprefix`; upstream Bearer-token and Basic auth.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use berth_tests::api::{push_blob, push_image, PushedImage};
use berth_tests::http::{self, request, try_request};
use berth_tests::images::{sha256_digest, XorShift};
use berth_tests::registry::{berth_binary, Registry, RegistryCommand};
use berth_tests::relay::Relay;
use berth_tests::tokens::{mint, now, signer, TokenServer};

fn berth(env: &[(&str, String)]) -> RegistryCommand {
    RegistryCommand {
        program: berth_binary().clone(),
        args: vec!["serve".into()],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        is_berth: true,
        ready_log_line: None,
    }
}

fn upstream(dir: &Path) -> Registry {
    Registry::start_with(berth(&[]), &dir.join("upstream"))
}

/// A berth pull-through cache of `upstream` (`host:port`) with extra settings.
fn proxy(dir: &Path, upstream: &str, extra: &[(&str, &str)]) -> Registry {
    let mut env = vec![("REGISTRY_PROXY_REMOTEURL", format!("http://{upstream}"))];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Registry::start_with(berth(&env), &dir.join("proxy"))
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    XorShift::new(seed).bytes(len)
}

/// Requests for `path` in `r`'s access log with `method`.
/// Requests `r` logged as `method path`. A registry logs a request after
/// answering it, so a client can be done before the line is written: the
/// count is read until it holds still for a quarter second.
fn access_count(r: &Registry, method: &str, path: &str) -> usize {
    let needle = format!("{method} {path} ");
    let count = || {
        std::fs::read_to_string(r.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = count();
    loop {
        thread::sleep(Duration::from_millis(250));
        let now = count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn metrics(r: &Registry) -> BTreeMap<String, u64> {
    r.metrics()
}

/// What one client got for a blob GET.
#[derive(Debug)]
enum Pull {
    /// The whole body: when its first byte arrived, its digest and length.
    Complete {
        first_byte: Instant,
        digest: String,
        len: usize,
    },
    /// A status other than 200, or a body cut short.
    Failed(String),
}

fn pull_blob(url: &str) -> Pull {
    let agent = http::agent(Duration::from_secs(180));
    let response = match agent.get(url).call() {
        Ok(r) => r,
        Err(e) => return Pull::Failed(e.to_string()),
    };
    let mut reader = response.into_reader();
    let mut body = Vec::new();
    let mut first = [0u8; 1];
    match reader.read_exact(&mut first) {
        Ok(()) => body.push(first[0]),
        Err(e) => return Pull::Failed(format!("no first byte: {e}")),
    }
    let first_byte = Instant::now();
    if let Err(e) = reader.read_to_end(&mut body) {
        return Pull::Failed(format!("body cut short after {} bytes: {e}", body.len()));
    }
    Pull::Complete {
        first_byte,
        digest: sha256_digest(&body),
        len: body.len(),
    }
}

fn concurrent_pulls(url: &str, clients: usize) -> Vec<Pull> {
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.to_owned());
            thread::spawn(move || {
                barrier.wait();
                pull_blob(&url)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

fn staging_files(proxy: &Registry) -> Vec<String> {
    std::fs::read_dir(proxy.data_dir().join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fifty_concurrent_pulls_cause_one_upstream_fetch_and_stream_before_it_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let blob = random(1, 200 << 20);
    let digest = push_blob(&up.base_url(), "ci/big", &blob, &[]);
    let relay = Relay::start(&up.addr());
    // ~2.5 s upstream transfer: long enough to see bytes reach clients early.
    relay.throttle(80 << 20);
    let px = proxy(dir.path(), &relay.addr(), &[]);
    let url = px.url(&format!("/v2/ci/big/blobs/{digest}"));
    let started = Instant::now();
    let pulls = concurrent_pulls(&url, 50);
    let upstream_done = relay.last_forward().expect("upstream sent bytes");
    let mut first_bytes = Vec::new();
    for pull in &pulls {
        match pull {
            Pull::Complete {
                first_byte,
                digest: got,
                len,
            } => {
                assert_eq!(*len, blob.len());
                assert_eq!(got, &digest, "a client got wrong bytes");
                first_bytes.push(*first_byte);
            }
            Pull::Failed(e) => panic!("a pull failed: {e}\n{}", px.log_tail(20)),
        }
    }
    let blob_path = format!("/v2/ci/big/blobs/{digest}");
    assert_eq!(
        access_count(&up, "GET", &blob_path),
        1,
        "upstream must be asked once for 50 concurrent pulls:\n{}",
        up.log_tail(20)
    );
    let latest_first_byte = first_bytes.iter().max().copied().expect("clients");
    assert!(
        latest_first_byte < upstream_done,
        "every client's first byte must arrive before the upstream transfer ends \
         (latest first byte {:?}, upstream done {:?} after start)",
        latest_first_byte - started,
        upstream_done - started
    );
    let m = metrics(&px);
    assert_eq!(m.get("berth_proxy_coalesced_total"), Some(&49), "{m:?}");
    assert_eq!(
        m.get("berth_proxy_upstream_bytes_total"),
        Some(&(blob.len() as u64))
    );
    // Cached now: a pull does not go upstream.
    assert!(matches!(pull_blob(&url), Pull::Complete { .. }));
    assert_eq!(access_count(&up, "GET", &blob_path), 1);
}

fn assert_every_pull_failed(pulls: &[Pull], what: &str) {
    for pull in pulls {
        if let Pull::Complete { len, digest, .. } = pull {
            panic!("{what}: a client got a complete body ({len} bytes, {digest})");
        }
    }
}

#[test]
fn upstream_dying_mid_transfer_fails_every_waiter_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let blob = random(2, 32 << 20);
    let digest = push_blob(&up.base_url(), "ci/cut", &blob, &[]);
    let relay = Relay::start(&up.addr());
    let px = proxy(dir.path(), &relay.addr(), &[]);
    relay.throttle(32 << 20);
    relay.cut_after(8 << 20);
    let url = px.url(&format!("/v2/ci/cut/blobs/{digest}"));
    let pulls = concurrent_pulls(&url, 5);
    assert_every_pull_failed(&pulls, "upstream cut mid-transfer");
    assert!(staging_files(&px).is_empty(), "{:?}", staging_files(&px));
    assert!(metrics(&px)["berth_proxy_upstream_errors_total"] >= 1);
    assert!(px.log_tail(50).contains("after"), "{}", px.log_tail(20));

    relay.heal();
    match pull_blob(&url) {
        Pull::Complete { digest: got, .. } => assert_eq!(got, digest),
        Pull::Failed(e) => panic!("pull after the upstream recovered: {e}"),
    }
    assert!(
        access_count(&up, "GET", &format!("/v2/ci/cut/blobs/{digest}")) >= 2,
        "nothing partial was kept: the blob was fetched again"
    );
}

#[test]
fn upstream_serving_wrong_bytes_fails_every_waiter_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let blob = random(3, 8 << 20);
    let digest = push_blob(&up.base_url(), "ci/rot", &blob, &[]);
    let relay = Relay::start(&up.addr());
    let px = proxy(dir.path(), &relay.addr(), &[]);
    relay.throttle(16 << 20);
    relay.corrupt_after(1 << 20);
    let url = px.url(&format!("/v2/ci/rot/blobs/{digest}"));
    let pulls = concurrent_pulls(&url, 4);
    assert_every_pull_failed(&pulls, "upstream flipped a byte");
    assert!(
        px.log_tail(50).contains("whose digest is"),
        "{}",
        px.log_tail(20)
    );
    assert!(staging_files(&px).is_empty());

    relay.heal();
    match pull_blob(&url) {
        Pull::Complete { digest: got, .. } => assert_eq!(got, digest),
        Pull::Failed(e) => panic!("pull after the upstream recovered: {e}"),
    }
}

fn get_manifest(r: &Registry, repo: &str, reference: &str) -> http::HttpResponse {
    request(
        "GET",
        &r.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[("Accept", http::ACCEPT_MANIFESTS)],
        None,
    )
}

fn pull_image(r: &Registry, repo: &str, tag: &str, image: &PushedImage) {
    let m = get_manifest(r, repo, tag);
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.body, image.manifest);
    for (digest, bytes) in &image.blobs {
        let b = request(
            "GET",
            &r.url(&format!("/v2/{repo}/blobs/{digest}")),
            &[],
            None,
        );
        assert_eq!(b.status, 200, "{}", b.text());
        assert_eq!(&b.body, bytes);
    }
}

#[test]
fn a_warm_cache_serves_while_upstream_is_down_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let image = push_image(
        &up.base_url(),
        "library/app",
        "v1",
        b"{\"os\":\"linux\"}",
        &[random(4, 300_000), random(5, 3 << 20)],
        &[],
    );
    let never_pulled = push_blob(&up.base_url(), "library/app", &random(6, 1000), &[]);
    let relay = Relay::start(&up.addr());
    let px = proxy(
        dir.path(),
        &relay.addr(),
        &[("REGISTRY_PROXY_TAGTTL", "0s")],
    );
    pull_image(&px, "library/app", "v1", &image);
    // HEAD of an uncached blob is answered from upstream without a fetch.
    let head = request(
        "HEAD",
        &px.url(&format!("/v2/library/app/blobs/{never_pulled}")),
        &[],
        None,
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("1000"));

    relay.go_down();
    let stale = get_manifest(&px, "library/app", "v1");
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(stale.body, image.manifest);
    assert!(
        stale
            .header("Warning")
            .is_some_and(|w| w.starts_with("110 ")),
        "{:?}",
        stale.headers
    );
    assert!(px.log_tail(20).contains("stale"), "{}", px.log_tail(20));
    pull_image(&px, "library/app", &image.manifest_digest, &image);
    let tags = request("GET", &px.url("/v2/library/app/tags/list"), &[], None);
    assert_eq!(tags.status, 200);
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));

    for path in [
        format!("/v2/library/app/blobs/{never_pulled}"),
        "/v2/library/app/manifests/v2".to_owned(),
    ] {
        let r = request("GET", &px.url(&path), &[], None);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        let body = r.json();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains("unreachable"), "{message}");
    }
    assert!(metrics(&px)["berth_proxy_stale_served_total"] >= 1);
}

#[test]
fn tags_are_trusted_for_their_ttl_then_revalidated_with_a_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let layer = random(7, 5000);
    let first = push_image(
        &up.base_url(),
        "team/svc",
        "stable",
        b"{\"v\":1}",
        std::slice::from_ref(&layer),
        &[],
    );
    let px = proxy(dir.path(), &up.addr(), &[("REGISTRY_PROXY_TAGTTL", "3s")]);
    let manifest_path = "/v2/team/svc/manifests/stable";
    let digest_of = |r: &http::HttpResponse| r.header("Docker-Content-Digest").map(str::to_owned);

    assert_eq!(
        digest_of(&get_manifest(&px, "team/svc", "stable")),
        Some(first.manifest_digest.clone())
    );
    assert_eq!(access_count(&up, "GET", manifest_path), 1);
    thread::sleep(Duration::from_millis(3200));
    // Expired, unchanged upstream: one HEAD, no new GET.
    assert_eq!(
        digest_of(&get_manifest(&px, "team/svc", "stable")),
        Some(first.manifest_digest.clone())
    );
    let revalidated = Instant::now();
    assert_eq!(access_count(&up, "HEAD", manifest_path), 1);
    assert_eq!(access_count(&up, "GET", manifest_path), 1);

    let second = push_image(
        &up.base_url(),
        "team/svc",
        "stable",
        b"{\"v\":2}",
        &[layer],
        &[],
    );
    assert_ne!(first.manifest_digest, second.manifest_digest);
    let within = digest_of(&get_manifest(&px, "team/svc", "stable"));
    // Only judged if this machine was quick enough to still be in the TTL.
    if revalidated.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            within,
            Some(first.manifest_digest.clone()),
            "still within the TTL"
        );
    }
    thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        digest_of(&get_manifest(&px, "team/svc", "stable")),
        Some(second.manifest_digest.clone())
    );
    assert_eq!(access_count(&up, "GET", manifest_path), 2);
    pull_image(&px, "team/svc", "stable", &second);
}

#[test]
fn expiry_never_evicts_a_pull_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let blob = random(8, 32 << 20);
    let digest = push_blob(&up.base_url(), "ci/slow", &blob, &[]);
    let px = proxy(
        dir.path(),
        &up.addr(),
        &[
            ("REGISTRY_PROXY_TTL", "2s"),
            ("REGISTRY_PROXY_EVICTIONINTERVAL", "1s"),
        ],
    );
    let path = format!("/v2/ci/slow/blobs/{digest}");
    assert!(matches!(pull_blob(&px.url(&path)), Pull::Complete { .. }));

    // A slow client: ~8 s for 32 MiB, far past the 2 s TTL.
    let url = px.url(&path);
    let slow = thread::spawn(move || {
        let agent = http::agent(Duration::from_secs(120));
        let response = agent.get(&url).call().expect("slow GET");
        let mut reader = response.into_reader();
        let mut body = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(256 * 1024);
            let n = reader
                .by_ref()
                .take(256 * 1024)
                .read_to_end(&mut chunk)
                .expect("slow read");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk);
            thread::sleep(Duration::from_millis(60));
        }
        sha256_digest(&body)
    });
    thread::sleep(Duration::from_secs(4));
    assert_eq!(
        metrics(&px)["berth_proxy_evicted_items_total"],
        0,
        "evicted while being pulled"
    );
    assert_eq!(slow.join().expect("slow client"), digest);

    // Once nobody pulls it, the TTL applies.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics(&px)["berth_proxy_evicted_items_total"] == 0 {
        assert!(
            Instant::now() < deadline,
            "never evicted: {}",
            px.log_tail(20)
        );
        thread::sleep(Duration::from_millis(300));
    }
    assert!(matches!(pull_blob(&px.url(&path)), Pull::Complete { .. }));
    assert_eq!(
        access_count(&up, "GET", &path),
        2,
        "fetched again after eviction"
    );
}

#[test]
fn pushes_are_refused_except_under_the_local_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = upstream(dir.path());
    let px = proxy(
        dir.path(),
        &up.addr(),
        &[("REGISTRY_PROXY_LOCALPREFIX", "local")],
    );
    for (method, path) in [
        ("POST", "/v2/library/app/blobs/uploads/"),
        ("PUT", "/v2/library/app/manifests/v1"),
        ("DELETE", "/v2/library/app/manifests/v1"),
    ] {
        let r = request(method, &px.url(path), &[], Some(b"{}"));
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
        assert!(r.text().contains("pull-through cache"), "{}", r.text());
    }
    let image = push_image(
        &px.base_url(),
        "local/tools",
        "v1",
        b"{}",
        &[random(9, 1234)],
        &[],
    );
    pull_image(&px, "local/tools", "v1", &image);
    let missing = get_manifest(&px, "local/tools", "nope");
    assert_eq!(missing.status, 404);
    assert_eq!(access_count(&up, "GET", "/v2/local/"), 0);
    assert!(!std::fs::read_to_string(up.log_path())
        .unwrap_or_default()
        .contains("/v2/local/"));
}

#[test]
fn upstream_bearer_token_flow_with_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = signer(
        dir.path(),
        "token",
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let cert = key.cert.clone();
    let push_token = mint(
        &key,
        &key.kid,
        serde_json::json!([{"type": "repository", "name": "private/app", "actions": ["pull", "push"]}]),
        "up-service",
        now() + 600,
    );
    let tokens = TokenServer::start(key, "up-service", Some(("mirror", "s3cret")));
    let mut command = berth(&[
        ("REGISTRY_AUTH", "token".into()),
        ("REGISTRY_AUTH_TOKEN_REALM", tokens.realm()),
        ("REGISTRY_AUTH_TOKEN_SERVICE", "up-service".into()),
        (
            "REGISTRY_AUTH_TOKEN_ISSUER",
            berth_tests::tokens::ISSUER.into(),
        ),
        (
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
            cert.display().to_string(),
        ),
    ]);
    command.ready_log_line = Some("berth listening".into());
    let up = Registry::start_with(command, &dir.path().join("upstream"));
    let bearer = format!("Bearer {push_token}");
    let image = push_image(
        &up.base_url(),
        "private/app",
        "v1",
        b"{}",
        &[random(10, 100_000)],
        &[("Authorization", bearer.as_str())],
    );

    let px = proxy(
        dir.path(),
        &up.addr(),
        &[
            ("REGISTRY_PROXY_USERNAME", "mirror"),
            ("REGISTRY_PROXY_PASSWORD", "s3cret"),
        ],
    );
    pull_image(&px, "private/app", "v1", &image);
    assert!(tokens.issued() >= 1);
    assert!(
        tokens.issued() <= 2,
        "tokens are cached per scope: {}",
        tokens.issued()
    );

    let anonymous = Registry::start_with(
        berth(&[("REGISTRY_PROXY_REMOTEURL", format!("http://{}", up.addr()))]),
        &dir.path().join("anonymous"),
    );
    let refused = get_manifest(&anonymous, "private/app", "v1");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("authentication"),
        "{}",
        refused.text()
    );
}

#[test]
fn upstream_basic_auth_and_the_reference_registry_as_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let htpasswd = dir.path().join("htpasswd");
    let line = std::process::Command::new(berth_binary())
        .args(["htpasswd", "-Bbn", "mirror", "pw"])
        .output()
        .expect("berth htpasswd");
    std::fs::write(&htpasswd, &line.stdout).expect("htpasswd");
    let mut command = berth(&[
        ("REGISTRY_AUTH", "htpasswd".into()),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "up".into()),
        (
            "REGISTRY_AUTH_HTPASSWD_PATH",
            htpasswd.display().to_string(),
        ),
    ]);
    command.ready_log_line = Some("berth listening".into());
    let up = Registry::start_with(command, &dir.path().join("upstream"));
    let basic = "Basic bWlycm9yOnB3"; // mirror:pw
    let image = push_image(
        &up.base_url(),
        "team/app",
        "v1",
        b"{}",
        &[random(11, 5000)],
        &[("Authorization", basic)],
    );
    let px = proxy(
        dir.path(),
        &up.addr(),
        &[
            ("REGISTRY_PROXY_USERNAME", "mirror"),
            ("REGISTRY_PROXY_PASSWORD", "pw"),
        ],
    );
    pull_image(&px, "team/app", "v1", &image);

    // Debian's docker-registry (CNCF Distribution 2.8) as the upstream.
    let reference = Registry::start_with(
        RegistryCommand {
            program: berth_tests::cmd::require_tool("docker-registry"),
            args: vec!["serve".into(), "/etc/docker/registry/config.yml".into()],
            env: vec![("REGISTRY_AUTH".into(), String::new())],
            is_berth: false,
            ready_log_line: None,
        },
        &dir.path().join("reference"),
    );
    let image = push_image(
        &reference.base_url(),
        "ref/app",
        "v1",
        b"{\"ref\":1}",
        &[random(12, 70_000)],
        &[],
    );
    let px2 = Registry::start_with(
        berth(&[("REGISTRY_PROXY_REMOTEURL", reference.base_url())]),
        &dir.path().join("proxy2"),
    );
    pull_image(&px2, "ref/app", "v1", &image);
    let tags = request("GET", &px2.url("/v2/ref/app/tags/list"), &[], None);
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
    // A ranged GET of a blob nobody pulled yet is served from the fetch.
    let extra = random(13, 2 << 20);
    let extra_digest = push_blob(&reference.base_url(), "ref/app", &extra, &[]);
    let agent = http::agent(Duration::from_secs(30));
    let ranged = try_request(
        &agent,
        "GET",
        &px2.url(&format!("/v2/ref/app/blobs/{extra_digest}")),
        &[("Range", "bytes=1000-1999")],
        None,
    )
    .expect("ranged GET");
    assert_eq!(ranged.status, 206, "{}", ranged.text());
    assert_eq!(ranged.body, extra[1000..2000]);
    let whole = request(
        "GET",
        &px2.url(&format!("/v2/ref/app/blobs/{extra_digest}")),
        &[],
        None,
    );
    assert_eq!(whole.body, extra);
}
