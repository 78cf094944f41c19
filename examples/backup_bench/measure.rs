//! Figures of one process: wall time, CPU time (own and of waited-for children),
//! peak RSS, bytes read; and the median/min/max summary the report prints.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Self {
            median,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The `q` quantile (0..=1) by nearest rank.
    pub fn quantile(samples: &[f64], q: f64) -> f64 {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    pub fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max})
    }
}

/// CPU seconds (user + system) of this process, and of its waited-for children.
pub fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect())
        .unwrap_or_default();
    // utime, stime, cutime, cstime are fields 14-17 of proc(5), in clock ticks
    // (100 per second on Linux).
    let field = |n: usize| rest.get(n - 3).copied().unwrap_or(0.0) / 100.0;
    (field(14) + field(15), field(16) + field(17))
}

/// One timed run: wall seconds and CPU seconds (ours plus children's).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub secs: f64,
    pub cpu: f64,
}

pub struct Timer {
    start: Instant,
    cpu: (f64, f64),
}

impl Timer {
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    /// The figures so far; the timer keeps running.
    pub fn lap(&self) -> Run {
        let (own, children) = cpu_seconds();
        Run {
            secs: self.start.elapsed().as_secs_f64(),
            cpu: (own - self.cpu.0) + (children - self.cpu.1),
        }
    }

    pub fn stop(self) -> Run {
        self.lap()
    }
}

/// Peak resident set size of this process (VmHWM).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes this process read through read(2)-like calls (`rchar` of /proc/self/io),
/// page cache included.
pub fn bytes_read() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Total bytes of the files under `dir`.
pub fn du(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir)
}

/// Files under `dir`.
pub fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

/// Runs a shell command line, timed; fails the benchmark if it fails.
pub fn sh(line: &str, env: &[(&str, &str)]) -> Run {
    let timer = Timer::start();
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running `{line}`: {e}"));
    let run = timer.stop();
    assert!(
        out.status.success(),
        "`{line}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

/// Flushes dirty pages left by the previous step, so no measurement pays for another's writes.
pub fn settle() {
    sh("sync", &[]);
}

/// [`settle`], then empties the page cache, so what a restore reads comes from
/// the disk as after a real loss (a backup's objects are not in the cache
/// then, nor a peer's archive). Needs root; returns false when not allowed.
pub fn settle_cold() -> bool {
    settle();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// True when `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

pub const MIB: f64 = 1048576.0;
