//! One process's share of a run: opening its connections, driving the scenario, and counting
//! what arrives.
//!
//! A share is told what to do by a [`ShareSpec`] and driven through its phases by
//! [`Command`]s; it answers with [`ShareEvent`]s. The driver runs a share either in-process
//! (over channels) or in a child process (the same messages as JSON lines on stdin/stdout), so a
//! run can exceed the per-process file descriptor limit.
//!
//! Connection `i` (a global index, unique across shares) is user `b{tag}-{i}` in room
//! `r{tag}-{i / group}`; in scenarios that publish, the first connection of each room is its
//! publisher. The run tag keeps users and rooms of consecutive runs apart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{interval_at, sleep, timeout, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Dialer, Envelope, Membership, Ws};
use crate::hist::Latency;
use crate::net::SourceAddrs;
use crate::target::{read_stamp, stamped_payload, Endpoint, Target};
use crate::token::TokenMinter;

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Connections held open: connect rate, server memory per connection, idle CPU.
    Idle,
    /// Rooms with members and one publisher each: deliveries/s, latency, CPU per delivery.
    Fanout,
    /// Each connection sends to itself through the server, one message in flight at a time.
    Echo,
    /// Fan-out while extra connections join and leave at a steady rate.
    Churn,
    /// Fan-out, then every connection drops at once and resumes (Holdfast only).
    Storm,
}

impl Scenario {
    /// Whether room publishers send during the measured window.
    pub fn publishes(self) -> bool {
        matches!(self, Scenario::Fanout | Scenario::Churn | Scenario::Storm)
    }
}

/// Everything one share needs; sent to child processes as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareSpec {
    /// What to run.
    pub scenario: Scenario,
    /// Which protocol to speak.
    pub target: Target,
    /// Where the server listens (validated loopback).
    pub endpoint: Endpoint,
    /// Other nodes of the same cluster (validated loopback).
    #[serde(default)]
    pub extra_endpoints: Vec<Endpoint>,
    /// Shared secret for Holdfast tokens.
    pub secret: String,
    /// Tag making this run's user and room names unique.
    pub run_tag: String,
    /// Which share this is (0-based).
    pub index: usize,
    /// First global connection index of this share.
    pub first: usize,
    /// Number of connections in this share.
    pub count: usize,
    /// Connections per room.
    pub group: usize,
    /// Publishes per second for the whole share, spread over its publishers.
    pub publish_rate: f64,
    /// Approximate payload size, bytes.
    pub size: usize,
    /// Number of loopback source addresses to spread connections over.
    pub source_addrs: u8,
    /// Connection attempts in flight at once during the ramp.
    pub connect_concurrency: usize,
    /// New connections per second during the ramp (0: as fast as concurrency allows).
    pub connect_rate: f64,
    /// Longest the ramp may take, seconds.
    pub ramp_timeout_s: f64,
    /// Length of the measured window, seconds (bounds how long a share waits for `stop`).
    pub duration_s: f64,
    /// Churn: new short-lived connections per second during the window.
    pub churn_rate: f64,
    /// Churn: how long each short-lived connection stays, milliseconds.
    pub churn_hold_ms: u64,
    /// Storm: seconds after the window opens at which every connection drops.
    pub storm_at_s: f64,
}

impl ShareSpec {
    /// The user id of connection `i`.
    pub fn user(&self, i: usize) -> String {
        format!("b{}-{i}", self.run_tag)
    }

    /// The room of connection `i`.
    pub fn room(&self, i: usize) -> String {
        format!("r{}-{}", self.run_tag, i / self.group.max(1))
    }

    /// Whether connection `i` publishes to its room.
    pub fn is_publisher(&self, i: usize) -> bool {
        self.scenario.publishes() && self.publish_rate > 0.0 && i.is_multiple_of(self.group.max(1))
    }

    /// How many members connection `i`'s room has within this share.
    pub fn room_size(&self, i: usize) -> usize {
        let group = self.group.max(1);
        let start = (i / group * group).max(self.first);
        let end = ((i / group + 1) * group).min(self.first + self.count);
        end.saturating_sub(start)
    }

    /// The publishers of this share.
    pub fn publishers(&self) -> usize {
        (self.first..self.first + self.count)
            .filter(|&i| self.is_publisher(i))
            .count()
    }
}

/// Driver to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Open the measured window.
    Go,
    /// Close the window, drain, and report.
    Stop,
}

/// Share to driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShareEvent {
    /// Ramp progress.
    Progress {
        /// Connections established so far.
        established: u64,
        /// Connection attempts failed so far.
        failed: u64,
    },
    /// The ramp is over; waiting for `go`.
    Ready {
        /// The heartbeat period announced by the server, when it announces one.
        ping_interval_ms: Option<u64>,
    },
    /// The share's final figures.
    Report {
        /// The figures (boxed: far larger than the other events).
        report: Box<ShareReport>,
    },
    /// The share could not run.
    Failed {
        /// Why.
        error: String,
    },
}

/// One share's figures; merged by the driver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShareReport {
    /// Connection attempts during the ramp.
    pub attempted: u64,
    /// Connections established during the ramp.
    pub established: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Time from the first attempt until every attempt finished, seconds.
    pub ramp_s: f64,
    /// Time to establish each connection (connect, upgrade, join), as histogram buckets.
    pub connect_latency: Vec<[u64; 2]>,
    /// Messages published (or echo requests sent) in the window.
    pub publishes: u64,
    /// Deliveries that would happen if nothing were lost.
    pub expected_deliveries: u64,
    /// Stamped messages received whose send time is within the window.
    pub deliveries: u64,
    /// Send-to-receive latency of those deliveries, as histogram buckets.
    pub latency: Vec<[u64; 2]>,
    /// Established connections that the server closed before the run ended.
    pub disconnects: u64,
    /// Churn figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Storm figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormReport>,
    /// The first few distinct errors, for the operator.
    pub errors: Vec<String>,
}

/// Short-lived connections opened during a churn window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Connections opened (and later closed).
    pub connects: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Time to establish each, as histogram buckets.
    pub latency: Vec<[u64; 2]>,
}

/// What happened when every connection dropped at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormReport {
    /// Connections dropped.
    pub dropped: u64,
    /// Connections that resumed with `reconnected`.
    pub resumed: u64,
    /// Connections that could not resume.
    pub failed: u64,
    /// From the drop until the last connection resumed, milliseconds.
    pub recovery_ms: f64,
    /// Per-connection time from the drop to `reconnected`, as histogram buckets.
    pub recovery: Vec<[u64; 2]>,
    /// Distinct room events published during the window.
    pub events: u64,
    /// Member-events that never arrived (live or replayed).
    pub lost: u64,
    /// Member-events that arrived more than once.
    pub duplicated: u64,
    /// `reconnected` replies with `recovered: false`.
    pub not_recovered: u64,
    /// Sequence numbers the server declared lost in `gap`s.
    pub gap_reported: u64,
}

/// Where a share is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Measure,
    Drain,
    Done,
}

/// Latency shards: connection tasks on different workers rarely contend for the same lock.
const SHARDS: usize = 16;
/// Errors kept for the report.
const MAX_ERRORS: usize = 12;
/// Short-lived churn connections in flight at once, so a slow server cannot pile up tasks.
const MAX_CHURN_IN_FLIGHT: usize = 512;
/// How often a share reports ramp progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Nanoseconds since the Unix epoch: comparable across the load processes of one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What one connection of a storm saw.
struct StormMember {
    room: String,
    seen: HashSet<u64>,
    acked: Vec<u64>,
    duplicated: u64,
}

/// State shared by the tasks of one share.
struct Share {
    spec: ShareSpec,
    dialer: Dialer,
    minter: TokenMinter,
    sources: SourceAddrs,
    /// Phase changes wake every connection task at once.
    phase: watch::Sender<Phase>,
    /// Flipped once, when a storm drops every connection.
    storm: watch::Sender<bool>,
    /// When the storm happened, for recovery times.
    storm_at: Mutex<Option<Instant>>,
    /// The window in send-time nanoseconds: a delivery counts when its stamp is inside.
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    /// When the ramp began, and when (microseconds later) the last connection was established:
    /// the connect rate is measured over that span, not over the polling loop.
    ramp_started: Instant,
    last_established_us: AtomicU64,
    established: AtomicU64,
    failed: AtomicU64,
    disconnects: AtomicU64,
    publishes: AtomicU64,
    expected: AtomicU64,
    deliveries: AtomicU64,
    ping_interval_ms: AtomicU64,
    latency: Vec<Mutex<Latency>>,
    connect_latency: Mutex<Latency>,
    churn_connects: AtomicU64,
    churn_failures: AtomicU64,
    churn_latency: Mutex<Latency>,
    storm_resumed: AtomicU64,
    storm_failed: AtomicU64,
    storm_not_recovered: AtomicU64,
    storm_gap: AtomicU64,
    storm_recovery: Mutex<Latency>,
    storm_members: Mutex<Vec<StormMember>>,
    errors: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking connection task must not take the whole share down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Share {
    fn note_error(&self, e: impl std::fmt::Display) {
        let text = e.to_string();
        let mut errors = lock(&self.errors);
        if errors.len() < MAX_ERRORS && !errors.contains(&text) {
            errors.push(text);
        }
    }

    fn phase_now(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Counts a stamped message received by connection `i`.
    fn observe(&self, i: usize, sent_ns: u64) {
        let start = self.window_start_ns.load(Ordering::Relaxed);
        let end = self.window_end_ns.load(Ordering::Relaxed);
        if start == 0 || sent_ns < start || sent_ns >= end {
            return;
        }
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        let elapsed = now_ns().saturating_sub(sent_ns);
        lock(&self.latency[i % SHARDS]).record_ns(elapsed);
    }

    /// A stamped payload for a message that should produce `deliveries` deliveries. It is
    /// counted as published (and its deliveries as expected) only when its stamp falls inside
    /// the window, by the same rule [`Share::observe`] applies to what arrives.
    fn stamp(&self, deliveries: u64) -> String {
        let sent = now_ns();
        let start = self.window_start_ns.load(Ordering::Relaxed);
        let end = self.window_end_ns.load(Ordering::Relaxed);
        if start != 0 && sent >= start && sent < end {
            self.publishes.fetch_add(1, Ordering::Relaxed);
            self.expected.fetch_add(deliveries, Ordering::Relaxed);
        }
        stamped_payload(sent, self.spec.size)
    }
}

/// Runs one share to completion: ramp, wait for `go`, measure, wait for `stop`, drain, report.
/// Every wait is bounded by the spec's timeouts.
pub async fn run_share(
    spec: ShareSpec,
    events: mpsc::Sender<ShareEvent>,
    mut commands: mpsc::Receiver<Command>,
) {
    let report = match drive(spec, &events, &mut commands).await {
        Ok(report) => ShareEvent::Report {
            report: Box::new(report),
        },
        Err(e) => ShareEvent::Failed {
            error: format!("{e:#}"),
        },
    };
    let _ = events.send(report).await;
}

async fn drive(
    spec: ShareSpec,
    events: &mpsc::Sender<ShareEvent>,
    commands: &mut mpsc::Receiver<Command>,
) -> anyhow::Result<ShareReport> {
    let share = Arc::new(Share {
        dialer: Dialer {
            target: spec.target,
            endpoint: spec.endpoint.clone(),
            extra: spec.extra_endpoints.clone(),
        },
        minter: TokenMinter::new(&spec.secret, Duration::from_secs(24 * 3600)),
        sources: SourceAddrs::loopback(spec.source_addrs),
        phase: watch::Sender::new(Phase::Ramp),
        storm: watch::Sender::new(false),
        storm_at: Mutex::new(None),
        window_start_ns: AtomicU64::new(0),
        window_end_ns: AtomicU64::new(u64::MAX),
        ramp_started: Instant::now(),
        last_established_us: AtomicU64::new(0),
        established: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        publishes: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        ping_interval_ms: AtomicU64::new(0),
        latency: (0..SHARDS).map(|_| Mutex::new(Latency::new())).collect(),
        connect_latency: Mutex::new(Latency::new()),
        churn_connects: AtomicU64::new(0),
        churn_failures: AtomicU64::new(0),
        churn_latency: Mutex::new(Latency::new()),
        storm_resumed: AtomicU64::new(0),
        storm_failed: AtomicU64::new(0),
        storm_not_recovered: AtomicU64::new(0),
        storm_gap: AtomicU64::new(0),
        storm_recovery: Mutex::new(Latency::new()),
        storm_members: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        spec,
    });
    let spec = &share.spec;
    let mut tasks = JoinSet::new();

    // Ramp: open every connection, bounded in concurrency and time.
    let started = Instant::now();
    let ramp_deadline = started + Duration::from_secs_f64(spec.ramp_timeout_s.max(1.0));
    let permits = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    let mut pace = (spec.connect_rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.connect_rate));
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut attempted = 0u64;
    let mut last_progress = Instant::now();
    for i in spec.first..spec.first + spec.count {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let permit =
            match tokio::time::timeout_at(ramp_deadline, permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => break,
            };
        attempted += 1;
        tasks.spawn(connection(share.clone(), i, permit));
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let _ = events.try_send(progress(&share));
        }
    }
    loop {
        let done = share.established.load(Ordering::Relaxed) + share.failed.load(Ordering::Relaxed);
        let _ = events.try_send(progress(&share));
        if done >= attempted || Instant::now() >= ramp_deadline {
            break;
        }
        sleep(PROGRESS_EVERY).await;
    }
    let ramp_s = match share.last_established_us.load(Ordering::Relaxed) {
        0 => started.elapsed().as_secs_f64(),
        us => us as f64 / 1e6,
    };
    let _ = events.try_send(progress(&share));
    let ping = share.ping_interval_ms.load(Ordering::Relaxed);
    let _ = events
        .send(ShareEvent::Ready {
            ping_interval_ms: (ping > 0).then_some(ping),
        })
        .await;

    // Window: wait for `go`, then for `stop`.
    let go_wait = Duration::from_secs_f64(spec.ramp_timeout_s.max(1.0) + 300.0);
    if wait_for(commands, Command::Go, go_wait).await {
        share.window_start_ns.store(now_ns(), Ordering::Relaxed);
        share.phase.send_replace(Phase::Measure);
        if spec.scenario == Scenario::Churn && spec.churn_rate > 0.0 {
            tasks.spawn(churn(share.clone()));
        }
        if spec.scenario == Scenario::Storm {
            let share = share.clone();
            tasks.spawn(async move {
                sleep(Duration::from_secs_f64(share.spec.storm_at_s.max(0.0))).await;
                if share.phase_now() == Phase::Measure {
                    *lock(&share.storm_at) = Some(Instant::now());
                    share.storm.send_replace(true);
                }
            });
        }
        let stop_wait = Duration::from_secs_f64(spec.duration_s.max(0.0) + 300.0);
        wait_for(commands, Command::Stop, stop_wait).await;
    }
    share.window_end_ns.store(now_ns(), Ordering::Relaxed);
    share.phase.send_replace(Phase::Drain);
    let drain = match spec.scenario {
        Scenario::Storm => Duration::from_secs(3),
        Scenario::Idle => Duration::from_millis(250),
        _ => Duration::from_millis(1500),
    };
    sleep(drain).await;
    share.phase.send_replace(Phase::Done);
    let finish = async { while tasks.join_next().await.is_some() {} };
    if timeout(Duration::from_secs(20), finish).await.is_err() {
        share.note_error("some connection tasks did not finish within 20 s");
        tasks.abort_all();
    }

    Ok(report(&share, attempted, ramp_s))
}

fn progress(share: &Share) -> ShareEvent {
    ShareEvent::Progress {
        established: share.established.load(Ordering::Relaxed),
        failed: share.failed.load(Ordering::Relaxed),
    }
}

/// Waits up to `limit` for `want`; false when the driver went away or time ran out.
async fn wait_for(commands: &mut mpsc::Receiver<Command>, want: Command, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, commands.recv()).await {
            Ok(Some(c)) if c == want => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

fn report(share: &Share, attempted: u64, ramp_s: f64) -> ShareReport {
    let merged = share.latency.iter().fold(Latency::new(), |mut acc, h| {
        acc.merge(&lock(h));
        acc
    });
    let churn = (share.spec.scenario == Scenario::Churn).then(|| ChurnReport {
        connects: share.churn_connects.load(Ordering::Relaxed),
        failures: share.churn_failures.load(Ordering::Relaxed),
        latency: lock(&share.churn_latency).to_buckets(),
    });
    let storm = (share.spec.scenario == Scenario::Storm).then(|| storm_report(share));
    ShareReport {
        attempted,
        established: share.established.load(Ordering::Relaxed),
        failed: share.failed.load(Ordering::Relaxed),
        ramp_s,
        connect_latency: lock(&share.connect_latency).to_buckets(),
        publishes: share.publishes.load(Ordering::Relaxed),
        expected_deliveries: share.expected.load(Ordering::Relaxed),
        deliveries: share.deliveries.load(Ordering::Relaxed),
        latency: merged.to_buckets(),
        disconnects: share.disconnects.load(Ordering::Relaxed),
        churn,
        storm,
        errors: lock(&share.errors).clone(),
    }
}

/// Tallies a storm: the truth for each room is every event seq any member saw plus every seq
/// acknowledged to its publisher; a member lost what it never saw of that truth.
fn storm_report(share: &Share) -> StormReport {
    let members = lock(&share.storm_members);
    let mut truth: HashMap<&str, HashSet<u64>> = HashMap::new();
    for m in members.iter() {
        let t = truth.entry(m.room.as_str()).or_default();
        t.extend(m.seen.iter().copied());
        t.extend(m.acked.iter().copied());
    }
    let lost = members
        .iter()
        .map(|m| truth[m.room.as_str()].difference(&m.seen).count() as u64)
        .sum();
    let stormed = lock(&share.storm_at).is_some();
    let recovery = lock(&share.storm_recovery);
    StormReport {
        dropped: if stormed {
            share.established.load(Ordering::Relaxed)
        } else {
            0
        },
        resumed: share.storm_resumed.load(Ordering::Relaxed),
        failed: share.storm_failed.load(Ordering::Relaxed),
        recovery_ms: recovery.summary().max_ms,
        recovery: recovery.to_buckets(),
        events: truth.values().map(|t| t.len() as u64).sum(),
        lost,
        duplicated: members.iter().map(|m| m.duplicated).sum(),
        not_recovered: share.storm_not_recovered.load(Ordering::Relaxed),
        gap_reported: share.storm_gap.load(Ordering::Relaxed),
    }
}

/// One long-lived connection: open, then run the scenario until the share is done.
async fn connection(share: Arc<Share>, i: usize, permit: OwnedSemaphorePermit) {
    let spec = &share.spec;
    let user = spec.user(i);
    let room = spec.room(i);
    let token = match share.minter.mint(&user) {
        Ok(t) => t,
        Err(e) => {
            share.failed.fetch_add(1, Ordering::Relaxed);
            share.note_error(format!("token: {e}"));
            return;
        }
    };
    let source = share.sources.for_index(i);
    let started = Instant::now();
    let opened = share.dialer.open(source, &user, &token, &room).await;
    drop(permit);
    let (ws, membership) = match opened {
        Ok(ok) => ok,
        Err(e) => {
            share.failed.fetch_add(1, Ordering::Relaxed);
            share.note_error(format!("connect: {e:#}"));
            return;
        }
    };
    lock(&share.connect_latency).record_us(started.elapsed().as_micros() as u64);
    if let Some(ms) = membership.ping_interval_ms {
        share.ping_interval_ms.store(ms, Ordering::Relaxed);
    }
    share.established.fetch_add(1, Ordering::Relaxed);
    share.last_established_us.fetch_max(
        share.ramp_started.elapsed().as_micros() as u64,
        Ordering::Relaxed,
    );
    if spec.scenario == Scenario::Storm && spec.target.resumes() {
        storm_member(share.clone(), i, ws, membership, &token, &room).await;
    } else {
        steady(share.clone(), i, ws, &user, &room).await;
    }
}

/// Resolves on the next publish tick, or never when the connection does not publish.
async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A publishing schedule for one publisher, started at a random phase so that the publishers
/// of a share do not all fire in the same millisecond.
fn publish_ticker(share: &Share, behavior: MissedTickBehavior) -> Option<Interval> {
    let per_publisher = share.spec.publish_rate / share.spec.publishers().max(1) as f64;
    if per_publisher <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / per_publisher);
    let offset = period.mul_f64(rand::random::<f64>());
    let mut t = interval_at(Instant::now() + offset, period);
    t.set_missed_tick_behavior(behavior);
    Some(t)
}

/// The loop of idle, fan-out, echo and churn connections.
async fn steady(share: Arc<Share>, i: usize, mut ws: Ws, user: &str, room: &str) {
    let spec = &share.spec;
    let target = spec.target;
    let echo = spec.scenario == Scenario::Echo;
    let publisher = spec.is_publisher(i);
    let room_size = spec.room_size(i) as u64;
    let mut phase_rx = share.phase.subscribe();
    let mut phase = *phase_rx.borrow_and_update();
    let mut ticker = None;
    let mut in_flight = false;
    loop {
        let mut send = None;
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                phase = *phase_rx.borrow_and_update();
                match phase {
                    Phase::Measure => {
                        if publisher {
                            ticker = publish_ticker(&share, MissedTickBehavior::Burst);
                        }
                        if echo && !in_flight {
                            send = Some(target.echo_frame(user, &share.stamp(1)));
                        }
                    }
                    Phase::Drain => ticker = None,
                    Phase::Done => break,
                    Phase::Ramp => {}
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if let Some(sent) = read_stamp(text) {
                        share.observe(i, sent);
                        if echo {
                            in_flight = false;
                            if phase == Phase::Measure {
                                send = Some(target.echo_frame(user, &share.stamp(1)));
                            }
                        }
                    } else if target == Target::Socketio && text == "2" {
                        send = Some("3".to_owned());
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    if share.phase_now() != Phase::Done {
                        share.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = tick(&mut ticker) => {
                send = Some(target.publish_frame(room, &share.stamp(room_size)));
            }
        }
        if let Some(frame) = send {
            if echo && frame != "3" {
                in_flight = true;
            }
            if let Err(e) = ws.send(Message::text(frame)).await {
                share.note_error(format!("send: {e}"));
                share.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// What a storm member knows about its room stream.
struct Stream {
    seen: HashSet<u64>,
    acked: Vec<u64>,
    duplicated: u64,
    last_seq: u64,
}

impl Stream {
    fn apply(&mut self, frame: &Envelope) {
        if let Some(seq) = frame.seq {
            match frame.kind.as_str() {
                "event" => {
                    if !self.seen.insert(seq) {
                        self.duplicated += 1;
                    }
                    self.last_seq = self.last_seq.max(seq);
                }
                "ack" => self.acked.push(seq),
                _ => self.last_seq = self.last_seq.max(seq),
            }
        }
    }
}

/// Why a storm member's read loop ended.
enum Exit {
    Storm,
    Done,
    Lost,
}

/// A Holdfast connection that tracks its room stream, drops with everyone when the storm hits,
/// and resumes with `reconnect`.
async fn storm_member(
    share: Arc<Share>,
    i: usize,
    mut ws: Ws,
    membership: Membership,
    token: &str,
    room: &str,
) {
    let spec = &share.spec;
    let publisher = spec.is_publisher(i);
    let room_size = spec.room_size(i) as u64;
    let mut stream = Stream {
        seen: HashSet::new(),
        acked: Vec::new(),
        duplicated: 0,
        last_seq: membership.seq,
    };
    let player_id = membership.player_id;
    let mut resume_token = membership.reconnection_token;
    let mut phase_rx = share.phase.subscribe();
    let mut storm_rx = share.storm.subscribe();
    let mut ticker = None;
    let mut published = 0u64;
    if share.phase_now() == Phase::Measure && publisher {
        ticker = publish_ticker(&share, MissedTickBehavior::Skip);
    }
    loop {
        let exit = loop {
            let mut send = None;
            tokio::select! {
                changed = phase_rx.changed() => {
                    if changed.is_err() {
                        break Exit::Done;
                    }
                    match *phase_rx.borrow_and_update() {
                        Phase::Measure if publisher => {
                            ticker = publish_ticker(&share, MissedTickBehavior::Skip);
                        }
                        Phase::Drain => ticker = None,
                        Phase::Done => break Exit::Done,
                        _ => {}
                    }
                }
                stormed = storm_rx.changed() => {
                    if stormed.is_ok() && *storm_rx.borrow_and_update() {
                        break Exit::Storm;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        let text = text.as_str();
                        if let Some(sent) = read_stamp(text) {
                            share.observe(i, sent);
                        }
                        if let Ok(frame) = serde_json::from_str::<Envelope>(text) {
                            stream.apply(&frame);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Exit::Lost,
                    Some(Ok(_)) => {}
                },
                _ = tick(&mut ticker) => {
                    published += 1;
                    let data = share.stamp(room_size);
                    send = Some(format!(
                        r#"{{"type":"publish","room":"{room}","data":{data},"id":"p{i}-{published}"}}"#
                    ));
                }
            }
            if let Some(frame) = send {
                if ws.send(Message::text(frame)).await.is_err() {
                    break Exit::Lost;
                }
            }
        };
        match exit {
            Exit::Done => break,
            Exit::Lost => {
                if share.phase_now() != Phase::Done {
                    share.disconnects.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            Exit::Storm => {
                // Drop without a close frame, as a network failure would.
                drop(ws);
                let dropped_at = lock(&share.storm_at).unwrap_or_else(Instant::now);
                let Some(rt) = resume_token.clone() else {
                    share.storm_failed.fetch_add(1, Ordering::Relaxed);
                    share.note_error("joined carried no reconnection_token");
                    break;
                };
                match resume(&share, i, token, room, &player_id, &rt, &mut stream).await {
                    Some((new_ws, next_token)) => {
                        let took = dropped_at.elapsed();
                        lock(&share.storm_recovery).record_us(took.as_micros() as u64);
                        share.storm_resumed.fetch_add(1, Ordering::Relaxed);
                        resume_token = next_token.or(Some(rt));
                        ws = new_ws;
                    }
                    None => {
                        share.storm_failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
    lock(&share.storm_members).push(StormMember {
        room: room.to_owned(),
        seen: stream.seen,
        acked: stream.acked,
        duplicated: stream.duplicated,
    });
}

/// Attempts to resume a membership a bounded number of times; applies the replayed frames.
async fn resume(
    share: &Share,
    i: usize,
    token: &str,
    room: &str,
    player_id: &str,
    resume_token: &str,
    stream: &mut Stream,
) -> Option<(Ws, Option<String>)> {
    const ATTEMPTS: u32 = 10;
    let source = share.sources.for_index(i);
    for attempt in 0..ATTEMPTS {
        let resumed = share
            .dialer
            .resume(
                source,
                token,
                room,
                player_id,
                resume_token,
                stream.last_seq,
            )
            .await;
        match resumed {
            Ok((ws, reply)) => {
                for frame in &reply.events {
                    if let Some(sent) = frame.stamp() {
                        share.observe(i, sent);
                    }
                    stream.apply(frame);
                }
                if reply.recovered == Some(false) {
                    share.storm_not_recovered.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(gap) = reply.gap {
                    share
                        .storm_gap
                        .fetch_add(gap.to.saturating_sub(gap.from) + 1, Ordering::Relaxed);
                }
                if let Some(seq) = reply.seq {
                    stream.last_seq = stream.last_seq.max(seq);
                }
                return Some((ws, reply.reconnection_token));
            }
            Err(e) => {
                share.note_error(format!("reconnect: {e:#}"));
                if share.phase_now() == Phase::Done {
                    return None;
                }
                sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
            }
        }
    }
    None
}

/// Opens short-lived connections at the churn rate while the window is open.
async fn churn(share: Arc<Share>) {
    let spec = &share.spec;
    let in_flight = Arc::new(Semaphore::new(MAX_CHURN_IN_FLIGHT));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.churn_rate));
    pace.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tasks = JoinSet::new();
    let rooms_first = spec.first / spec.group.max(1);
    let rooms = spec.count.div_ceil(spec.group.max(1)).max(1);
    let limit = (spec.churn_rate * (spec.duration_s + 300.0)) as u64 + 1;
    for n in 0..limit {
        pace.tick().await;
        if share.phase_now() != Phase::Measure {
            break;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            share.churn_failures.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let share = share.clone();
        let room_index = rooms_first + (n as usize % rooms);
        tasks.spawn(async move {
            let spec = &share.spec;
            let user = format!("c{}-{}-{n}", spec.run_tag, spec.index);
            let room = format!("r{}-{room_index}", spec.run_tag);
            let Ok(token) = share.minter.mint(&user) else {
                return;
            };
            let started = Instant::now();
            let source = share.sources.for_index(n as usize);
            match share.dialer.open(source, &user, &token, &room).await {
                Ok((mut ws, _)) => {
                    lock(&share.churn_latency).record_us(started.elapsed().as_micros() as u64);
                    share.churn_connects.fetch_add(1, Ordering::Relaxed);
                    let hold = sleep(Duration::from_millis(spec.churn_hold_ms));
                    tokio::pin!(hold);
                    loop {
                        tokio::select! {
                            _ = &mut hold => break,
                            msg = ws.next() => match msg {
                                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                                    let _ = ws.send(Message::text("3")).await;
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                        }
                    }
                    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
                }
                Err(e) => {
                    share.churn_failures.fetch_add(1, Ordering::Relaxed);
                    share.note_error(format!("churn connect: {e:#}"));
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(first: usize, count: usize, group: usize) -> ShareSpec {
        ShareSpec {
            scenario: Scenario::Fanout,
            target: Target::Holdfast,
            endpoint: "ws://127.0.0.1:1/ws".parse().unwrap(),
            extra_endpoints: Vec::new(),
            secret: "s".into(),
            run_tag: "t".into(),
            index: 0,
            first,
            count,
            group,
            publish_rate: 10.0,
            size: 64,
            source_addrs: 1,
            connect_concurrency: 1,
            connect_rate: 0.0,
            ramp_timeout_s: 1.0,
            duration_s: 1.0,
            churn_rate: 0.0,
            churn_hold_ms: 0,
            storm_at_s: 0.0,
        }
    }

    #[test]
    fn rooms_and_publishers_follow_the_index() {
        let s = spec(100, 250, 100);
        assert_eq!(s.room(100), "rt-1");
        assert_eq!(s.room(199), "rt-1");
        assert_eq!(s.room(200), "rt-2");
        assert_eq!(s.user(7), "bt-7");
        assert!(s.is_publisher(100) && s.is_publisher(300) && !s.is_publisher(101));
        assert_eq!(s.publishers(), 3);
        assert_eq!(s.room_size(150), 100);
        assert_eq!(s.room_size(340), 50);
        let idle = ShareSpec {
            scenario: Scenario::Idle,
            ..s
        };
        assert_eq!(idle.publishers(), 0);
    }

    #[test]
    fn share_messages_round_trip_as_json_lines() {
        let events = [
            ShareEvent::Progress {
                established: 3,
                failed: 1,
            },
            ShareEvent::Ready {
                ping_interval_ms: Some(25_000),
            },
            ShareEvent::Report {
                report: Box::new(ShareReport {
                    deliveries: 9,
                    latency: vec![[10, 2]],
                    storm: Some(StormReport::default()),
                    ..ShareReport::default()
                }),
            },
            ShareEvent::Failed { error: "x".into() },
        ];
        for e in events {
            let line = serde_json::to_string(&e).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<ShareEvent>(&line).unwrap(), e);
        }
        assert_eq!(serde_json::to_string(&Command::Go).unwrap(), "\"go\"");
        let s = spec(0, 1, 1);
        let back: ShareSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn storm_tally_counts_losses_and_duplicates() {
        let mut s = Stream {
            seen: HashSet::new(),
            acked: Vec::new(),
            duplicated: 0,
            last_seq: 3,
        };
        let frame = |kind: &str, seq| Envelope {
            kind: kind.into(),
            seq: Some(seq),
            ..Envelope::default()
        };
        s.apply(&frame("event", 4));
        s.apply(&frame("member_disconnected", 5));
        s.apply(&frame("event", 6));
        s.apply(&frame("event", 6));
        s.apply(&frame("ack", 7));
        assert_eq!(s.last_seq, 6);
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.acked, vec![7]);
        assert_eq!(s.seen.len(), 2);
    }
}
