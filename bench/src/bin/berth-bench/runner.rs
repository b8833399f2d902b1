//! Runs a scenario on N connections (a thread each) for a duration or a
//! count, and measures throughput, latency and the server's resources.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::{Conn, Target};
use crate::procstat;
use crate::scenarios::{OpError, Scenario};

pub struct Plan {
    pub connections: usize,
    /// Measure this long after the warm-up (ignored with `count`).
    pub duration: Duration,
    pub warmup: Duration,
    /// Run exactly this many operations in total (no warm-up).
    pub count: Option<u64>,
    pub verify: bool,
    pub server_pid: Option<u32>,
    pub reset_peak_rss: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    /// The class of operation (scenarios with several report one outcome each).
    #[serde(skip)]
    pub class: String,
    pub ops: u64,
    pub errors: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    pub latency_us: Latency,
    /// TCP connections opened over the run, warm-up included (equals the
    /// number of connections when keep-alive holds).
    pub tcp_connects: u64,
    /// This load generator's own CPU over the measurement.
    pub client: Resources,
    pub server: Option<ServerUse>,
    /// The first few failures, exact request and response.
    pub error_samples: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// CPU spent over the measurement, whole and per unit of work (every class
/// of operation together: the processes cannot tell them apart).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Resources {
    pub cpu_s: f64,
    /// Per operation, microseconds.
    pub cpu_us_per_op: f64,
    /// Per 10^9 payload bytes moved, seconds; `None` when no payload moved
    /// (HEAD, for instance).
    pub cpu_s_per_gb: Option<f64>,
    /// As a share of one core.
    pub cpu_cores: f64,
}

impl Resources {
    fn new(cpu_s: f64, ops: u64, bytes: u64, elapsed_s: f64) -> Resources {
        Resources {
            cpu_s,
            cpu_us_per_op: if ops > 0 {
                cpu_s * 1e6 / ops as f64
            } else {
                0.0
            },
            cpu_s_per_gb: (bytes > 0).then(|| cpu_s * 1e9 / bytes as f64),
            cpu_cores: cpu_s / elapsed_s,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ServerUse {
    #[serde(flatten)]
    pub cpu: Resources,
    /// VmHWM at the end (summed over the process tree), KiB. Since the
    /// measurement began if `peak_reset`, else since the server started.
    pub peak_rss_kib: u64,
    pub peak_reset: bool,
    pub rss_kib: u64,
}

/// Totals of one class of operation.
struct Class {
    hist: Mutex<Histogram<u64>>,
    ops: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    samples: Mutex<Vec<String>>,
}

struct Shared {
    classes: Vec<Class>,
    connects: AtomicU64,
    issued: AtomicU64,
    last_finish: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

fn new_hist() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// Runs the plan; one outcome per class of the scenario (in its order).
pub fn run(target: &Target, plan: &Plan, scenario: Arc<dyn Scenario>) -> Vec<Outcome> {
    let shared = Arc::new(Shared {
        classes: scenario
            .classes()
            .iter()
            .map(|_| Class {
                hist: Mutex::new(new_hist()),
                ops: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                samples: Mutex::new(Vec::new()),
            })
            .collect(),
        connects: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        last_finish: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let barrier = Arc::new(Barrier::new(plan.connections + 1));
    // Set by the main thread once the barrier releases.
    let begin = Arc::new(Mutex::new(Instant::now()));
    let warmup = if plan.count.is_some() {
        Duration::ZERO
    } else {
        plan.warmup
    };
    let mut threads = Vec::new();
    for worker in 0..plan.connections {
        let (shared, barrier, scenario, target, begin) = (
            shared.clone(),
            barrier.clone(),
            scenario.clone(),
            target.clone(),
            begin.clone(),
        );
        let (count, verify, total) = (plan.count, plan.verify, warmup + plan.duration);
        threads.push(
            std::thread::Builder::new()
                .name(format!("conn-{worker}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut conn = Conn::new(&target);
                    let mut hist = new_hist();
                    let (mut ops, mut errors, mut bytes) = (0u64, 0u64, 0u64);
                    barrier.wait();
                    let start = *begin.lock().unwrap();
                    let (warm_end, deadline) = (start + warmup, start + total);
                    let mut seq = 0u64;
                    loop {
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Some(count) = count {
                            if shared.issued.fetch_add(1, Ordering::Relaxed) >= count {
                                break;
                            }
                        }
                        let t0 = Instant::now();
                        if count.is_none() && t0 >= deadline {
                            break;
                        }
                        let measured = t0 >= warm_end;
                        let result = scenario.op(&mut conn, worker, seq, verify);
                        seq += 1;
                        let dt = t0.elapsed();
                        if !measured {
                            continue;
                        }
                        match result {
                            Ok(n) => {
                                ops += 1;
                                bytes += n;
                                let _ = hist.record((dt.as_nanos() as u64).max(1));
                            }
                            Err(e) => {
                                errors += 1;
                                record_error(&shared.classes[scenario.class_of(worker)], &e);
                                // A dead server would otherwise be hammered.
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                    let now = Instant::now();
                    {
                        let mut last = shared.last_finish.lock().unwrap();
                        if last.is_none_or(|l| now > l) {
                            *last = Some(now);
                        }
                    }
                    let class = &shared.classes[scenario.class_of(worker)];
                    class.hist.lock().unwrap().add(&hist).expect("same bounds");
                    class.ops.fetch_add(ops, Ordering::Relaxed);
                    class.errors.fetch_add(errors, Ordering::Relaxed);
                    class.bytes.fetch_add(bytes, Ordering::Relaxed);
                    shared.connects.fetch_add(conn.connects, Ordering::Relaxed);
                })
                .expect("spawn"),
        );
    }
    *begin.lock().unwrap() = Instant::now();
    let start = *begin.lock().unwrap();
    barrier.wait();
    // Server resources are sampled over the measured window only.
    let measure_start = start + warmup;
    if let Some(d) = measure_start.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
    let peak_reset = plan
        .server_pid
        .is_some_and(|pid| plan.reset_peak_rss && procstat::reset_peak(pid));
    let before = plan.server_pid.and_then(procstat::sample);
    let client_before = procstat::own_cpu_s();
    // Bounded even if the server hangs: stop workers well after the deadline.
    if plan.count.is_none() {
        let limit = plan.duration + Duration::from_secs(30);
        let watchdog_shared = shared.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            watchdog_shared.stop.store(true, Ordering::Relaxed);
        });
    }
    for t in threads {
        let _ = t.join();
    }
    let after = plan.server_pid.and_then(procstat::sample);
    let client_cpu = (procstat::own_cpu_s() - client_before).max(0.0);
    let end = shared
        .last_finish
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let elapsed = end
        .saturating_duration_since(measure_start)
        .as_secs_f64()
        .max(1e-9);
    let total_ops: u64 = shared
        .classes
        .iter()
        .map(|c| c.ops.load(Ordering::Relaxed))
        .sum();
    let total_bytes: u64 = shared
        .classes
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum();
    let client = Resources::new(client_cpu, total_ops, total_bytes, elapsed);
    let server = match (before, after) {
        (Some(b), Some(a)) => {
            let cpu = (a.cpu_s - b.cpu_s).max(0.0);
            Some(ServerUse {
                cpu: Resources::new(cpu, total_ops, total_bytes, elapsed),
                peak_rss_kib: a.peak_rss_kib,
                peak_reset,
                rss_kib: a.rss_kib,
            })
        }
        _ => None,
    };
    let connects = shared.connects.load(Ordering::Relaxed);
    scenario
        .classes()
        .iter()
        .zip(&shared.classes)
        .map(|(name, class)| {
            let hist = std::mem::replace(&mut *class.hist.lock().unwrap(), new_hist());
            let ops = class.ops.load(Ordering::Relaxed);
            let bytes = class.bytes.load(Ordering::Relaxed);
            let us = |q: f64| {
                if hist.is_empty() {
                    0.0
                } else {
                    hist.value_at_quantile(q) as f64 / 1000.0
                }
            };
            Outcome {
                class: name.to_string(),
                ops,
                errors: class.errors.load(Ordering::Relaxed),
                bytes,
                elapsed_s: elapsed,
                ops_per_s: ops as f64 / elapsed,
                mb_per_s: bytes as f64 / 1e6 / elapsed,
                latency_us: Latency {
                    mean: if hist.is_empty() {
                        0.0
                    } else {
                        hist.mean() / 1000.0
                    },
                    p50: us(0.5),
                    p90: us(0.9),
                    p99: us(0.99),
                    p999: us(0.999),
                    max: if hist.is_empty() {
                        0.0
                    } else {
                        hist.max() as f64 / 1000.0
                    },
                },
                tcp_connects: connects,
                client: client.clone(),
                server: server.clone(),
                error_samples: std::mem::take(&mut *class.samples.lock().unwrap()),
            }
        })
        .collect()
}

fn record_error(class: &Class, e: &OpError) {
    let mut samples = class.samples.lock().unwrap();
    if samples.len() < 3 {
        samples.push(e.to_string());
    }
}
