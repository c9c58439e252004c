//! Process metrics (`holdfast_process_*`) read from `/proc/self` at scrape time.
//!
//! CPU time, resident and virtual memory, open and maximum file descriptors, threads and start
//! time: what an operator needs to alert before the descriptor limit refuses connections. On
//! systems without `/proc` the collector reports nothing.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in the
/// Linux ABI on every mainstream architecture).
const USER_HZ: f64 = 100.0;

/// Reads `/proc/self` on every scrape.
pub(crate) struct ProcessCollector {
    cpu: Counter,
    rss: IntGauge,
    vsize: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    /// Serialises scrapes: the CPU counter is reset and set again on each.
    lock: Mutex<()>,
}

impl ProcessCollector {
    pub(crate) fn new() -> ProcessCollector {
        ProcessCollector {
            cpu: Counter::new(
                "holdfast_process_cpu_seconds_total",
                "User and system CPU time spent by the process",
            )
            .expect("valid metric"),
            rss: IntGauge::new(
                "holdfast_process_resident_memory_bytes",
                "Resident memory of the process",
            )
            .expect("valid metric"),
            vsize: IntGauge::new(
                "holdfast_process_virtual_memory_bytes",
                "Virtual memory of the process",
            )
            .expect("valid metric"),
            open_fds: IntGauge::new(
                "holdfast_process_open_fds",
                "Open file descriptors (sockets included)",
            )
            .expect("valid metric"),
            max_fds: IntGauge::new(
                "holdfast_process_max_fds",
                "Soft limit on open file descriptors (RLIMIT_NOFILE)",
            )
            .expect("valid metric"),
            threads: IntGauge::new("holdfast_process_threads", "Threads of the process")
                .expect("valid metric"),
            start_time: Gauge::new(
                "holdfast_process_start_time_seconds",
                "Start time of the process, seconds since the Unix epoch",
            )
            .expect("valid metric"),
            lock: Mutex::new(()),
        }
    }

    fn refresh(&self) -> bool {
        let Some(stat) = read_stat() else {
            return false;
        };
        self.cpu.reset();
        self.cpu.inc_by(stat.cpu_seconds);
        self.threads.set(stat.threads);
        if let Some(btime) = boot_time() {
            self.start_time.set(btime + stat.start_ticks / USER_HZ);
        }
        if let Some((rss, vsize)) = read_memory() {
            self.rss.set(rss);
            self.vsize.set(vsize);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            self.open_fds
                .set(i64::try_from(dir.count()).unwrap_or(i64::MAX) - 1);
        }
        if let Some(max) = max_fds() {
            self.max_fds.set(max);
        }
        true
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.cpu.desc());
        d.extend(self.rss.desc());
        d.extend(self.vsize.desc());
        d.extend(self.open_fds.desc());
        d.extend(self.max_fds.desc());
        d.extend(self.threads.desc());
        d.extend(self.start_time.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.refresh() {
            return Vec::new();
        }
        let mut out = Vec::new();
        out.extend(self.cpu.collect());
        out.extend(self.rss.collect());
        out.extend(self.vsize.collect());
        out.extend(self.open_fds.collect());
        out.extend(self.max_fds.collect());
        out.extend(self.threads.collect());
        out.extend(self.start_time.collect());
        out
    }
}

struct Stat {
    cpu_seconds: f64,
    threads: i64,
    start_ticks: f64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from its closing parenthesis.
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest[0] is field 3 (state).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    Some(Stat {
        cpu_seconds: (num(11)? + num(12)?) / USER_HZ,
        threads: f.get(17)?.parse().ok()?,
        start_ticks: num(19)?,
    })
}

/// `(VmRSS, VmSize)` in bytes from `/proc/self/status`.
fn read_memory() -> Option<(i64, i64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<i64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let v: i64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(v * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}

/// The soft `Max open files` limit from `/proc/self/limits` (`unlimited` reads as i64::MAX).
fn max_fds() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(i64::MAX);
    }
    soft.parse().ok()
}

/// System boot time, seconds since the epoch, from `/proc/stat`.
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("btime "))?;
    line[6..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    12345 1000000 500 18446744073709551615";
        let s = parse_stat(text).expect("parses");
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9);
        assert_eq!(s.threads, 7);
        assert!((s.start_ticks - 12345.0).abs() < 1e-9);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let c = ProcessCollector::new();
        assert!(c.refresh());
        assert!(c.open_fds.get() > 0);
        assert!(c.max_fds.get() >= c.open_fds.get());
        assert!(c.rss.get() > 0);
        assert!(c.threads.get() >= 1);
    }
}
