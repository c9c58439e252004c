//! `holdfast`: the gateway server binary.
//!
//! The only place that reads files, the environment, flags and OS signals. Everything else
//! lives in `holdfast-gateway`, which takes its configuration, listener and shutdown future
//! from here.

mod settings;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

// Parsed once at start-up: the size of the `token` variant costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
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
        /// Development mode (`server.development`): without `auth.hmac_secret`, use a random
        /// secret for this run and print a token. Never in production.
        #[arg(long)]
        dev: bool,
    },
    /// Prints a signed token for a user (development and tests): HS256 with the configured
    /// secret, or signed with a private key file.
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
        /// Sign with this key file instead of `auth.hmac_secret`: a PEM private key (RS*, PS*,
        /// ES*, EdDSA; EC and Ed25519 keys in PKCS#8) or, for HS*, a file holding the secret.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The algorithm to sign with (HS256 without --key, RS256 with it by default).
        #[arg(long)]
        alg: Option<String>,
        /// The `kid` header, naming the key among the gateway's keys.
        #[arg(long)]
        kid: Option<String>,
        /// The `rooms` claim: room names or prefix patterns ending in `*`, comma separated.
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<String>,
        /// The `send` claim: `true`, `false`, or user ids and patterns, comma separated.
        #[arg(long)]
        send: Option<String>,
        /// Make a join token for this room (the `room` claim) instead of a connection token.
        #[arg(long)]
        join_room: Option<String>,
        /// The `device` claim, for `session.single_socket = "device"`.
        #[arg(long)]
        device: Option<String>,
        /// The `iss` claim.
        #[arg(long)]
        iss: Option<String>,
        /// The `aud` claim.
        #[arg(long)]
        aud: Option<String>,
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
        Command::Serve {
            config,
            listen,
            dev,
        } => {
            let mut cfg = match settings::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            cfg.server.development |= dev;
            if let Err(e) = cfg.check_production() {
                return fail(&e.to_string());
            }
            serve(cfg)
        }
        Command::Token {
            user,
            ttl,
            config,
            key,
            alg,
            kid,
            rooms,
            send,
            join_room,
            device,
            iss,
            aud,
        } => {
            let cfg = match settings::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let signer = match key {
                Some(path) => {
                    let material = match std::fs::read(&path) {
                        Ok(m) => m,
                        Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
                    };
                    let alg = alg.unwrap_or_else(|| "RS256".into());
                    let material = if alg.starts_with("HS") {
                        String::from_utf8_lossy(&material)
                            .trim()
                            .as_bytes()
                            .to_vec()
                    } else {
                        material
                    };
                    auth::SigningKey::new(&alg, &material, kid)
                }
                None if cfg.auth.hmac_secret.is_empty() => {
                    return fail(
                        "no `auth.hmac_secret` is configured: set HOLDFAST_AUTH__HMAC_SECRET or \
                         [auth] hmac_secret in the config file, or pass --key (without one, \
                         `serve --dev` prints a development token at start-up)",
                    );
                }
                None => auth::SigningKey::new(
                    alg.as_deref().unwrap_or("HS256"),
                    cfg.auth.hmac_secret.as_bytes(),
                    kid,
                ),
            };
            let signer = match signer {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            let mut claims = serde_json::json!({
                "sub": user,
                "exp": auth::unix_now() + ttl,
            });
            if !rooms.is_empty() {
                claims["rooms"] = serde_json::json!(rooms);
            }
            match send.as_deref() {
                None => {}
                Some("true") => claims["send"] = serde_json::json!(true),
                Some("false") => claims["send"] = serde_json::json!(false),
                Some(list) => {
                    claims["send"] = serde_json::json!(list.split(',').collect::<Vec<_>>())
                }
            }
            if let Some(room) = join_room {
                claims["room"] = serde_json::json!(room);
            }
            if let Some(device) = device {
                claims["device"] = serde_json::json!(device);
            }
            if let Some(iss) = iss {
                claims["iss"] = serde_json::json!(iss);
            }
            if let Some(aud) = aud {
                claims["aud"] = serde_json::json!(aud);
            }
            match signer.sign(&claims) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
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
    if cfg.tracing.enabled() {
        tracing::info!(
            endpoint = %cfg.tracing.endpoint,
            service = %cfg.tracing.service_name,
            "exporting traces over OTLP/HTTP"
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cfg.server.worker_threads > 0 {
        builder.worker_threads(cfg.server.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    if !cfg.auth.has_keys() {
        if cfg.rooms.join.is_none() {
            cfg.rooms.join = Some(holdfast_gateway::config::JoinMode::Open);
            tracing::warn!(
                "development mode: rooms.join defaults to `open`, every user may join every \
                 room; configure a key (rooms.join then defaults to `token`)"
            );
        }
        cfg.auth.hmac_secret = settings::random_secret();
        let token = auth::mint_token(&cfg.auth.hmac_secret, "dev", Duration::from_secs(3600));
        tracing::warn!(
            "development mode (--dev): no auth.hmac_secret configured, using a random secret \
             for this run only; set HOLDFAST_AUTH__HMAC_SECRET for production"
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
        let api = if cfg.api.listen.is_empty() {
            None
        } else {
            match listen(&cfg.api.listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    return fail(&format!(
                        "cannot listen on {} (api.listen): {e}",
                        cfg.api.listen
                    ))
                }
            }
        };
        let listener = holdfast_gateway::Listeners {
            public: listener,
            api,
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
            let mut opts = holdfast_redis::Options::new(&url, &cfg.broker.key_prefix);
            if !cfg.broker.tls_ca_file.is_empty() {
                match std::fs::read(&cfg.broker.tls_ca_file) {
                    Ok(pem) => opts.tls.ca_pem = Some(pem),
                    Err(e) => {
                        return fail(&format!(
                            "broker.tls_ca_file: cannot read {}: {e}",
                            cfg.broker.tls_ca_file
                        ))
                    }
                }
            }
            let cluster = tokio::select! {
                c = holdfast_redis::connect_with_retry(&opts, wait) => c,
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
