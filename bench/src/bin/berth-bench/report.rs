//! `berth-bench report`: medians over rounds of `--json` records, per case
//! and target, with ratios subject/baseline and subject/ceiling and the
//! project's performance targets checked, as Markdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

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

/// The project's targets: (case, what, goal).
enum Goal {
    /// subject/baseline ops/s at least.
    VsBaseline(f64),
    /// subject/ceiling ops/s at least.
    VsCeiling(f64),
    /// subject p99 at most, milliseconds.
    P99Ms(f64),
}

const GOALS: &[(&str, Goal)] = &[
    ("manifest-get-64c", Goal::VsBaseline(30.0)),
    ("manifest-get-64c", Goal::VsCeiling(0.8)),
    ("manifest-get-64c", Goal::P99Ms(2.0)),
    ("blob-head-64c", Goal::VsBaseline(30.0)),
    ("blob-push-4k-8c", Goal::VsBaseline(20.0)),
    ("blob-get-64m-8s", Goal::VsBaseline(2.5)),
    ("blob-get-64m-8s", Goal::VsCeiling(0.9)),
];

fn f(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.digits$}"))
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
    md.push_str("Medians over rounds (min–max of ops/s shown for spread). MB/s is payload 10^6 bytes per second. ");
    md.push_str("Server CPU and peak RSS come from /proc of the server's process tree during the measurement.\n\n");
    md.push_str("## Results\n\n| case | target | runs | ops/s | ops/s min–max | MB/s | p50 ms | p99 ms | p99.9 ms | srv CPU µs/op | srv peak RSS | errors |\n");
    md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for case in &order {
        for label in &labels {
            let Some(g) = groups.get(&(case.clone(), label.clone())) else {
                continue;
            };
            let (lo, hi) = g.range(&["ops_per_s"]);
            md.push_str(&format!(
                "| {case} | {label} | {} | {} | {lo:.0}–{hi:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
                g.runs.len(),
                f(g.med(&["ops_per_s"]), 1),
                f(g.med(&["mb_per_s"]), 1),
                f(g.med(&["latency_us", "p50"]).map(|x| x / 1000.0), 3),
                f(g.med(&["latency_us", "p99"]).map(|x| x / 1000.0), 3),
                f(g.med(&["latency_us", "p999"]).map(|x| x / 1000.0), 3),
                f(g.med(&["server", "cpu_us_per_op"]), 1),
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
    md.push_str("\n## Targets\n\n| case | goal | measured | met |\n|---|---|--:|:-:|\n");
    for (case, goal) in GOALS {
        if !order.iter().any(|c| c == case) {
            continue;
        }
        let (goal_text, measured, met) = match goal {
            Goal::VsBaseline(x) => {
                let r = ratio(case, &args.baseline);
                (
                    format!("≥ {x}× {}", args.baseline),
                    f(r, 2) + "×",
                    r.map(|r| r >= *x),
                )
            }
            Goal::VsCeiling(x) => {
                let r = ratio(case, &args.ceiling);
                (
                    format!("≥ {:.0}% of {}", x * 100.0, args.ceiling),
                    f(r.map(|r| r * 100.0), 0) + "%",
                    r.map(|r| r >= *x),
                )
            }
            Goal::P99Ms(x) => {
                let p = groups
                    .get(&(case.to_string(), args.subject.clone()))
                    .and_then(|g| g.med(&["latency_us", "p99"]))
                    .map(|p| p / 1000.0);
                (format!("p99 ≤ {x} ms"), f(p, 3) + " ms", p.map(|p| p <= *x))
            }
        };
        md.push_str(&format!(
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
        md.push_str(&format!(
            "| all | {} peak RSS ≤ 64 MiB | {} | {} |\n",
            args.subject,
            mib(p),
            if p <= 64.0 * 1024.0 { "yes" } else { "**no**" }
        ));
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
            inputs: vec![],
            out: None,
            subject: "berth".into(),
            baseline: "reference".into(),
            ceiling: "nginx".into(),
            subject_peak_rss_kib: Some(1024),
            note: None,
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
}
