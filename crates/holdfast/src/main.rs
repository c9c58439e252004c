//! `holdfast`: the gateway server binary.
//!
//! The only place that reads files, the environment, flags and OS signals. Everything else
//! lives in `holdfast-gateway`, which takes its configuration, listener and shutdown future
//! from here.

mod settings;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holdfast_gateway::{auth, Config, DrainOutcome};
use tokio::sync::Notify;

/// Holdfast: a real-time WebSocket gateway.
#[derive(Parser)]
#[command(name = "holdfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway until SIGTERM or SIGINT, then drains.
    Serve {
        /// TOML configuration file; `HOLDFAST_*` variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Prints a signed token for a user, using the configured secret (development and tests).
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints the effective configuration (secrets redacted), or the offending key.
    Config {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },
    /// Prints the version.
    Version,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validates a configuration file completely (values, addresses, TLS files), with the
    /// `HOLDFAST_*` overrides applied as `serve` would; exits 2 naming the file and key on error.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => {
            let mut cfg = match settings::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            serve(cfg)
        }
        Command::Token { user, ttl, config } => {
            let cfg = match settings::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if cfg.auth.hmac_secret.is_empty() {
                return fail(
                    "no `auth.hmac_secret` is configured: set HOLDFAST_AUTH__HMAC_SECRET or \
                     [auth] hmac_secret in the config file (without one, `serve` prints a \
                     development token at start-up)",
                );
            }
            println!(
                "{}",
                auth::mint_token(&cfg.auth.hmac_secret, &user, Duration::from_secs(ttl))
            );
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("holdfast {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config {
            action: Some(ConfigAction::Check { file }),
            ..
        } => match settings::check(&file) {
            Ok(warnings) => {
                for w in warnings {
                    println!("warning: {w}");
                }
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Config {
            config,
            action: None,
        } => match settings::load(config.as_deref()) {
            Ok(cfg) => match settings::render_redacted(&cfg) {
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("holdfast: {message}");
    ExitCode::from(2)
}

fn serve(mut cfg: Config) -> ExitCode {
    init_logs(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    if cfg.auth.hmac_secret.is_empty() {
        cfg.auth.hmac_secret = settings::random_secret();
        let token = auth::mint_token(&cfg.auth.hmac_secret, "dev", Duration::from_secs(3600));
        tracing::warn!(
            "development mode: no auth.hmac_secret configured, using a random secret for this \
             run only; set HOLDFAST_AUTH__HMAC_SECRET for production"
        );
        let scheme = if cfg.server.tls.enabled() {
            "wss"
        } else {
            "ws"
        };
        eprintln!(
            "\nDevelopment token for user `dev` (valid 1 h, this run only):\n  {token}\n\
             Connect with: {scheme}://{}/ws?token=<token>\n",
            cfg.server.listen
        );
    }
    if cfg.limits.allowed_origins.is_empty() {
        tracing::info!(
            "limits.allowed_origins is empty: browser upgrades from every origin are accepted"
        );
    }
    runtime.block_on(async move {
        let listener = match listen(&cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("cannot listen on {}: {e}", cfg.server.listen)),
        };
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let reload = Arc::new(Notify::new());
        tokio::spawn(reload_on_hangup(reload.clone()));
        let result = if cfg.broker.url.is_empty() {
            let broker = holdfast_gateway::MemoryBroker::new();
            holdfast_gateway::serve_with_reload(cfg, listener, broker, None, shutdown, reload).await
        } else {
            let url = cfg.broker.url.clone();
            let shown = holdfast_redis::redact_url(&url);
            let wait = Duration::from_secs(cfg.broker.connect_timeout_secs);
            let cluster = tokio::select! {
                c = holdfast_redis::connect_with_retry(&url, &cfg.broker.key_prefix, wait) => c,
                _ = &mut shutdown => return ExitCode::SUCCESS,
            };
            let cluster = match cluster {
                Ok(c) => c,
                Err(e) => return fail(&format!("cannot reach Redis at {shown}: {e}")),
            };
            tracing::info!(redis = %shown, "cluster mode: rooms and users live in Redis");
            holdfast_gateway::serve_with_reload(
                cfg,
                listener,
                cluster.broker,
                Some(cluster.store),
                shutdown,
                reload,
            )
            .await
        };
        match result {
            Ok(DrainOutcome::Complete) => ExitCode::SUCCESS,
            Ok(DrainOutcome::GraceExpired) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        }
    })
}

/// Binds with a deep accept queue: when every client of a node reconnects at once (after a
/// network blip or a neighbour's drain), the default of 1,024 overflows and late clients wait
/// for the kernel's SYN retry.
async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// Logs go to stderr: one JSON object per line with `log.format = "json"`, otherwise
/// human-readable lines, coloured only when stderr is a terminal (never in files or journald).
fn init_logs(cfg: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Notifies `reload` on every SIGHUP (the TLS certificate and key are read again).
async fn reload_on_hangup(reload: Arc<Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the TLS certificate");
            reload.notify_one();
        }
    }
    #[cfg(not(unix))]
    drop(reload);
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
