//! `berth-bench`: a load generator for any registry speaking the
//! Distribution API (berth, registry:2, or nginx serving the same files as
//! a ceiling), over HTTP or HTTPS, anonymous, with Basic credentials or
//! bearer tokens. A thread per connection, blocking sockets, a minimal
//! HTTP/1.1 keep-alive client; latencies in an HDR histogram. Also a tiny
//! token service for bearer-auth benchmarks and the report generator.
//!
//! ```text
//! berth-bench manifest-get --url http://127.0.0.1:5000 -c 64 -d 5
//! berth-bench blob-push --size 4K --mode post-put -c 8 --server-pid 1234
//! berth-bench manifest-get --url https://127.0.0.1:5000 --cacert ca.crt --user u --password p
//! berth-bench fleet -c 32 --pushers 2 --layers 5 --layer-size 1M -d 10
//! berth-bench report results.jsonl --out report.md
//! ```

mod auth;
mod fixtures;
mod http;
mod procstat;
mod report;
mod runner;
mod scenarios;
mod svg;
mod token_server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use http::{Conn, Options, Target};
use runner::{Outcome, Plan};
use scenarios::{
    BlobGet, BlobHead, BlobPush, Fleet, ManifestGet, PushMode, PushPayload, Scenario, TagsList,
};

#[derive(Parser)]
#[command(
    name = "berth-bench",
    version,
    about = "Load generator for container registries (Distribution API over HTTP/1.1)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// GET a manifest by tag (keep-alive, N connections).
    ManifestGet(Common),
    /// HEAD a blob of --size.
    BlobHead {
        #[command(flatten)]
        common: Common,
        /// Blob size (K/M/G suffixes are powers of 1024).
        #[arg(long, default_value = "4K", value_parser = parse_size)]
        size: u64,
    },
    /// GET a whole blob of --size on N streams.
    BlobGet {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "16M", value_parser = parse_size)]
        size: u64,
    },
    /// Push a new blob of --size per operation.
    BlobPush {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "4K", value_parser = parse_size)]
        size: u64,
        #[arg(long, value_enum, default_value = "post-put")]
        mode: PushMode,
    },
    /// Push a new blob per operation as POST, PATCH per chunk, empty PUT.
    PushChunked {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "8M", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        chunk_size: u64,
    },
    /// GET /v2/<repo>/tags/list with --tags tags.
    TagsList {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        tags: usize,
    },
    /// A CI fleet: -c clients pull one image (manifest by tag, then every
    /// blob, whole) while --pushers clients push new tags (a new config
    /// blob and a manifest each); pulls and pushes are reported apart.
    Fleet {
        #[command(flatten)]
        common: Common,
        /// Clients pushing new tags (besides the -c pulling).
        #[arg(long, default_value_t = 2)]
        pushers: usize,
        /// Layers of the pulled image.
        #[arg(long, default_value_t = 5)]
        layers: usize,
        /// Size of each layer.
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        layer_size: u64,
    },
    /// One core's SHA-256 throughput (the yardstick for big pushes).
    Sha256Speed {
        /// Bytes hashed per pass (passes repeat for --duration seconds).
        #[arg(long, default_value = "64M", value_parser = parse_size)]
        size: u64,
        #[arg(short = 'd', long, default_value_t = 2.0)]
        duration: f64,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        label: String,
        #[arg(long, default_value = "sha256-1core")]
        case: String,
    },
    /// How fast the disk under --dir takes a big file durably: --size bytes
    /// written with direct I/O in 1 MiB writes (buffered where the file
    /// system refuses direct I/O), then fdatasync (the yardstick, beside
    /// SHA-256, for big pushes: a registry cannot store faster).
    DiskSpeed {
        /// Directory to write the test file in (removed after each pass);
        /// use the registry's data directory's file system.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Bytes written per pass (passes repeat for --duration seconds).
        #[arg(long, default_value = "512M", value_parser = parse_size)]
        size: u64,
        #[arg(short = 'd', long, default_value_t = 2.0)]
        duration: f64,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "disk")]
        label: String,
        #[arg(long, default_value = "disk-direct")]
        case: String,
    },
    /// Summarise --json lines of several runs (medians per case and target,
    /// ratios) as Markdown.
    Report(report::ReportArgs),
    /// A minimal token service for bearer-auth benchmarks: grants every
    /// scope asked for as a JWT signed with --key (ES256 or RS256).
    TokenServer(token_server::TokenServerArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The registry, http://host:port or https://host:port.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Basic credentials: sent on every request (htpasswd), or to the token
    /// realm when the registry answers with a Bearer challenge.
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// A bearer token, sent as is on every request (no challenge flow).
    #[arg(long)]
    token: Option<String>,
    /// PEM file of CA certificates to trust for https:// (default: the
    /// system bundle).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Skip TLS certificate verification.
    #[arg(long)]
    insecure: bool,
    /// Repository the fixtures live in.
    #[arg(long, default_value = "bench/app")]
    repo: String,
    /// Concurrent connections (a thread each).
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of unmeasured load first (duration mode only).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Run exactly this many operations instead of a duration.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Check every response's content (digests, lengths), not just its status.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Name of the target in output (e.g. berth, reference, nginx).
    #[arg(long, default_value = "target")]
    label: String,
    /// Name of this case in output (default: the scenario name).
    #[arg(long)]
    case: Option<String>,
    /// The server's PID: report its CPU seconds and peak RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Reset the server's peak-RSS mark before measuring (needs permission).
    #[arg(long)]
    reset_peak_rss: bool,
    /// The target is a static file server rooted here (nginx): write the
    /// fixtures as files instead of pushing them. Read scenarios only.
    #[arg(long)]
    static_root: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("bad size unit in {s:?} (use K, M or G)")),
    };
    Ok(n * mult)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, scenario_name, size, extra): (Common, &str, Option<u64>, serde_json::Value) =
        match &cli.command {
            Command::Report(args) => return report::main(args),
            Command::TokenServer(args) => return token_server::main(args),
            Command::Sha256Speed {
                size,
                duration,
                json,
                label,
                case,
            } => return sha256_speed(*size, *duration, *json, label, case),
            Command::DiskSpeed {
                dir,
                size,
                duration,
                json,
                label,
                case,
            } => return disk_speed(dir, *size, *duration, *json, label, case),
            Command::Fleet {
                common,
                pushers,
                layers,
                layer_size,
            } => (
                common.clone(),
                "fleet",
                Some(*layer_size),
                serde_json::json!({"pushers": pushers, "layers": layers, "pullers": common.connections}),
            ),
            Command::ManifestGet(c) => (c.clone(), "manifest-get", None, serde_json::json!({})),
            Command::BlobHead { common, size } => (
                common.clone(),
                "blob-head",
                Some(*size),
                serde_json::json!({}),
            ),
            Command::BlobGet { common, size } => (
                common.clone(),
                "blob-get",
                Some(*size),
                serde_json::json!({}),
            ),
            Command::BlobPush { common, size, mode } => (
                common.clone(),
                "blob-push",
                Some(*size),
                serde_json::json!({"mode": format!("{mode:?}")}),
            ),
            Command::PushChunked {
                common,
                size,
                chunk_size,
            } => (
                common.clone(),
                "push-chunked",
                Some(*size),
                serde_json::json!({"chunk_size": chunk_size}),
            ),
            Command::TagsList { common, tags } => (
                common.clone(),
                "tags-list",
                None,
                serde_json::json!({"tags": tags}),
            ),
        };
    let options = Options {
        user: common.user.clone(),
        password: common.password.clone(),
        token: common.token.clone(),
        cacert: common.cacert.clone(),
        insecure: common.insecure,
    };
    let target = match Target::parse(&common.url, &options) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if common.connections == 0 {
        eprintln!("berth-bench: --connections must be at least 1");
        return ExitCode::from(2);
    }
    let scenario = match setup(&cli.command, &common, &target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "berth-bench: setting up {scenario_name} on {}: {e}",
                common.url
            );
            return ExitCode::from(2);
        }
    };
    let pushers = match &cli.command {
        Command::Fleet { pushers, .. } => *pushers,
        _ => 0,
    };
    let plan = Plan {
        connections: common.connections + pushers,
        duration: Duration::from_secs_f64(common.duration.max(0.0)),
        warmup: Duration::from_secs_f64(common.warmup.max(0.0)),
        count: common.count,
        verify: common.verify,
        server_pid: common.server_pid,
        reset_peak_rss: common.reset_peak_rss,
    };
    let outcomes = runner::run(&target, &plan, scenario.clone());
    let fallbacks = scenario_fallbacks(&scenario);
    let base_case = common
        .case
        .clone()
        .unwrap_or_else(|| scenario_name.to_string());
    let several = outcomes.len() > 1;
    let mut failed = false;
    for (i, outcome) in outcomes.iter().enumerate() {
        // Scenarios with several kinds of operation report each as its own
        // case, `<case>:<class>`.
        let case = if several {
            format!("{base_case}:{}", outcome.class)
        } else {
            base_case.clone()
        };
        let mut record = serde_json::json!({
            "case": case,
            "label": common.label,
            "scenario": scenario_name,
            "url": common.url,
            "connections": common.connections,
            "size": size,
            "verify": common.verify,
            "monolithic_fallbacks": fallbacks,
            "tls": target.tls.is_some(),
            "token_fetches": target.auth.fetches.load(std::sync::atomic::Ordering::Relaxed),
        });
        merge(&mut record, extra.clone());
        merge(
            &mut record,
            serde_json::to_value(outcome).expect("serialize"),
        );
        if common.json {
            println!("{record}");
        } else {
            print_table(&case, &common.label, outcome, size, i == 0);
        }
        for s in &outcome.error_samples {
            eprintln!("berth-bench: {case} on {}: failed: {s}", common.label);
        }
        failed |= outcome.errors > 0 || outcome.ops == 0;
    }
    if failed {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Hashes `size` bytes repeatedly for `duration` seconds on this thread.
fn sha256_speed(size: u64, duration: f64, json: bool, label: &str, case: &str) -> ExitCode {
    use sha2::Digest as _;
    let data = berth_bench::random_bytes(size.max(1) as usize, 7);
    let start = std::time::Instant::now();
    let (mut bytes, mut passes) = (0u64, 0u64);
    while passes == 0 || start.elapsed().as_secs_f64() < duration {
        let d = sha2::Sha256::digest(&data);
        std::hint::black_box(d);
        bytes += data.len() as u64;
        passes += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb_per_s = bytes as f64 / 1e6 / elapsed;
    if json {
        println!(
            "{}",
            serde_json::json!({"case": case, "label": label, "scenario": "sha256-speed", "ops": passes,
                "ops_per_s": passes as f64 / elapsed, "mb_per_s": mb_per_s, "bytes": bytes, "elapsed_s": elapsed, "errors": 0})
        );
    } else {
        println!(
            "SHA-256 on one core: {mb_per_s:.1} MB/s ({passes} passes of {} in {elapsed:.2} s)",
            human_size(size)
        );
    }
    ExitCode::SUCCESS
}

/// Writes `size` bytes durably into a fresh file under `dir`, repeatedly
/// for `duration` seconds; reports MB/s (see `Command::DiskSpeed`).
fn disk_speed(
    dir: &std::path::Path,
    size: u64,
    duration: f64,
    json: bool,
    label: &str,
    case: &str,
) -> ExitCode {
    let start = std::time::Instant::now();
    let (mut bytes, mut passes, mut direct) = (0u64, 0u64, true);
    while passes == 0 || start.elapsed().as_secs_f64() < duration {
        match berth_bench::disk::write_pass(dir, size) {
            Ok(pass) => {
                direct &= pass.direct;
                bytes += size;
                passes += 1;
            }
            Err(e) => {
                eprintln!("berth-bench: disk-speed in {}: {e}", dir.display());
                return ExitCode::from(1);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb_per_s = bytes as f64 / 1e6 / elapsed;
    let how = if direct { "direct I/O" } else { "buffered" };
    if json {
        println!(
            "{}",
            serde_json::json!({"case": case, "label": label, "scenario": "disk-speed", "ops": passes,
                "ops_per_s": passes as f64 / elapsed, "mb_per_s": mb_per_s, "bytes": bytes,
                "elapsed_s": elapsed, "direct": direct, "errors": 0})
        );
    } else {
        println!(
            "disk under {}: {mb_per_s:.1} MB/s durable ({how}; {passes} passes of {} in {elapsed:.2} s)",
            dir.display(),
            human_size(size)
        );
    }
    ExitCode::SUCCESS
}

/// Monolithic POSTs answered with a session (only blob-push).
fn scenario_fallbacks(_s: &Arc<dyn Scenario>) -> u64 {
    FALLBACKS
        .get()
        .map_or(0, |f| f.load(std::sync::atomic::Ordering::Relaxed))
}

static FALLBACKS: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU64>> =
    std::sync::OnceLock::new();

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// Prepares the fixtures and builds the scenario.
fn setup(command: &Command, common: &Common, target: &Target) -> Result<Arc<dyn Scenario>, String> {
    let repo = common.repo.as_str();
    let mut conn = Conn::new(target);
    let is_push = matches!(
        command,
        Command::BlobPush { .. } | Command::PushChunked { .. } | Command::Fleet { .. }
    );
    if let Some(root) = &common.static_root {
        if is_push {
            return Err("push scenarios need a registry, not a static file server".into());
        }
        let tags = if let Command::TagsList { tags, .. } = command {
            *tags
        } else {
            0
        };
        let blob = match command {
            Command::BlobHead { size, .. } | Command::BlobGet { size, .. } => {
                Some(fixtures::sized_blob(*size as usize))
            }
            _ => None,
        };
        let img = fixtures::write_static(
            root,
            repo,
            tags,
            blob.as_ref().map(|(d, g)| (&d[..], g.as_str())),
        )?;
        return Ok(build(command, repo, img, blob));
    }
    fixtures::check_base(&mut conn)?;
    if let Command::Fleet {
        pushers,
        layers,
        layer_size,
        ..
    } = command
    {
        let img = fixtures::fleet_image(*layers, *layer_size as usize);
        for b in &img.blobs {
            fixtures::ensure_blob(&mut conn, repo, b, &fixtures::sha256_digest(b))?;
        }
        fixtures::put_manifest(&mut conn, repo, "fleet", &img.manifest)?;
        let fleet = Fleet {
            repo: repo.to_string(),
            pushers: *pushers,
            manifest_path: format!("/v2/{repo}/manifests/fleet"),
            manifest_digest: img.digest.clone(),
            manifest_len: img.manifest.len(),
            blobs: img
                .blobs
                .iter()
                .map(|b| {
                    let d = fixtures::sha256_digest(b);
                    (format!("/v2/{repo}/blobs/{d}"), d, b.len() as u64)
                })
                .collect(),
            layers: img.blobs[1..]
                .iter()
                .map(|b| (fixtures::sha256_digest(b), b.len()))
                .collect(),
            layer_bytes: img.blobs[1..].to_vec(),
            nonce: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        // One pull and one push, verified, before any load.
        fleet
            .op(&mut conn, *pushers, 0, true)
            .map_err(|e| format!("the first pull failed: {e}"))?;
        if *pushers > 0 {
            fleet
                .op(&mut conn, 0, u64::MAX >> 1, true)
                .map_err(|e| format!("the first push failed: {e}"))?;
        }
        return Ok(Arc::new(fleet));
    }
    if is_push {
        return Ok(build_push(command, repo));
    }
    let tags = if let Command::TagsList { tags, .. } = command {
        *tags
    } else {
        0
    };
    let img = fixtures::push_image(&mut conn, repo, tags)?;
    let blob = match command {
        Command::BlobHead { size, .. } | Command::BlobGet { size, .. } => {
            let (data, digest) = fixtures::sized_blob(*size as usize);
            fixtures::ensure_blob(&mut conn, repo, &data, &digest)?;
            Some((data, digest))
        }
        _ => None,
    };
    // One request of the scenario itself, verified, so a wrong answer is
    // reported before any load.
    let scenario = build(command, repo, img, blob);
    scenario
        .op(&mut conn, 0, 0, true)
        .map_err(|e| format!("the first request failed: {e}"))?;
    Ok(scenario)
}

fn build(
    command: &Command,
    repo: &str,
    img: fixtures::Image,
    blob: Option<(Vec<u8>, String)>,
) -> Arc<dyn Scenario> {
    let blob_meta = blob.map(|(d, g)| (d.len(), g));
    match command {
        Command::ManifestGet(_) => Arc::new(ManifestGet {
            path: format!("/v2/{repo}/manifests/{}", fixtures::TAG),
            digest: img.digest,
            len: img.manifest.len(),
        }),
        Command::BlobHead { .. } => {
            let (len, digest) = blob_meta.expect("blob");
            Arc::new(BlobHead {
                path: format!("/v2/{repo}/blobs/{digest}"),
                len,
            })
        }
        Command::BlobGet { .. } => {
            let (len, digest) = blob_meta.expect("blob");
            Arc::new(BlobGet {
                path: format!("/v2/{repo}/blobs/{digest}"),
                digest,
                len: len as u64,
            })
        }
        Command::TagsList { tags, .. } => Arc::new(TagsList {
            path: format!("/v2/{repo}/tags/list"),
            min_tags: *tags,
        }),
        _ => build_push(command, repo),
    }
}

fn build_push(command: &Command, repo: &str) -> Arc<dyn Scenario> {
    let (size, mode, chunk) = match command {
        Command::BlobPush { size, mode, .. } => (*size, *mode, None),
        Command::PushChunked {
            size, chunk_size, ..
        } => (
            *size,
            PushMode::PostPut,
            Some((*chunk_size).max(1) as usize),
        ),
        _ => unreachable!("not a push scenario"),
    };
    let fallbacks = FALLBACKS
        .get_or_init(|| Arc::new(std::sync::atomic::AtomicU64::new(0)))
        .clone();
    Arc::new(BlobPush {
        repo: repo.to_string(),
        payload: PushPayload::new(size as usize),
        mode,
        fallbacks,
        chunk,
    })
}

fn print_table(case: &str, label: &str, o: &Outcome, size: Option<u64>, header: bool) {
    let size = size.map_or(String::from("-"), human_size);
    if header {
        println!(
            "{:<22} {:<10} {:>6} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9} {:>9} {:>10}",
            "case",
            "target",
            "size",
            "ops",
            "ops/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "cli cpu s",
            "srv cpu s",
            "srv peak"
        );
    }
    let (cpu, rss) = match &o.server {
        Some(s) => (
            format!("{:.2}", s.cpu.cpu_s),
            human_size(s.peak_rss_kib * 1024),
        ),
        None => ("-".into(), "-".into()),
    };
    println!(
        "{:<22} {:<10} {:>6} {:>9} {:>11.1} {:>9.1} {:>9.3} {:>9.3} {:>9.3} {:>6} {:>9.2} {:>9} {:>10}",
        case,
        label,
        size,
        o.ops,
        o.ops_per_s,
        o.mb_per_s,
        o.latency_us.p50 / 1000.0,
        o.latency_us.p99 / 1000.0,
        o.latency_us.p999 / 1000.0,
        o.errors,
        o.client.cpu_s,
        cpu,
        rss
    );
    let per_gb = |r: &runner::Resources| {
        r.cpu_s_per_gb
            .map_or(String::new(), |s| format!(", {s:.2} s CPU/GB"))
    };
    println!(
        "client: {:.1} µs CPU/op{}, {:.2} cores busy",
        o.client.cpu_us_per_op,
        per_gb(&o.client),
        o.client.cpu_cores
    );
    if let Some(s) = &o.server {
        println!(
            "server: {:.1} µs CPU/op{}, {:.2} cores busy, RSS now {} (peak {})",
            s.cpu.cpu_us_per_op,
            per_gb(&s.cpu),
            s.cpu.cpu_cores,
            human_size(s.rss_kib * 1024),
            if s.peak_reset {
                "during the measurement"
            } else {
                "since start"
            }
        );
    }
}

pub fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}G", n >> 30),
        n if n >= 1 << 20 => format!("{:.0}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0}K", n as f64 / 1024.0),
        n => format!("{n}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("4K"), Ok(4096));
        assert_eq!(super::parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(super::parse_size("123"), Ok(123));
        assert!(super::parse_size("3X").is_err());
    }
}
