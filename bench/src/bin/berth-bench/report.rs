//! `berth-bench report`: medians over rounds of `--json` records, per case
//! and target, with ratios subject/baseline and subject/ceiling and the
//! project's performance targets checked, as Markdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::svg::{bar_chart, Bar};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Files of JSON lines from `berth-bench ... --json`.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Also write the Markdown here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The label measured.
    #[arg(long, default_value = "berth")]
    subject: String,
    /// The label compared against.
    #[arg(long, default_value = "reference")]
    baseline: String,
    /// The label of the ceiling (a static file server).
    #[arg(long, default_value = "nginx")]
    ceiling: String,
    /// The subject's peak RSS over the whole run (KiB), if measured apart.
    #[arg(long)]
    subject_peak_rss_kib: Option<u64>,
    /// Free text put under the title (machine, settings).
    #[arg(long)]
    note: Option<String>,
    /// Write one SVG bar chart per case into this directory and embed
    /// them in the Markdown.
    #[arg(long)]
    charts: Option<PathBuf>,
}

struct Group {
    runs: Vec<Value>,
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

impl Group {
    fn med(&self, path: &[&str]) -> Option<f64> {
        median(self.runs.iter().filter_map(|r| num(r, path)).collect())
    }
    fn range(&self, path: &[&str]) -> (f64, f64) {
        let xs: Vec<f64> = self.runs.iter().filter_map(|r| num(r, path)).collect();
        (
            xs.iter().cloned().fold(f64::INFINITY, f64::min),
            xs.iter().cloned().fold(0.0, f64::max),
        )
    }
    fn max(&self, path: &[&str]) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| num(r, path))
            .reduce(f64::max)
    }
    fn sum(&self, path: &[&str]) -> f64 {
        self.runs.iter().filter_map(|r| num(r, path)).sum()
    }
}

/// The project's targets (issue #7): (case, what, goal).
enum Goal {
    /// subject/baseline ops/s at least.
    VsBaseline(f64),
    /// subject/ceiling ops/s at least.
    VsCeiling(f64),
    /// subject p99 at most, milliseconds.
    P99Ms(f64),
    /// subject ops/s at least this share of the subject's in another case.
    VsOwnCase(&'static str, f64),
    /// subject MB/s at least this share of one core's SHA-256 MB/s
    /// (the `sha256-1core` case of the same run).
    VsSha256(f64),
}

const SHA256_CASE: &str = "sha256-1core";

/// The disk yardstick's case (`disk-speed`): a push cannot store faster.
const DISK_CASE: &str = "disk-direct";

const GOALS: &[(&str, Goal)] = &[
    ("manifest-get-64c", Goal::VsBaseline(30.0)),
    ("manifest-get-64c", Goal::VsCeiling(0.8)),
    ("manifest-get-64c", Goal::P99Ms(2.0)),
    ("blob-head-64c", Goal::VsBaseline(30.0)),
    ("blob-push-4k-8c", Goal::VsBaseline(20.0)),
    ("push-big-1s", Goal::VsSha256(0.7)),
    ("blob-get-64m-8s", Goal::VsBaseline(2.5)),
    ("blob-get-64m-8s", Goal::VsCeiling(0.9)),
    (
        "manifest-get-htpasswd-64c",
        Goal::VsOwnCase("manifest-get-64c", 0.8),
    ),
];

/// The chart's measure for a case: MB/s for bulk transfers (1 MiB or
/// more per operation), else operations per second (fleet: pulls and
/// pushes per second whatever the layer size).
fn chart_metric(g: &Group) -> (&'static str, &'static str) {
    let bulk = g.runs.iter().any(|r| {
        let scenario = r.get("scenario").and_then(Value::as_str);
        (num(r, &["size"]).is_some_and(|s| s >= (1 << 20) as f64) && scenario != Some("fleet"))
            || scenario == Some("sha256-speed")
            || scenario == Some("disk-speed")
    });
    if bulk {
        ("mb_per_s", "MB/s")
    } else {
        ("ops_per_s", "ops/s")
    }
}

/// A case name as a file name.
fn file_stem(case: &str) -> String {
    case.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn f(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// A number with its unit, or "-" when it is missing.
fn fu(x: Option<f64>, digits: usize, unit: &str) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}{unit}"))
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

pub fn render(args: &ReportArgs, records: Vec<Value>) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut labels: Vec<String> = Vec::new();
    for r in records {
        let case = r
            .get("case")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let label = r
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        if !order.contains(&case) {
            order.push(case.clone());
        }
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        groups
            .entry((case, label))
            .or_insert(Group { runs: Vec::new() })
            .runs
            .push(r);
    }
    // Subject first, then baseline, ceiling, others.
    labels.sort_by_key(|l| {
        [&args.subject, &args.baseline, &args.ceiling]
            .iter()
            .position(|x| *x == l)
            .unwrap_or(9)
    });
    let mut md = String::new();
    md.push_str("# berth benchmark report\n\n");
    if let Some(n) = &args.note {
        md.push_str(n);
        md.push_str("\n\n");
    }
    let summary_at = md.len();
    md.push_str("Medians over rounds (min–max of ops/s shown for spread). MB/s is payload 10^6 bytes per second. ");
    md.push_str("Server CPU and peak RSS come from /proc of the server's process tree during the measurement; client CPU is the load generator's own (`CLOCK_PROCESS_CPUTIME_ID`) over the same window. CPU s/GB is per 10^9 payload bytes moved.\n\n");
    md.push_str("## Results\n\n| case | target | runs | ops/s | ops/s min–max | MB/s | p50 ms | p99 ms | p99.9 ms | srv CPU µs/op | client CPU µs/op | CPU s/GB srv / client | srv peak RSS | errors |\n");
    md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for case in &order {
        for label in &labels {
            let Some(g) = groups.get(&(case.clone(), label.clone())) else {
                continue;
            };
            let (lo, hi) = g.range(&["ops_per_s"]);
            let per_gb = match (
                g.med(&["server", "cpu_s_per_gb"]),
                g.med(&["client", "cpu_s_per_gb"]),
            ) {
                (None, None) => "-".to_string(),
                (srv, client) => format!("{} / {}", f(srv, 2), f(client, 2)),
            };
            md.push_str(&format!(
                "| {case} | {label} | {} | {} | {lo:.0}–{hi:.0} | {} | {} | {} | {} | {} | {} | {per_gb} | {} | {} |\n",
                g.runs.len(),
                f(g.med(&["ops_per_s"]), 1),
                f(g.med(&["mb_per_s"]), 1),
                f(g.med(&["latency_us", "p50"]).map(|x| x / 1000.0), 3),
                f(g.med(&["latency_us", "p99"]).map(|x| x / 1000.0), 3),
                f(g.med(&["latency_us", "p999"]).map(|x| x / 1000.0), 3),
                f(g.med(&["server", "cpu_us_per_op"]), 1),
                f(g.med(&["client", "cpu_us_per_op"]), 1),
                g.max(&["server", "peak_rss_kib"]).map_or("-".into(), mib),
                g.sum(&["errors"]) as u64,
            ));
        }
    }
    let ratio = |case: &str, other: &str| -> Option<f64> {
        let s = groups
            .get(&(case.to_string(), args.subject.clone()))?
            .med(&["ops_per_s"])?;
        let o = groups
            .get(&(case.to_string(), other.to_string()))?
            .med(&["ops_per_s"])?;
        (o > 0.0).then(|| s / o)
    };
    md.push_str(&format!(
        "\n## Ratios (median ops/s)\n\n| case | {s} / {b} | {s} / {c} |\n|---|--:|--:|\n",
        s = args.subject,
        b = args.baseline,
        c = args.ceiling
    ));
    for case in &order {
        let times = ratio(case, &args.baseline).map_or("-".into(), |r| format!("{r:.2}×"));
        let percent =
            ratio(case, &args.ceiling).map_or("-".into(), |r| format!("{:.0}%", r * 100.0));
        md.push_str(&format!("| {case} | {times} | {percent} |\n"));
    }
    let mut targets_md = String::new();
    let mut missed: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    targets_md.push_str(
        "\n## Targets (issue #7)\n\n| case | goal | measured | met |\n|---|---|--:|:-:|\n",
    );
    let subject_med = |case: &str, path: &[&str]| {
        groups
            .get(&(case.to_string(), args.subject.clone()))
            .and_then(|g| g.med(path))
    };
    for (case, goal) in GOALS {
        if !order.iter().any(|c| c == case) {
            continue;
        }
        let (goal_text, measured, met) = match goal {
            Goal::VsBaseline(x) => {
                let r = ratio(case, &args.baseline);
                (
                    format!("≥ {x}× {}", args.baseline),
                    fu(r, 2, "×"),
                    r.map(|r| r >= *x),
                )
            }
            Goal::VsCeiling(x) => {
                let r = ratio(case, &args.ceiling);
                (
                    format!("≥ {:.0}% of {}", x * 100.0, args.ceiling),
                    fu(r.map(|r| r * 100.0), 0, "%"),
                    r.map(|r| r >= *x),
                )
            }
            Goal::P99Ms(x) => {
                let p = groups
                    .get(&(case.to_string(), args.subject.clone()))
                    .and_then(|g| g.med(&["latency_us", "p99"]))
                    .map(|p| p / 1000.0);
                (format!("p99 ≤ {x} ms"), fu(p, 3, " ms"), p.map(|p| p <= *x))
            }
            Goal::VsOwnCase(other, x) => {
                let r = match (
                    subject_med(case, &["ops_per_s"]),
                    subject_med(other, &["ops_per_s"]),
                ) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                (
                    format!("≥ {:.0}% of {other}", x * 100.0),
                    fu(r.map(|r| r * 100.0), 0, "%"),
                    r.map(|r| r >= *x),
                )
            }
            Goal::VsSha256(x) => {
                let hash = groups
                    .iter()
                    .filter(|((c, _), _)| c == SHA256_CASE)
                    .find_map(|(_, g)| g.med(&["mb_per_s"]));
                let r = match (subject_med(case, &["mb_per_s"]), hash) {
                    (Some(a), Some(h)) if h > 0.0 => Some(a / h),
                    _ => None,
                };
                // Where the disk is the slower of the two, say how much of
                // it the push used: the goal may be above what it can store.
                let disk = groups
                    .iter()
                    .filter(|((c, _), _)| c == DISK_CASE)
                    .find_map(|(_, g)| g.med(&["mb_per_s"]));
                let mut measured = fu(r.map(|r| r * 100.0), 0, "%");
                if let (Some(d), Some(push), Some(h)) =
                    (disk, subject_med(case, &["mb_per_s"]), hash)
                {
                    if d > 0.0 && d < h * x {
                        measured.push_str(&format!(
                            " ({:.0}% of the disk's {d:.0} MB/s, which is below the goal)",
                            push / d * 100.0
                        ));
                    }
                }
                (
                    format!(
                        "≥ {:.0}% of one core's SHA-256 ({} MB/s)",
                        x * 100.0,
                        f(hash, 0)
                    ),
                    measured,
                    r.map(|r| r >= *x),
                )
            }
        };
        match met {
            Some(false) => missed.push(format!("{case}: {goal_text} (measured {measured})")),
            None => unknown.push(format!("{case}: {goal_text}")),
            Some(true) => {}
        }
        targets_md.push_str(&format!(
            "| {case} | {goal_text} | {measured} | {} |\n",
            met.map_or("?", |m| if m { "yes" } else { "**no**" })
        ));
    }
    let per_run_peak = groups
        .iter()
        .filter(|((_, l), _)| *l == args.subject)
        .filter_map(|(_, g)| g.max(&["server", "peak_rss_kib"]))
        .reduce(f64::max);
    let peak = args.subject_peak_rss_kib.map(|k| k as f64).or(per_run_peak);
    if let Some(p) = peak {
        if p > 64.0 * 1024.0 {
            missed.push(format!(
                "all: {} peak RSS ≤ 64 MiB (measured {})",
                args.subject,
                mib(p)
            ));
        }
        targets_md.push_str(&format!(
            "| all | {} peak RSS ≤ 64 MiB | {} | {} |\n",
            args.subject,
            mib(p),
            if p <= 64.0 * 1024.0 { "yes" } else { "**no**" }
        ));
    }
    let mut summary = String::from("## Summary\n\n");
    if missed.is_empty() {
        summary.push_str("Every issue-#7 target measured in this run is met.\n");
    } else {
        summary.push_str(&format!(
            "**Issue-#7 targets missed in this run ({}):**\n\n",
            missed.len()
        ));
        for m in &missed {
            summary.push_str(&format!("- {m}\n"));
        }
    }
    if !unknown.is_empty() {
        summary.push_str(&format!(
            "\nNot measured (case missing or without data): {}.\n",
            unknown.join("; ")
        ));
    }
    summary.push_str(
        "\nTo see where the time goes in a case, run it by hand against a server you started and profile the server meanwhile: \
`perf record -g -p $(pidof berth) -- sleep 10 & berth-bench manifest-get --url http://127.0.0.1:5000 -c 64 -d 10; perf report --no-children` \
(release builds carry debug info; `perf top -p $(pidof berth)` for a live view).\n"
    );
    summary.push('\n');
    md.insert_str(summary_at, &summary);
    md.push_str(&targets_md);
    if let Some(dir) = &args.charts {
        md.push_str("\n## Charts\n\n");
        let link_base = relative_dir(dir, args.out.as_deref());
        for case in &order {
            let present: Vec<&String> = labels
                .iter()
                .filter(|l| groups.contains_key(&(case.clone(), (*l).clone())))
                .collect();
            let Some(first) = present.first() else {
                continue;
            };
            let (path, unit) = chart_metric(&groups[&(case.clone(), (*first).clone())]);
            let bars: Vec<Bar> = present
                .iter()
                .map(|l| {
                    let g = &groups[&(case.clone(), (*l).clone())];
                    let xs: Vec<f64> = g.runs.iter().filter_map(|r| num(r, &[path])).collect();
                    Bar {
                        label: (*l).clone(),
                        value: g.med(&[path]),
                        min: xs.iter().cloned().reduce(f64::min),
                        max: xs.iter().cloned().reduce(f64::max),
                    }
                })
                .collect();
            let name = format!("{}.svg", file_stem(case));
            let svg = bar_chart(&format!("{case} ({unit})"), unit, &bars);
            if let Err(e) =
                std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(&name), svg))
            {
                eprintln!(
                    "berth-bench report: writing {}: {e}",
                    dir.join(&name).display()
                );
                continue;
            }
            md.push_str(&format!("![{case}]({link_base}{name})\n\n"));
        }
    }
    let failures: Vec<String> = groups
        .iter()
        .flat_map(|((case, label), g)| {
            g.runs.iter().flat_map(move |r| {
                r.get("error_samples")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(move |s| format!("- {case} on {label}: `{}`", s.replace('\n', " ⏎ ")))
            })
        })
        .take(10)
        .collect();
    if !failures.is_empty() {
        md.push_str("\n## Failures (first few)\n\n");
        md.push_str(&failures.join("\n"));
        md.push('\n');
    }
    md
}

/// How the Markdown at `out` links to files in `dir`: a relative prefix
/// when `dir` is at or under `out`'s directory, else `dir` as given.
fn relative_dir(dir: &std::path::Path, out: Option<&std::path::Path>) -> String {
    let base = out
        .and_then(|o| o.parent())
        .unwrap_or(std::path::Path::new("."));
    let rel = match dir.strip_prefix(base) {
        Ok(r) => r.to_path_buf(),
        Err(_) => dir.to_path_buf(),
    };
    let s = rel.to_string_lossy().into_owned();
    if s.is_empty() {
        String::new()
    } else {
        format!("{}/", s.trim_end_matches('/'))
    }
}

pub fn main(args: &ReportArgs) -> ExitCode {
    let mut records = Vec::new();
    for path in &args.inputs {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("berth-bench report: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => records.push(v),
                Err(e) => eprintln!(
                    "berth-bench report: {}: skipping a line: {e}",
                    path.display()
                ),
            }
        }
    }
    let md = render(args, records);
    print!("{md}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(out, &md) {
            eprintln!("berth-bench report: {}: {e}", out.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Berth against the reference and nginx, no files, no extras.
    fn args() -> ReportArgs {
        ReportArgs {
            inputs: vec![],
            out: None,
            subject: "berth".into(),
            baseline: "reference".into(),
            ceiling: "nginx".into(),
            subject_peak_rss_kib: None,
            note: None,
            charts: None,
        }
    }

    #[test]
    fn medians_ratios_and_goals() {
        let rec = |label: &str, ops: f64, p99: f64| serde_json::json!({"case": "manifest-get-64c", "label": label, "ops_per_s": ops, "mb_per_s": 1.0, "errors": 0, "latency_us": {"p50": 100.0, "p99": p99, "p999": 3000.0}});
        let records = vec![
            rec("berth", 100.0, 1000.0),
            rec("berth", 300.0, 1500.0),
            rec("berth", 200.0, 900.0),
            rec("reference", 5.0, 1.0),
            rec("nginx", 250.0, 1.0),
        ];
        let args = ReportArgs {
            subject_peak_rss_kib: Some(1024),
            ..args()
        };
        let md = render(&args, records);
        assert!(
            md.contains("| manifest-get-64c | berth | 3 | 200.0 | 100–300 |"),
            "{md}"
        );
        assert!(md.contains("| manifest-get-64c | 40.00× | 80% |"), "{md}");
        assert!(md.contains("p99 ≤ 2 ms | 1.000 ms | yes"), "{md}");
        assert!(md.contains("peak RSS ≤ 64 MiB | 1.0 MiB | yes"), "{md}");
    }

    #[test]
    fn server_and_client_cpu_per_op_and_per_gb() {
        let rec = |srv_gb: Option<f64>, client_gb: Option<f64>| {
            serde_json::json!({"case": "blob-get-64m-8c", "label": "berth", "ops_per_s": 10.0, "mb_per_s": 640.0, "errors": 0,
            "server": {"cpu_us_per_op": 30000.0, "cpu_s_per_gb": srv_gb, "peak_rss_kib": 2048},
            "client": {"cpu_us_per_op": 45000.0, "cpu_s_per_gb": client_gb}})
        };
        let md = render(
            &args(),
            vec![
                rec(Some(0.4), Some(0.7)),
                rec(Some(0.6), Some(0.5)),
                rec(Some(0.5), Some(0.6)),
            ],
        );
        assert!(
            md.contains("| 30000.0 | 45000.0 | 0.50 / 0.60 | 2.0 MiB | 0 |"),
            "{md}"
        );
        // No payload (HEAD): no per-GB figure.
        let md = render(&args(), vec![rec(None, None)]);
        assert!(
            md.contains("| 30000.0 | 45000.0 | - | 2.0 MiB | 0 |"),
            "{md}"
        );
    }

    #[test]
    fn a_push_goal_above_the_disk_says_how_much_of_the_disk_was_used() {
        let rec = |case: &str, label: &str, scenario: &str, mb: f64| serde_json::json!({"case": case, "label": label, "scenario": scenario, "ops_per_s": 1.0, "mb_per_s": mb, "errors": 0});
        let args = args();
        let with_disk = |disk: f64| {
            render(
                &args,
                vec![
                    rec("push-big-1s", "berth", "blob-push", 600.0),
                    rec("sha256-1core", "cpu", "sha256-speed", 1000.0),
                    rec("disk-direct", "disk", "disk-speed", disk),
                ],
            )
        };
        // 70% of SHA-256 is 700 MB/s; a 650 MB/s disk cannot get there.
        let md = with_disk(650.0);
        assert!(
            md.contains("| 60% (92% of the disk's 650 MB/s, which is below the goal) | **no** |"),
            "{md}"
        );
        // A disk faster than the goal is not mentioned.
        let md = with_disk(2000.0);
        assert!(md.contains("| 60% | **no** |"), "{md}");
    }

    #[test]
    fn missed_targets_and_charts() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |case: &str, label: &str, ops: f64, mb: f64| serde_json::json!({"case": case, "label": label, "ops_per_s": ops, "mb_per_s": mb, "errors": 0, "size": if mb > 0.0 { serde_json::json!(512u64 << 20) } else { serde_json::Value::Null }});
        let records = vec![
            rec("manifest-get-64c", "berth", 100.0, 0.0),
            rec("manifest-get-htpasswd-64c", "berth", 70.0, 0.0),
            rec("manifest-get-htpasswd-64c", "reference", 7.0, 0.0),
            rec("push-big-1s", "berth", 0.1, 50.0),
            rec("push-big-1s", "reference", 0.1, 40.0),
            serde_json::json!({"case": "sha256-1core", "label": "cpu", "scenario": "sha256-speed", "mb_per_s": 100.0, "ops_per_s": 1.0}),
            // A run that produced nothing usable.
            serde_json::json!({"case": "fleet-32c:push", "label": "berth"}),
        ];
        let args = ReportArgs {
            out: Some(dir.path().join("report.md")),
            subject_peak_rss_kib: Some(100 * 1024),
            note: Some("note".into()),
            charts: Some(dir.path().to_path_buf()),
            ..args()
        };
        let md = render(&args, records);
        let summary = md.find("## Summary").unwrap();
        assert!(summary < md.find("## Results").unwrap(), "{md}");
        assert!(md.contains("targets missed in this run (3)"), "{md}");
        assert!(
            md.contains("- manifest-get-htpasswd-64c: ≥ 80% of manifest-get-64c (measured 70%)"),
            "{md}"
        );
        assert!(
            md.contains("- push-big-1s: ≥ 70% of one core's SHA-256 (100 MB/s) (measured 50%)"),
            "{md}"
        );
        assert!(
            md.contains("peak RSS ≤ 64 MiB (measured 100.0 MiB)"),
            "{md}"
        );
        assert!(md.contains("perf record -g -p"), "{md}");
        assert!(md.contains("![fleet-32c:push](fleet-32c-push.svg)"), "{md}");
        for name in [
            "manifest-get-64c",
            "push-big-1s",
            "sha256-1core",
            "fleet-32c-push",
        ] {
            let svg = std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap();
            assert!(svg.ends_with("</svg>\n"), "{svg}");
        }
        let big = std::fs::read_to_string(dir.path().join("push-big-1s.svg")).unwrap();
        assert!(
            big.contains("MB/s") && big.contains(">50.0</text>"),
            "{big}"
        );
        assert_eq!(
            relative_dir(
                std::path::Path::new("/a/b/c"),
                Some(std::path::Path::new("/a/b/r.md"))
            ),
            "c/"
        );
        assert_eq!(
            relative_dir(
                std::path::Path::new("/x"),
                Some(std::path::Path::new("/a/r.md"))
            ),
            "/x/"
        );
    }
}
