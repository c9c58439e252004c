//! Runs one benchmark: splits the load into shares (in this process, or in child processes
//! when one process cannot hold enough sockets), samples the server around the ramp and the
//! window, and merges the shares' reports.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout_at, Instant};

use crate::load::{run_share, Command, Scenario, ShareEvent, ShareReport, ShareSpec};
use crate::probe::{ServerProbe, ServerSample, ServerUsage};
use crate::report::{aggregate, Params, RunMeta, RunResult, ServerReadings};
use crate::target::{Endpoint, Target};

/// The environment variable carrying a share's spec to a child process (not argv: it holds the
/// shared secret).
pub const SHARE_ENV: &str = "HOLDFAST_BENCH_SHARE";

/// Buffer of share events; progress events are dropped rather than block a share.
const EVENT_BUFFER: usize = 256;

/// One benchmark run, as asked for on the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What to run.
    pub scenario: Scenario,
    /// Which protocol to speak.
    pub target: Target,
    /// Where the server listens.
    pub endpoint: Endpoint,
    /// Other nodes of the same cluster; connections are spread over all of them.
    pub extra_endpoints: Vec<Endpoint>,
    /// Shared secret for Holdfast tokens.
    pub secret: String,
    /// Free-form label stored in the result.
    pub label: String,
    /// Long-lived connections.
    pub connections: usize,
    /// Connections per room.
    pub group: usize,
    /// Publishes per second, all rooms together.
    pub publish_rate: f64,
    /// Payload size, bytes.
    pub size: usize,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Load processes (1: everything in this process).
    pub procs: usize,
    /// Loopback source addresses.
    pub source_addrs: u8,
    /// Connection attempts in flight per process.
    pub connect_concurrency: usize,
    /// Connections per second per process during the ramp (0: unpaced).
    pub connect_rate: f64,
    /// Longest ramp, seconds.
    pub ramp_timeout_s: f64,
    /// Pause between the end of the ramp and the memory sample, seconds.
    pub settle_s: f64,
    /// Churn: connections per second.
    pub churn_rate: f64,
    /// Churn: lifetime of each short-lived connection, milliseconds.
    pub churn_hold_ms: u64,
    /// Storm: when everything drops, seconds into the window.
    pub storm_at_s: f64,
    /// Whether to draw a progress bar.
    pub progress: bool,
}

impl Plan {
    /// Splits the connections into `procs` shares along room boundaries.
    pub fn shares(&self, run_tag: &str) -> Vec<ShareSpec> {
        let group = self.group.max(1);
        let rooms = self.connections.div_ceil(group);
        let procs = self.procs.clamp(1, rooms.max(1));
        let total_publishers = if self.scenario.publishes() { rooms } else { 0 };
        (0..procs)
            .map(|p| {
                let first_room = rooms * p / procs;
                let end_room = rooms * (p + 1) / procs;
                let first = first_room * group;
                let end = (end_room * group).min(self.connections);
                let share_rooms = end_room - first_room;
                ShareSpec {
                    scenario: self.scenario,
                    target: self.target,
                    endpoint: self.endpoint.clone(),
                    extra_endpoints: self.extra_endpoints.clone(),
                    secret: self.secret.clone(),
                    run_tag: run_tag.to_owned(),
                    index: p,
                    first,
                    count: end - first,
                    group,
                    publish_rate: if total_publishers > 0 {
                        self.publish_rate * share_rooms as f64 / total_publishers as f64
                    } else {
                        0.0
                    },
                    size: self.size,
                    source_addrs: self.source_addrs,
                    connect_concurrency: self.connect_concurrency,
                    connect_rate: self.connect_rate,
                    ramp_timeout_s: self.ramp_timeout_s,
                    duration_s: self.duration_s,
                    churn_rate: self.churn_rate / procs as f64,
                    churn_hold_ms: self.churn_hold_ms,
                    storm_at_s: self.storm_at_s,
                }
            })
            .filter(|s| s.count > 0)
            .collect()
    }
}

/// A running share: where its events arrive and where commands go.
struct Handle {
    events: mpsc::Receiver<ShareEvent>,
    commands: mpsc::Sender<Command>,
    /// Kept so the child is killed if the run is abandoned (`kill_on_drop`).
    child: Option<Child>,
}

fn start_in_process(spec: ShareSpec) -> Handle {
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_BUFFER);
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    tokio::spawn(run_share(spec, ev_tx, cmd_rx));
    Handle {
        events: ev_rx,
        commands: cmd_tx,
        child: None,
    }
}

fn start_child(spec: &ShareSpec) -> anyhow::Result<Handle> {
    let exe = std::env::current_exe().context("locating holdfast-bench")?;
    let mut child = Process::new(exe)
        .arg("child")
        .env(SHARE_ENV, serde_json::to_string(spec)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning a load process")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no child stdout"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no child stdin"))?;
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_BUFFER);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(4);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<ShareEvent>(&line) {
                Ok(e) => {
                    if ev_tx.send(e).await.is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("load process said something unexpected ({e}): {line}"),
            }
        }
    });
    tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            let mut line = serde_json::to_string(&cmd).unwrap_or_default();
            line.push('\n');
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    Ok(Handle {
        events: ev_rx,
        commands: cmd_tx,
        child: Some(child),
    })
}

/// The body of `holdfast-bench child`: one share, spec from the environment, events as JSON
/// lines on stdout, commands as JSON lines on stdin.
pub async fn child_main() -> anyhow::Result<()> {
    let spec: ShareSpec = serde_json::from_str(
        &std::env::var(SHARE_ENV).with_context(|| format!("{SHARE_ENV} is not set"))?,
    )
    .context("reading the share spec")?;
    let (ev_tx, mut ev_rx) = mpsc::channel(EVENT_BUFFER);
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(cmd) = serde_json::from_str::<Command>(&line) {
                if cmd_tx.send(cmd).await.is_err() {
                    break;
                }
            }
        }
    });
    let share = tokio::spawn(run_share(spec, ev_tx, cmd_rx));
    let mut out = tokio::io::stdout();
    while let Some(event) = ev_rx.recv().await {
        let mut line = serde_json::to_string(&event)?;
        line.push('\n');
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
        if matches!(event, ShareEvent::Report { .. } | ShareEvent::Failed { .. }) {
            break;
        }
    }
    let _ = share.await;
    Ok(())
}

fn sample(probe: Option<&ServerProbe>) -> anyhow::Result<Option<ServerSample>> {
    probe
        .map(|p| p.sample().context("reading the server's /proc entries"))
        .transpose()
}

/// Runs the plan and returns the merged result.
pub async fn run(plan: &Plan, probe: Option<&ServerProbe>) -> anyhow::Result<RunResult> {
    let run_tag = format!("{:08x}", rand::random::<u32>());
    let specs = plan.shares(&run_tag);
    let before = sample(probe)?;

    let mut handles = Vec::with_capacity(specs.len());
    for spec in &specs {
        handles.push(if plan.procs <= 1 {
            start_in_process(spec.clone())
        } else {
            start_child(spec)?
        });
    }

    let bar = if plan.progress {
        let bar = ProgressBar::new(plan.connections as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} ramp [{elapsed_precise}] {bar:40} {pos}/{len} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    // Ramp: wait until every share is ready.
    let ramp_deadline = Instant::now() + Duration::from_secs_f64(plan.ramp_timeout_s + 30.0);
    let mut progress = vec![(0u64, 0u64); handles.len()];
    let mut ready = vec![false; handles.len()];
    let mut ping_interval_ms = None;
    while !ready.iter().all(|r| *r) {
        let mut any = false;
        for (k, h) in handles.iter_mut().enumerate() {
            while let Ok(event) = h.events.try_recv() {
                any = true;
                match event {
                    ShareEvent::Progress {
                        established,
                        failed,
                    } => progress[k] = (established, failed),
                    ShareEvent::Ready {
                        ping_interval_ms: p,
                    } => {
                        ready[k] = true;
                        ping_interval_ms = ping_interval_ms.or(p);
                    }
                    ShareEvent::Failed { error } => bail!("load share {k} failed: {error}"),
                    ShareEvent::Report { .. } => bail!("load share {k} ended during the ramp"),
                }
            }
        }
        let established: u64 = progress.iter().map(|p| p.0).sum();
        let failed: u64 = progress.iter().map(|p| p.1).sum();
        bar.set_position(established);
        bar.set_message(format!("failed {failed}"));
        if Instant::now() >= ramp_deadline {
            bail!("the ramp did not finish in time");
        }
        if !any {
            sleep(Duration::from_millis(50)).await;
        }
    }
    bar.finish();
    let ramped = sample(probe)?;

    // Memory: let the server settle, then sample.
    sleep(Duration::from_secs_f64(plan.settle_s)).await;
    let loaded = sample(probe)?;

    // The load generator's own CPU (this process and its children), to tell a saturated load
    // generator from a slow server.
    let load_probes: Vec<ServerProbe> = std::iter::once(std::process::id())
        .chain(handles.iter().filter_map(|h| h.child.as_ref()?.id()))
        .filter_map(|pid| ServerProbe::new(pid).ok())
        .collect();
    let load_cpu = |probes: &[ServerProbe]| -> u64 {
        probes
            .iter()
            .filter_map(|p| p.sample().ok())
            .map(|s| s.cpu_us)
            .sum()
    };

    // Window.
    for h in &handles {
        let _ = h.commands.send(Command::Go).await;
    }
    let load_cpu_start = load_cpu(&load_probes);
    let window_start = sample(probe)?;
    let started = Instant::now();
    if plan.progress {
        eprintln!("measuring for {} s", plan.duration_s);
    }
    sleep(Duration::from_secs_f64(plan.duration_s)).await;
    let window_end = sample(probe)?;
    let window_s = started.elapsed().as_secs_f64();
    let load_cores = load_cpu(&load_probes).saturating_sub(load_cpu_start) as f64 / 1e6 / window_s;
    for h in &handles {
        let _ = h.commands.send(Command::Stop).await;
    }

    // Reports.
    let report_deadline = Instant::now() + Duration::from_secs(60);
    let mut reports: Vec<ShareReport> = Vec::with_capacity(handles.len());
    for (k, h) in handles.iter_mut().enumerate() {
        loop {
            match timeout_at(report_deadline, h.events.recv()).await {
                Ok(Some(ShareEvent::Report { report })) => {
                    reports.push(*report);
                    break;
                }
                Ok(Some(ShareEvent::Failed { error })) => bail!("load share {k} failed: {error}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("load share {k} exited without a report"),
                Err(_) => bail!("load share {k} did not report in time"),
            }
        }
    }

    let readings = match (probe, before, ramped, loaded, window_start, window_end) {
        (Some(p), Some(b), Some(r), Some(l), Some(ws), Some(we)) => Some(ServerReadings {
            ramp_cpu_us: r.cpu_us.saturating_sub(b.cpu_us),
            pid: p.pid(),
            rss_before: b.rss_bytes,
            anon_before: b.rss_anon_bytes,
            rss_loaded: l.rss_bytes,
            anon_loaded: l.rss_anon_bytes,
            window: ServerUsage::between(&ws, &we),
        }),
        _ => None,
    };
    let group = plan.group.max(1);
    let params = Params {
        connections: plan.connections,
        rooms: plan.connections.div_ceil(group),
        members: group,
        publish_rate: if plan.scenario.publishes() {
            plan.publish_rate
        } else {
            0.0
        },
        size: plan.size,
        duration_s: plan.duration_s,
        procs: specs.len(),
        source_addrs: plan.source_addrs,
        churn_rate: plan.churn_rate,
        storm_at_s: plan.storm_at_s,
    };
    let meta = RunMeta {
        scenario: plan.scenario,
        target: plan.target,
        label: plan.label.clone(),
        params,
        ping_interval_ms,
        window_s,
    };
    let mut result = aggregate(meta, &reports, readings);
    result.load_cores = load_cores;
    Ok(result)
}

/// A server started by the tool, killed when dropped.
pub struct ServerProcess {
    /// The child; `kill_on_drop` ends it with the run.
    child: Child,
}

impl ServerProcess {
    /// Starts `command` with `sh -c 'exec …'` (so the pid is the server's own) and waits until
    /// `addr` accepts TCP connections.
    pub async fn start(command: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let child = Process::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let mut server = ServerProcess { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("`{command}` exited early: {status}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!("`{command}` did not listen on {addr} within 120 s");
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn plan(scenario: Scenario, connections: usize, group: usize, procs: usize) -> Plan {
        Plan {
            scenario,
            target: Target::Holdfast,
            endpoint: "ws://127.0.0.1:1/ws".parse().unwrap(),
            extra_endpoints: Vec::new(),
            secret: "s".into(),
            label: String::new(),
            connections,
            group,
            publish_rate: 100.0,
            size: 64,
            duration_s: 1.0,
            procs,
            source_addrs: 4,
            connect_concurrency: 10,
            connect_rate: 0.0,
            ramp_timeout_s: 10.0,
            settle_s: 0.0,
            churn_rate: 30.0,
            churn_hold_ms: 10,
            storm_at_s: 0.0,
            progress: false,
        }
    }

    #[test]
    fn shares_split_along_rooms_and_cover_every_connection() {
        let p = plan(Scenario::Fanout, 1_050, 100, 3);
        let shares = p.shares("t");
        assert_eq!(shares.len(), 3);
        let mut next = 0;
        for s in &shares {
            assert_eq!(s.first, next);
            assert_eq!(s.first % 100, 0);
            next = s.first + s.count;
        }
        assert_eq!(next, 1_050);
        let rate: f64 = shares.iter().map(|s| s.publish_rate).sum();
        assert!((rate - 100.0).abs() < 1e-9);
        let churn: f64 = shares.iter().map(|s| s.churn_rate).sum();
        assert!((churn - 30.0).abs() < 1e-9);

        let idle = plan(Scenario::Idle, 10, 10, 4).shares("t");
        assert_eq!(idle.len(), 1, "never more shares than rooms");
        assert_eq!(idle[0].publish_rate, 0.0);
    }
}
