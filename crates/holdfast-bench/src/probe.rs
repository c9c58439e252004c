//! Measures the server from outside, through `/proc/PID`: resident memory and CPU time.

use std::io;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Reads one process's memory and CPU counters.
#[derive(Debug, Clone)]
pub struct ServerProbe {
    /// The server's process id.
    pid: u32,
    /// Kernel clock ticks per second, the unit of `utime` and `stime` in `/proc/PID/stat`.
    ticks_per_sec: u64,
}

/// One reading of the server's counters.
#[derive(Debug, Clone, Copy)]
pub struct ServerSample {
    /// When the sample was taken.
    pub at: Instant,
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Anonymous resident memory (`RssAnon`): heap and stacks, without mapped code.
    pub rss_anon_bytes: u64,
    /// User plus system CPU time since the process started, microseconds.
    pub cpu_us: u64,
}

/// Server figures over one phase of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// CPU time used during the phase, microseconds.
    pub cpu_us: u64,
    /// Wall time of the phase, seconds.
    pub wall_s: f64,
    /// Average cores busy during the phase (1.0 = one core fully used).
    pub cores: f64,
}

impl ServerUsage {
    /// The usage between two samples.
    pub fn between(a: &ServerSample, b: &ServerSample) -> Self {
        let wall_s = b.at.duration_since(a.at).as_secs_f64();
        let cpu_us = b.cpu_us.saturating_sub(a.cpu_us);
        ServerUsage {
            cpu_us,
            wall_s,
            cores: if wall_s > 0.0 {
                cpu_us as f64 / 1e6 / wall_s
            } else {
                0.0
            },
        }
    }
}

impl ServerProbe {
    /// A probe for `pid`; fails when the process does not exist.
    pub fn new(pid: u32) -> io::Result<Self> {
        let probe = ServerProbe {
            pid,
            ticks_per_sec: clock_ticks(),
        };
        probe.sample()?;
        Ok(probe)
    }

    /// The process id being measured.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads the counters now.
    pub fn sample(&self) -> io::Result<ServerSample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let ticks = parse_stat_ticks(&stat).ok_or_else(|| bad("unreadable /proc/PID/stat"))?;
        Ok(ServerSample {
            at: Instant::now(),
            rss_bytes: status_kib(&status, "VmRSS:").ok_or_else(|| bad("no VmRSS"))? * 1024,
            rss_anon_bytes: status_kib(&status, "RssAnon:").unwrap_or(0) * 1024,
            cpu_us: ticks * 1_000_000 / self.ticks_per_sec.max(1),
        })
    }
}

fn clock_ticks() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` from `/proc/PID/stat`, in clock ticks. The command name may contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        let status = "Name:\tsrv\nVmPeak:\t  9000 kB\nVmRSS:\t  4096 kB\nRssAnon:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(4096));
        assert_eq!(status_kib(status, "RssAnon:"), Some(1024));
        assert_eq!(status_kib(status, "RssFile:"), None);
    }

    #[test]
    fn samples_this_process() {
        let probe = ServerProbe::new(std::process::id()).unwrap();
        let a = probe.sample().unwrap();
        assert!(a.rss_bytes > 0);
        let b = probe.sample().unwrap();
        let usage = ServerUsage::between(&a, &b);
        assert!(usage.wall_s >= 0.0);
    }
}
