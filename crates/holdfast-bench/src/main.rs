//! `holdfast-bench`: loads Holdfast or a peer server over loopback and reports what it costs.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use holdfast_bench::driver::{self, Plan, ServerProcess};
use holdfast_bench::load::Scenario;
use holdfast_bench::net::raise_fd_limit;
use holdfast_bench::probe::ServerProbe;
use holdfast_bench::report::{self, RunResult};
use holdfast_bench::target::{Endpoint, Target};

/// Connections one load process keeps: the hard limit is 20,000 descriptors per process, and a
/// few hundred are needed for everything else.
const CONNECTIONS_PER_PROC: usize = 18_000;

#[derive(Parser)]
#[command(
    name = "holdfast-bench",
    version,
    about = "Load generator and side-by-side benchmark for Holdfast and peer servers (loopback only)",
    after_help = "Examples:\n  \
        holdfast-bench idle --connections 10000 --server-pid $(pgrep -n holdfast) --json idle.json\n  \
        holdfast-bench fanout --rooms 20 --members 100 --rate 1000 --size 128\n  \
        holdfast-bench echo --target ws --url ws://127.0.0.1:9001/ws\n  \
        holdfast-bench storm --rooms 10 --members 50\n  \
        holdfast-bench compare holdfast.json ws.json socketio.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N authenticated connections held open, one room membership each: connect rate, server
    /// RSS per connection, server CPU while idle (heartbeat cost).
    Idle(LoadArgs),
    /// R rooms x M members, P publishes/s of S bytes: deliveries/s, publish-to-receive latency,
    /// server CPU per delivery.
    Fanout(LoadArgs),
    /// Every connection sends to itself through the server, one message in flight: round trips/s,
    /// round-trip latency, server CPU per round trip.
    Echo(LoadArgs),
    /// Fan-out while short-lived connections join and leave at --churn-rate per second.
    Churn(LoadArgs),
    /// Fan-out, then every connection drops at once and resumes with `reconnect`: time to full
    /// recovery, events lost and duplicated (Holdfast only).
    Storm(LoadArgs),
    /// Prints the headline figures of result files side by side, with ratios to the first.
    Compare {
        /// The reference result (usually Holdfast).
        base: PathBuf,
        /// Results to compare with it.
        others: Vec<PathBuf>,
    },
    /// Runs the plain tokio-tungstenite broadcast peer.
    PeerTungstenite {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:9003")]
        listen: SocketAddr,
    },
    /// Internal: one load share in a child process.
    #[command(hide = true)]
    Child,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Server under test.
    #[arg(long, value_enum, default_value_t = Target::Holdfast)]
    target: Target,
    /// WebSocket URL of the server (loopback only); defaults to the target's usual port.
    #[arg(long)]
    url: Option<String>,
    /// More nodes of the same cluster (loopback only): connections are spread over `--url` and
    /// these by user, so one room's members sit on several nodes.
    #[arg(long = "also-url")]
    also_url: Vec<String>,
    /// Shared HMAC secret used to sign tokens (Holdfast).
    #[arg(
        long,
        env = "HOLDFAST_AUTH__HMAC_SECRET",
        default_value = "holdfast-bench-secret",
        hide_env_values = true
    )]
    secret: String,
    /// Long-lived connections (idle, echo; fan-out scenarios use rooms x members).
    #[arg(long)]
    connections: Option<usize>,
    /// Rooms (fanout, churn, storm).
    #[arg(long)]
    rooms: Option<usize>,
    /// Members per room.
    #[arg(long)]
    members: Option<usize>,
    /// Publishes per second, all rooms together.
    #[arg(long)]
    rate: Option<f64>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Length of the measured window in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Load processes; 0 picks one per 18,000 connections.
    #[arg(long, default_value_t = 0)]
    procs: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    /// Connection attempts in flight per load process.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// New connections per second per load process during the ramp (0: unpaced).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Longest the ramp may take, seconds.
    #[arg(long, default_value_t = 180.0)]
    ramp_timeout: f64,
    /// Wait between the end of the ramp and the server memory sample, seconds.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Churn: short-lived connections per second.
    #[arg(long, default_value_t = 100.0)]
    churn_rate: f64,
    /// Churn: how long each short-lived connection stays, milliseconds.
    #[arg(long, default_value_t = 500)]
    churn_hold_ms: u64,
    /// Storm: seconds into the window at which every connection drops.
    #[arg(long, default_value_t = 3.0)]
    storm_at: f64,
    /// Pid of the server, to measure its RSS and CPU through /proc.
    #[arg(long, conflicts_with = "server_cmd")]
    server_pid: Option<u32>,
    /// Command starting the server (run with `sh -c 'exec …'`); the tool measures and stops it.
    #[arg(long)]
    server_cmd: Option<String>,
    /// Label stored in the JSON result.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Default (connections-or-rooms, members, rate, duration) per scenario.
fn defaults(scenario: Scenario) -> (usize, usize, f64, f64) {
    match scenario {
        Scenario::Idle => (5_000, 10, 0.0, 10.0),
        Scenario::Echo => (100, 10, 0.0, 10.0),
        Scenario::Fanout => (20, 100, 200.0, 10.0),
        Scenario::Churn => (20, 50, 100.0, 10.0),
        Scenario::Storm => (10, 50, 100.0, 8.0),
    }
}

fn plan(scenario: Scenario, a: &LoadArgs) -> anyhow::Result<Plan> {
    let url = a.url.as_deref().unwrap_or(a.target.default_url());
    let endpoint: Endpoint = url.parse()?;
    let extra_endpoints = a
        .also_url
        .iter()
        .map(|u| u.parse::<Endpoint>())
        .collect::<Result<Vec<_>, _>>()?;
    if scenario == Scenario::Storm && !a.target.resumes() {
        bail!("storm needs a server that resumes sessions; only --target holdfast does");
    }
    let (first, members, rate, duration) = defaults(scenario);
    let members = a.members.unwrap_or(members).max(1);
    let connections = match scenario {
        Scenario::Idle | Scenario::Echo => a.connections.unwrap_or(first),
        _ => match (a.rooms, a.connections) {
            (Some(rooms), _) => rooms * members,
            (None, Some(c)) => c,
            (None, None) => first * members,
        },
    };
    if connections == 0 {
        bail!("nothing to do: zero connections");
    }
    let procs = match a.procs {
        0 => connections.div_ceil(CONNECTIONS_PER_PROC),
        n => n,
    };
    Ok(Plan {
        scenario,
        target: a.target,
        endpoint,
        extra_endpoints,
        secret: a.secret.clone(),
        label: a.label.clone(),
        connections,
        group: members,
        publish_rate: a.rate.unwrap_or(rate),
        size: a.size.max(24),
        duration_s: a.duration.unwrap_or(duration),
        procs,
        source_addrs: a.source_addrs,
        connect_concurrency: a.connect_concurrency,
        connect_rate: a.connect_rate,
        ramp_timeout_s: a.ramp_timeout,
        settle_s: a.settle,
        churn_rate: a.churn_rate,
        churn_hold_ms: a.churn_hold_ms,
        storm_at_s: a.storm_at,
        progress: !a.quiet,
    })
}

async fn load(scenario: Scenario, args: LoadArgs) -> anyhow::Result<()> {
    let plan = plan(scenario, &args)?;
    let limit = raise_fd_limit().context("raising the open files limit")?;
    let per_proc = plan.connections.div_ceil(plan.procs.max(1));
    if per_proc as u64 + 256 > limit {
        eprintln!(
            "warning: {per_proc} connections per process but the open files limit is {limit}; \
             use --procs {}",
            plan.connections
                .div_ceil(limit.saturating_sub(256).max(1) as usize)
        );
    }
    let server = match &args.server_cmd {
        Some(cmd) => Some(ServerProcess::start(cmd, plan.endpoint.socket_addr()).await?),
        None => None,
    };
    let pid = args
        .server_pid
        .or(server.as_ref().and_then(ServerProcess::pid));
    let probe = pid
        .map(ServerProbe::new)
        .transpose()
        .context("cannot read the server's /proc entries")?;
    let result = driver::run(&plan, probe.as_ref()).await;
    if let Some(server) = server {
        server.stop().await;
    }
    let result = result?;
    print!("{}", report::table(&result));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(storm) = &result.storm {
        if storm.lost > 0 || storm.duplicated > 0 || storm.failed > 0 {
            bail!(
                "storm: {} lost, {} duplicated, {} failed to resume (all must be 0)",
                storm.lost,
                storm.duplicated,
                storm.failed
            );
        }
    }
    Ok(())
}

fn read_result(path: &PathBuf) -> anyhow::Result<RunResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Idle(a) => load(Scenario::Idle, a).await,
        Cmd::Fanout(a) => load(Scenario::Fanout, a).await,
        Cmd::Echo(a) => load(Scenario::Echo, a).await,
        Cmd::Churn(a) => load(Scenario::Churn, a).await,
        Cmd::Storm(a) => load(Scenario::Storm, a).await,
        Cmd::Compare { base, others } => {
            let base = read_result(&base)?;
            let others = others
                .iter()
                .map(read_result)
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", report::compare(&base, &others));
            Ok(())
        }
        Cmd::PeerTungstenite { listen } => {
            if !listen.ip().is_loopback() {
                bail!("the peer listens on loopback only, not {listen}");
            }
            raise_fd_limit().context("raising the open files limit")?;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            eprintln!("peer-tungstenite listening on {listen}");
            holdfast_bench::peer::serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
        Cmd::Child => {
            raise_fd_limit().context("raising the open files limit")?;
            driver::child_main().await
        }
    }
}
