//! The server's CPU time and peak RSS from /proc, summed over the process
//! and its descendants (nginx answers from worker processes).

use std::fs;

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// utime + stime, seconds, over the process tree.
    pub cpu_s: f64,
    /// Sum of VmHWM over the tree, KiB.
    pub peak_rss_kib: u64,
    /// Sum of VmRSS over the tree, KiB.
    pub rss_kib: u64,
}

/// `pid` and every process descending from it.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, _)) = stat(p) {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// (ppid, utime+stime ticks) of one process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub fn sample(pid: u32) -> Option<Sample> {
    stat(pid)?;
    let mut s = Sample::default();
    for p in tree(pid) {
        if let Some((_, ticks)) = stat(p) {
            s.cpu_s += ticks as f64 / TICKS;
        }
        s.peak_rss_kib += status_kib(p, "VmHWM");
        s.rss_kib += status_kib(p, "VmRSS");
    }
    Some(s)
}

/// CPU time this process (every thread of it) has used, seconds, at
/// nanosecond resolution (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn own_cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Resets the peak-RSS mark of the tree (`echo 5 > clear_refs`); false if
/// not permitted.
pub fn reset_peak(pid: u32) -> bool {
    tree(pid)
        .into_iter()
        .all(|p| fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = super::own_cpu_s();
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = super::own_cpu_s() - before;
        assert!(
            (0.02..1.0).contains(&used),
            "{used} s for 30 ms of spinning"
        );
    }

    #[test]
    fn samples_this_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.peak_rss_kib > 0 && s.rss_kib > 0);
    }
}
