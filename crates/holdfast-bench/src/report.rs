//! The result of a run: its JSON schema, how share reports merge into it, the table printed at
//! the end, and the side-by-side comparison of two results.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::hist::{Latency, Percentiles};
use crate::load::{Scenario, ShareReport};
use crate::probe::ServerUsage;
use crate::target::Target;

/// Version of the JSON layout below; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

/// Everything one run measured. Written with `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`SCHEMA`].
    pub schema: u32,
    /// What ran.
    pub scenario: Scenario,
    /// Against which server.
    pub target: Target,
    /// Free-form label (e.g. the git revision).
    pub label: String,
    /// When the run started, Unix seconds.
    pub started_at: u64,
    /// The load that was asked for.
    pub params: Params,
    /// The ramp.
    pub connect: ConnectSummary,
    /// Server-side figures, when the server's pid was known.
    pub server: Option<ServerSummary>,
    /// Messages during the window (publishes for fan-out, round trips for echo).
    pub traffic: TrafficSummary,
    /// Churn figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnSummary>,
    /// Storm figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormSummary>,
    /// Established connections the server closed during the run.
    pub disconnects: u64,
    /// Cores used by the load generator itself during the window: when it nears the machine's
    /// core count, latency figures measure the load generator, not the server.
    #[serde(default)]
    pub load_cores: f64,
    /// The first distinct errors seen by any share.
    pub errors: Vec<String>,
}

/// The requested load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Long-lived connections.
    pub connections: usize,
    /// Rooms they are spread over.
    pub rooms: usize,
    /// Members per room.
    pub members: usize,
    /// Publishes per second, all rooms together.
    pub publish_rate: f64,
    /// Payload size, bytes.
    pub size: usize,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Load processes.
    pub procs: usize,
    /// Loopback source addresses.
    pub source_addrs: u8,
    /// Churn: connections per second.
    pub churn_rate: f64,
    /// Storm: when the drop happens, seconds into the window.
    pub storm_at_s: f64,
}

/// The ramp.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectSummary {
    /// Attempts.
    pub attempted: u64,
    /// Established.
    pub established: u64,
    /// Failed.
    pub failed: u64,
    /// Ramp duration (the slowest share), seconds.
    pub ramp_s: f64,
    /// Established connections per second of ramp.
    pub per_s: f64,
    /// Time to establish one connection (TCP, upgrade, authentication, join).
    pub latency: Percentiles,
}

/// Server figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    /// The measured process.
    pub pid: u32,
    /// Heartbeat period the server announced, if it did.
    pub ping_interval_ms: Option<u64>,
    /// RSS before the first connection, bytes.
    pub rss_before_bytes: u64,
    /// RSS with every connection established and idle, bytes.
    pub rss_loaded_bytes: u64,
    /// (loaded - before) / established connections, bytes.
    pub rss_per_conn_bytes: f64,
    /// Same, anonymous memory only (heap and stacks), bytes.
    pub rss_anon_per_conn_bytes: f64,
    /// CPU during the measured window.
    pub window: ServerUsage,
    /// Idle cost: CPU microseconds per connection per second of window.
    pub cpu_us_per_conn_s: f64,
    /// CPU microseconds per delivery (fan-out) or round trip (echo).
    pub cpu_us_per_delivery: f64,
    /// Connection setup cost: server CPU microseconds during the ramp per established
    /// connection (TCP accept, upgrade, authentication, join and the presence it causes).
    #[serde(default)]
    pub setup_cpu_us_per_conn: f64,
}

/// Messages in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    /// Publishes (or echo requests) sent.
    pub publishes: u64,
    /// Deliveries expected if none were lost.
    pub expected_deliveries: u64,
    /// Deliveries received (sent within the window).
    pub deliveries: u64,
    /// Deliveries per second of window.
    pub deliveries_per_s: f64,
    /// Publish-to-receive latency (echo: round trip).
    pub latency: Percentiles,
}

/// Churn figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnSummary {
    /// Short-lived connections opened.
    pub connects: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Opened per second of window.
    pub per_s: f64,
    /// Time to establish each.
    pub latency: Percentiles,
}

/// Storm figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormSummary {
    /// Connections dropped at once.
    pub dropped: u64,
    /// Connections that resumed.
    pub resumed: u64,
    /// Connections that could not resume.
    pub failed: u64,
    /// Drop to last resume, milliseconds.
    pub recovery_ms: f64,
    /// Per-connection drop-to-resume time.
    pub recovery: Percentiles,
    /// Distinct events published in the window.
    pub events: u64,
    /// Member-events never received; must be 0.
    pub lost: u64,
    /// Member-events received twice; must be 0.
    pub duplicated: u64,
    /// Resumes that reported `recovered: false`.
    pub not_recovered: u64,
    /// Sequence numbers the server declared lost.
    pub gap_reported: u64,
}

/// Server samples taken by the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerReadings {
    /// Process id.
    pub pid: u32,
    /// RSS before the ramp.
    pub rss_before: u64,
    /// Anonymous RSS before the ramp.
    pub anon_before: u64,
    /// RSS after the ramp settled.
    pub rss_loaded: u64,
    /// Anonymous RSS after the ramp settled.
    pub anon_loaded: u64,
    /// Server CPU spent from the first connection to the end of the ramp, microseconds.
    pub ramp_cpu_us: u64,
    /// CPU over the window.
    pub window: ServerUsage,
}

/// What the driver knows about a run besides the share reports.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// What ran.
    pub scenario: Scenario,
    /// Against which server.
    pub target: Target,
    /// Free-form label.
    pub label: String,
    /// The requested load.
    pub params: Params,
    /// Heartbeat period announced by the server.
    pub ping_interval_ms: Option<u64>,
    /// Measured window length, seconds.
    pub window_s: f64,
}

/// Merges share reports into a run result.
pub fn aggregate(
    meta: RunMeta,
    shares: &[ShareReport],
    server: Option<ServerReadings>,
) -> RunResult {
    let RunMeta {
        scenario,
        target,
        label,
        params,
        ping_interval_ms,
        window_s,
    } = meta;
    let sum = |f: fn(&ShareReport) -> u64| shares.iter().map(f).sum::<u64>();
    let merge = |f: fn(&ShareReport) -> &[[u64; 2]]| {
        shares.iter().fold(Latency::new(), |mut acc, s| {
            acc.merge(&Latency::from_buckets(f(s)));
            acc
        })
    };
    let established = sum(|s| s.established);
    let ramp_s = shares.iter().map(|s| s.ramp_s).fold(0.0, f64::max);
    let deliveries = sum(|s| s.deliveries);
    let per = |n: u64, d: f64| if d > 0.0 { n as f64 / d } else { 0.0 };

    let server = server.map(|r| {
        let conns = established.max(1) as f64;
        ServerSummary {
            pid: r.pid,
            ping_interval_ms,
            rss_before_bytes: r.rss_before,
            rss_loaded_bytes: r.rss_loaded,
            rss_per_conn_bytes: r.rss_loaded.saturating_sub(r.rss_before) as f64 / conns,
            rss_anon_per_conn_bytes: r.anon_loaded.saturating_sub(r.anon_before) as f64 / conns,
            window: r.window,
            cpu_us_per_conn_s: per(r.window.cpu_us, conns * r.window.wall_s),
            cpu_us_per_delivery: per(r.window.cpu_us, deliveries as f64),
            setup_cpu_us_per_conn: per(r.ramp_cpu_us, conns),
        }
    });
    let churn = shares.iter().any(|s| s.churn.is_some()).then(|| {
        let parts: Vec<_> = shares.iter().filter_map(|s| s.churn.as_ref()).collect();
        let connects = parts.iter().map(|c| c.connects).sum();
        let latency = parts.iter().fold(Latency::new(), |mut acc, c| {
            acc.merge(&Latency::from_buckets(&c.latency));
            acc
        });
        ChurnSummary {
            connects,
            failures: parts.iter().map(|c| c.failures).sum(),
            per_s: per(connects, window_s),
            latency: latency.summary(),
        }
    });
    let storm = shares.iter().any(|s| s.storm.is_some()).then(|| {
        let parts: Vec<_> = shares.iter().filter_map(|s| s.storm.as_ref()).collect();
        let recovery = parts.iter().fold(Latency::new(), |mut acc, c| {
            acc.merge(&Latency::from_buckets(&c.recovery));
            acc
        });
        StormSummary {
            dropped: parts.iter().map(|c| c.dropped).sum(),
            resumed: parts.iter().map(|c| c.resumed).sum(),
            failed: parts.iter().map(|c| c.failed).sum(),
            recovery_ms: parts.iter().map(|c| c.recovery_ms).fold(0.0, f64::max),
            recovery: recovery.summary(),
            events: parts.iter().map(|c| c.events).sum(),
            lost: parts.iter().map(|c| c.lost).sum(),
            duplicated: parts.iter().map(|c| c.duplicated).sum(),
            not_recovered: parts.iter().map(|c| c.not_recovered).sum(),
            gap_reported: parts.iter().map(|c| c.gap_reported).sum(),
        }
    });
    let mut errors: Vec<String> = Vec::new();
    for e in shares.iter().flat_map(|s| s.errors.iter()) {
        if errors.len() < 12 && !errors.contains(e) {
            errors.push(e.clone());
        }
    }
    RunResult {
        schema: SCHEMA,
        scenario,
        target,
        label,
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        params,
        connect: ConnectSummary {
            attempted: sum(|s| s.attempted),
            established,
            failed: sum(|s| s.failed),
            ramp_s,
            per_s: per(established, ramp_s),
            latency: merge(|s| &s.connect_latency).summary(),
        },
        server,
        traffic: TrafficSummary {
            publishes: sum(|s| s.publishes),
            expected_deliveries: sum(|s| s.expected_deliveries),
            deliveries,
            deliveries_per_s: per(deliveries, window_s),
            latency: merge(|s| &s.latency).summary(),
        },
        churn,
        storm,
        disconnects: sum(|s| s.disconnects),
        load_cores: 0.0,
        errors,
    }
}

/// The headline figures of a result, as (name, value, unit, lower-is-better).
pub fn headline(r: &RunResult) -> Vec<(&'static str, f64, &'static str, bool)> {
    let mut rows = vec![
        ("connections", r.connect.established as f64, "", false),
        ("connect rate", r.connect.per_s, "/s", false),
        ("connect p99", r.connect.latency.p99_ms, "ms", true),
    ];
    if let Some(s) = &r.server {
        rows.push(("server RSS / conn", s.rss_per_conn_bytes, "B", true));
        rows.push((
            "server anon RSS / conn",
            s.rss_anon_per_conn_bytes,
            "B",
            true,
        ));
        rows.push(("server CPU / setup", s.setup_cpu_us_per_conn, "us", true));
        rows.push(("server CPU (window)", s.window.cores * 100.0, "%", true));
        if r.scenario == Scenario::Idle {
            rows.push(("idle CPU / conn / s", s.cpu_us_per_conn_s, "us", true));
        } else {
            rows.push(("CPU / delivery", s.cpu_us_per_delivery, "us", true));
        }
    }
    if r.scenario != Scenario::Idle {
        let t = &r.traffic;
        rows.push(("publishes", t.publishes as f64, "", false));
        rows.push(("deliveries", t.deliveries as f64, "", false));
        rows.push((
            "expected deliveries",
            t.expected_deliveries as f64,
            "",
            false,
        ));
        rows.push(("deliveries / s", t.deliveries_per_s, "/s", false));
        rows.push(("latency p50", t.latency.p50_ms, "ms", true));
        rows.push(("latency p90", t.latency.p90_ms, "ms", true));
        rows.push(("latency p99", t.latency.p99_ms, "ms", true));
        rows.push(("latency p999", t.latency.p999_ms, "ms", true));
        rows.push(("latency max", t.latency.max_ms, "ms", true));
    }
    if let Some(c) = &r.churn {
        rows.push(("churn connects / s", c.per_s, "/s", false));
        rows.push(("churn failures", c.failures as f64, "", true));
        rows.push(("churn connect p99", c.latency.p99_ms, "ms", true));
    }
    if let Some(s) = &r.storm {
        rows.push(("storm dropped", s.dropped as f64, "", false));
        rows.push(("storm resumed", s.resumed as f64, "", false));
        rows.push(("storm failed", s.failed as f64, "", true));
        rows.push(("time to full recovery", s.recovery_ms, "ms", true));
        rows.push(("recovery p50", s.recovery.p50_ms, "ms", true));
        rows.push(("events", s.events as f64, "", false));
        rows.push(("events lost", s.lost as f64, "", true));
        rows.push(("events duplicated", s.duplicated as f64, "", true));
        rows.push(("resumes not recovered", s.not_recovered as f64, "", true));
        rows.push(("gap reported", s.gap_reported as f64, "", true));
    }
    rows.push(("disconnects", r.disconnects as f64, "", true));
    rows.push(("load generator CPU", r.load_cores * 100.0, "%", true));
    rows
}

fn number(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The table printed at the end of a run.
pub fn table(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} / {}  ({} connections, {} rooms x {}, {} pub/s of {} B, {} s, {} proc)",
        r.scenario_name(),
        r.target,
        r.params.connections,
        r.params.rooms,
        r.params.members,
        r.params.publish_rate,
        r.params.size,
        r.params.duration_s,
        r.params.procs,
    );
    for (name, value, unit, _) in headline(r) {
        let _ = writeln!(out, "  {name:<24} {:>14} {unit}", number(value));
    }
    for e in &r.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// Side by side: every headline figure of `base` next to each other result, with the ratio
/// other/base.
pub fn compare(base: &RunResult, others: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<24} {:>14}", base.scenario_name(), base.target);
    for o in others {
        let _ = write!(out, " {:>14} {:>8}", o.target, "ratio");
    }
    out.push('\n');
    let base_rows = headline(base);
    for (name, value, unit, _) in &base_rows {
        let _ = write!(
            out,
            "{name:<24} {:>14}",
            format!("{} {unit}", number(*value))
        );
        for o in others {
            let theirs = headline(o)
                .into_iter()
                .find(|(n, ..)| n == name)
                .map(|(_, v, ..)| v);
            match theirs {
                Some(v) => {
                    let ratio = if *value != 0.0 {
                        format!("{:.2}x", v / value)
                    } else {
                        "-".to_owned()
                    };
                    let _ = write!(out, " {:>14} {ratio:>8}", format!("{} {unit}", number(v)));
                }
                None => {
                    let _ = write!(out, " {:>14} {:>8}", "-", "-");
                }
            }
        }
        out.push('\n');
    }
    out
}

impl RunResult {
    /// The scenario as written on the command line.
    pub fn scenario_name(&self) -> &'static str {
        match self.scenario {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Echo => "echo",
            Scenario::Churn => "churn",
            Scenario::Storm => "storm",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::load::StormReport;

    fn params() -> Params {
        Params {
            connections: 4,
            rooms: 2,
            members: 2,
            publish_rate: 10.0,
            size: 64,
            duration_s: 2.0,
            procs: 2,
            source_addrs: 1,
            churn_rate: 0.0,
            storm_at_s: 0.0,
        }
    }

    fn share(deliveries: u64, lat_us: u64) -> ShareReport {
        let mut h = Latency::new();
        for _ in 0..deliveries {
            h.record_us(lat_us);
        }
        ShareReport {
            attempted: 2,
            established: 2,
            ramp_s: 0.5,
            publishes: deliveries / 2,
            expected_deliveries: deliveries,
            deliveries,
            latency: h.to_buckets(),
            connect_latency: h.to_buckets(),
            storm: Some(StormReport {
                lost: 0,
                duplicated: 1,
                events: 5,
                ..StormReport::default()
            }),
            ..ShareReport::default()
        }
    }

    #[test]
    fn shares_merge_and_the_result_round_trips_as_json() {
        let readings = ServerReadings {
            pid: 1,
            rss_before: 1_000_000,
            rss_loaded: 1_004_000,
            window: ServerUsage {
                cpu_us: 1_000,
                wall_s: 2.0,
                cores: 0.0005,
            },
            ..ServerReadings::default()
        };
        let meta = RunMeta {
            scenario: Scenario::Storm,
            target: Target::Holdfast,
            label: "test".into(),
            params: params(),
            ping_interval_ms: Some(25_000),
            window_s: 2.0,
        };
        let r = aggregate(
            meta,
            &[share(100, 1_000), share(100, 3_000)],
            Some(readings),
        );
        assert_eq!(r.connect.established, 4);
        assert_eq!(r.traffic.deliveries, 200);
        assert_eq!(r.traffic.deliveries_per_s, 100.0);
        assert_eq!(r.traffic.latency.count, 200);
        let s = r.server.as_ref().unwrap();
        assert_eq!(s.rss_per_conn_bytes, 1_000.0);
        assert_eq!(s.cpu_us_per_delivery, 5.0);
        let storm = r.storm.as_ref().unwrap();
        assert_eq!((storm.events, storm.duplicated), (10, 2));

        let json = serde_json::to_string_pretty(&r).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["scenario"], "storm");
        assert_eq!(v["target"], "holdfast");
        assert!(v["traffic"]["latency"]["p99_ms"].is_number());
        assert!(v["server"]["rss_per_conn_bytes"].is_number());

        assert!(table(&r).contains("events duplicated"));
        let other = RunResult {
            target: Target::Ws,
            ..r.clone()
        };
        let cmp = compare(&r, &[other]);
        assert!(cmp.contains("1.00x"), "{cmp}");
    }
}
