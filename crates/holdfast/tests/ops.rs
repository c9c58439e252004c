//! Operations, checked against real processes: the `/metrics` exposition of a cluster node
//! parsed with a Prometheus text-format parser, the dashboard and alert rules checked against
//! that scrape, session and auth-failure log lines, `wss://` with a self-signed certificate
//! reloaded on SIGHUP, and per-IP limits behind a trusted proxy.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use holdfast_client::{Client as SdkClient, ClientConfig};
use holdfast_testkit::{http_get, token, try_connect, Client, Redis, WAIT};
use serde_json::{json, Value};
use support::{repo_root, Node, BIN};

/// One sample line of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
}

/// A strict reading of the Prometheus text format 0.0.4: every line is a `# HELP`, a
/// `# TYPE` or a sample of a family whose TYPE came first; names and label names are valid,
/// label values are quoted with only the three legal escapes, values are floats; no family is
/// declared twice and a family's samples are contiguous.
fn strict_parse(text: &str) -> Result<Vec<Sample>, String> {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().ok_or_else(|| err("comment without a name"))?;
            if !valid_name(name) {
                return Err(err("invalid metric name"));
            }
            if kind == "TYPE" {
                let ty = parts.next().ok_or_else(|| err("TYPE without a type"))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                    return Err(err("unknown type"));
                }
                if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                    return Err(err("family declared twice"));
                }
                if let Some(prev) = current.replace(name.to_owned()) {
                    finished.insert(prev);
                }
            } else if kind != "HELP" {
                return Err(err("unknown comment kind"));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(err("stray line"));
        }
        let (name_end, labels, rest) = match line.find('{') {
            Some(b) => {
                let close = line.rfind('}').ok_or_else(|| err("unclosed labels"))?;
                (
                    b,
                    parse_labels(&line[b + 1..close]).map_err(|m| err(&m))?,
                    &line[close + 1..],
                )
            }
            None => {
                let sp = line
                    .find(' ')
                    .ok_or_else(|| err("sample without a value"))?;
                (sp, Vec::new(), &line[sp..])
            }
        };
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(err("invalid sample name"));
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| err("no value"))?;
        if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
            return Err(err("value is not a float"));
        }
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields"));
        }
        let family = current
            .as_deref()
            .ok_or_else(|| err("sample before any TYPE"))?;
        let ty = &types[family];
        let belongs = name == family
            || (ty == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .iter()
                .any(|n| n == name));
        if !belongs || finished.contains(name) {
            return Err(err("sample outside its family's block"));
        }
        if ty == "histogram" && name.ends_with("_bucket") && !labels.iter().any(|(k, _)| k == "le")
        {
            return Err(err("bucket without le"));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
        });
    }
    Ok(samples)
}

fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid label name {key:?}"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err("label value must be quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    _ => return Err("illegal escape".into()),
                },
                Some('\n') | None => return Err("unterminated label value".into()),
                Some(c) => value.push(c),
            }
        }
        out.push((key, value));
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
    Ok(out)
}

/// Every `holdfast_*` metric name in `text`.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("holdfast_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` in a Grafana dashboard.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_cluster_node_scrape_parses_and_covers_the_dashboard_and_alerts() {
    let redis = Redis::start();
    let node = Node::start(&[("HOLDFAST_BROKER__URL", redis.url())]).await;
    let addr = node.addr;
    // Traffic that touches every family: sessions, a room, an error frame, a refused token,
    // a close, a fallback session.
    let (mut a, _) = Client::connect(addr, "alice").await;
    a.join("lobby").await;
    a.send(json!({"type":"publish","room":"lobby","data":{"n":1}}))
        .await;
    a.expect("event").await;
    a.send_text("{not json").await;
    a.expect_error("bad_json").await;
    assert_eq!(
        try_connect(addr, "?token=forged", &[]).await.err(),
        Some(401)
    );
    let (b, _) = Client::connect(addr, "bob").await;
    b.close().await;
    let (status, _) = http_get(addr, &format!("/poll?token={}", token("carol"))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let samples = strict_parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    // And the same text through the prometheus-parse crate, which must see every sample.
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let parsed_series: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            // `_sum` and `_count` come as samples of their own.
            prometheus_parse::Value::Histogram(b) => b.len(),
            prometheus_parse::Value::Summary(q) => q.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed_series, samples.len(), "parsers disagree");

    let names: BTreeSet<String> = samples.iter().map(|s| s.name.clone()).collect();
    for s in &samples {
        assert!(s.name.starts_with("holdfast_"), "unprefixed {}", s.name);
    }
    for family in [
        "holdfast_connections_active",
        "holdfast_connections_opened_total",
        "holdfast_close_total",
        "holdfast_auth_failures_total",
        "holdfast_upgrades_rejected_total",
        "holdfast_messages_sent_total",
        "holdfast_errors_total",
        "holdfast_fanout_lag_seconds_bucket",
        "holdfast_heartbeat_rtt_seconds_count",
        "holdfast_process_cpu_seconds_total",
        "holdfast_process_resident_memory_bytes",
        "holdfast_process_open_fds",
        "holdfast_process_max_fds",
        "holdfast_redis_connected",
        "holdfast_redis_op_seconds_bucket",
        "holdfast_build_info",
    ] {
        assert!(names.contains(family), "missing {family}");
    }
    // Labels stay bounded: transports and close codes take only known values.
    for s in &samples {
        for (k, v) in &s.labels {
            match k.as_str() {
                "transport" => assert!(["websocket", "sse", "longpoll"].contains(&v.as_str())),
                "code" if s.name == "holdfast_close_total" => {
                    assert!(v == "other" || v.parse::<u16>().is_ok(), "{v}")
                }
                _ => {}
            }
        }
    }
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or(f64::NAN)
    };
    let ws = [("transport", "websocket")];
    assert_eq!(value("holdfast_connections_active", &ws), 1.0);
    assert_eq!(
        value("holdfast_connections_active", &[("transport", "longpoll")]),
        1.0
    );
    assert_eq!(
        value("holdfast_connections_active", &[("transport", "sse")]),
        0.0
    );
    assert_eq!(
        value(
            "holdfast_close_total",
            &[("transport", "websocket"), ("code", "1000")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "holdfast_auth_failures_total",
            &[("transport", "websocket"), ("reason", "auth_failed")]
        ),
        1.0
    );
    assert_eq!(value("holdfast_redis_connected", &[]), 1.0);
    assert!(value("holdfast_process_open_fds", &[]) > 5.0);
    assert!(value("holdfast_process_max_fds", &[]) >= value("holdfast_process_open_fds", &[]));
    assert!(value("holdfast_process_resident_memory_bytes", &[]) > 1e6);

    // The dashboard and alert rules use only names this scrape has.
    let dir = repo_root().join("deploy/observability");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("holdfast-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let mut used = referenced_names(&exprs.join("\n"));
    let from_alerts = referenced_names(&alerts);
    assert!(from_alerts.len() >= 8, "{from_alerts:?}");
    used.extend(from_alerts);
    let unknown: Vec<_> = used.difference(&names).collect();
    assert!(unknown.is_empty(), "not exported: {unknown:?}");
    a.close().await;
}

#[tokio::test]
async fn sessions_and_auth_failures_are_logged_once_each_and_floods_are_capped() {
    let node = Node::start(&[
        ("HOLDFAST_LOG__FORMAT", "json".into()),
        ("HOLDFAST_LOG__AUTH_FAILURES_PER_SEC", "5".into()),
    ])
    .await;
    let addr = node.addr;
    let (a, _) = Client::connect(addr, "alice").await;
    let started = node
        .wait_line("session started", |l| l.contains("session started"))
        .await;
    let v: Value = serde_json::from_str(&started).unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["peer"], "127.0.0.1");
    assert_eq!(v["transport"], "websocket");
    assert_eq!(v["level"], "INFO");
    a.close().await;
    let ended = node
        .wait_line("session ended", |l| {
            l.contains("session ended") && l.contains("alice")
        })
        .await;
    let v: Value = serde_json::from_str(&ended).unwrap();
    assert_eq!(v["code"], 1000);
    assert!(v["duration_ms"].as_u64().is_some(), "{v}");
    assert_eq!(v["peer"], "127.0.0.1");

    // 40 forged tokens within a second: 5 lines, then one summary with the rest.
    for _ in 0..40 {
        assert_eq!(
            try_connect(addr, "?token=forged", &[]).await.err(),
            Some(401)
        );
    }
    // The flood may straddle a one-second window: count every line and every summary.
    let tally = |lines: &[String]| -> (u64, u64) {
        let logged = lines
            .iter()
            .filter(|l| l.contains("authentication failed\""))
            .count() as u64;
        let suppressed = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["suppressed"].as_u64())
            .sum::<u64>();
        (logged, suppressed)
    };
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = tally(&node.lines());
        if counts.0 + counts.1 == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (logged, suppressed) = counts;
    assert_eq!(logged + suppressed, 40, "{:#?}", node.lines());
    assert!(suppressed >= 30, "{logged} lines, {suppressed} suppressed");
    assert!(logged <= 10, "{logged} lines");
    let line = node
        .lines()
        .into_iter()
        .find(|l| l.contains("authentication failed\""))
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["reason"], "auth_failed");
    assert_eq!(v["peer"], "127.0.0.1");
    // Every line is JSON and none carries a terminal escape.
    for l in node.lines() {
        assert!(!l.contains('\u{1b}'), "{l}");
        assert!(serde_json::from_str::<Value>(&l).is_ok(), "{l}");
    }
}

#[tokio::test]
async fn human_logs_have_no_colour_when_not_a_terminal() {
    let node = Node::start(&[]).await;
    let (a, _) = Client::connect(node.addr, "alice").await;
    a.close().await;
    let line = node
        .wait_line("session ended", |l| l.contains("session ended"))
        .await;
    assert!(
        line.contains("INFO")
            && (line.contains("transport=\"websocket\"") || line.contains("transport=websocket")),
        "{line}"
    );
    for l in node.lines() {
        assert!(!l.contains('\u{1b}'), "{l:?}");
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, as (cert PEM, key PEM, DER).
fn self_signed() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (
        ck.cert.pem(),
        ck.key_pair.serialize_pem(),
        ck.cert.der().clone(),
    )
}

fn trusting(der: &rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn wss_connect(
    addr: SocketAddr,
    user: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<SdkClient, String> {
    let mut config = ClientConfig::new(format!("wss://{addr}/ws"), token(user)).with_tls(tls);
    config.connect_timeout = WAIT;
    SdkClient::connect(config)
        .await
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn wss_with_a_self_signed_certificate_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("holdfast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c1, k1, der1) = self_signed();
    std::fs::write(&cert, c1).unwrap();
    std::fs::write(&key, k1).unwrap();
    let node = Node::start(&[
        ("HOLDFAST_SERVER__TLS__CERT", cert.display().to_string()),
        ("HOLDFAST_SERVER__TLS__KEY", key.display().to_string()),
        ("HOLDFAST_SERVER__TLS__RELOAD_INTERVAL_SECS", "0".into()),
    ])
    .await;
    let addr = node.addr;

    // The Rust client over wss:// trusting the first certificate: a full session.
    let alice = wss_connect(addr, "alice", trusting(&der1)).await.unwrap();
    let m = alice.join("lobby").await.unwrap();
    assert_eq!(m.room, "lobby");
    alice
        .publish("lobby", json!({"over": "tls"}))
        .await
        .unwrap();
    // Plain ws:// to the TLS port gets no upgrade.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token("x")))
            .await
            .is_err()
    );

    // A new pair on disk, then SIGHUP: new connections get it, the open session stays.
    let (c2, k2, der2) = self_signed();
    std::fs::write(&cert, c2).unwrap();
    std::fs::write(&key, k2).unwrap();
    node.signal("HUP");
    node.wait_line("certificate loaded", |l| {
        l.contains("TLS certificate loaded")
    })
    .await;
    let bob = wss_connect(addr, "bob", trusting(&der2)).await.unwrap();
    bob.join("lobby").await.unwrap();
    let err = wss_connect(addr, "carol", trusting(&der1))
        .await
        .err()
        .unwrap();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    alice
        .publish("lobby", json!({"still": "open"}))
        .await
        .unwrap();

    // A broken file on reload keeps serving the last good pair.
    std::fs::write(&key, "not a key").unwrap();
    node.signal("HUP");
    node.wait_line("reload failure", |l| l.contains("TLS reload failed"))
        .await;
    wss_connect(addr, "dave", trusting(&der2))
        .await
        .unwrap()
        .close()
        .await;
    alice.close().await;
    bob.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_files_are_reloaded_when_they_change() {
    let dir = std::env::temp_dir().join(format!("holdfast-tls-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c1, k1, der1) = self_signed();
    std::fs::write(&cert, c1).unwrap();
    std::fs::write(&key, k1).unwrap();
    let node = Node::start(&[
        ("HOLDFAST_SERVER__TLS__CERT", cert.display().to_string()),
        ("HOLDFAST_SERVER__TLS__KEY", key.display().to_string()),
        ("HOLDFAST_SERVER__TLS__RELOAD_INTERVAL_SECS", "1".into()),
    ])
    .await;
    wss_connect(node.addr, "alice", trusting(&der1))
        .await
        .unwrap()
        .close()
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (c2, k2, der2) = self_signed();
    std::fs::write(&key, k2).unwrap();
    std::fs::write(&cert, c2).unwrap();
    node.wait_line("certificate loaded", |l| {
        l.contains("TLS certificate loaded")
    })
    .await;
    wss_connect(node.addr, "alice", trusting(&der2))
        .await
        .unwrap()
        .close()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn per_ip_limits_use_the_forwarded_address_only_from_trusted_proxies() {
    let node = Node::start(&[
        ("HOLDFAST_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]".into()),
        ("HOLDFAST_LIMITS__MAX_CONNECTIONS_PER_IP", "1".into()),
        ("HOLDFAST_LOG__FORMAT", "json".into()),
    ])
    .await;
    let q = format!("?token={}", token("u1"));
    let first = try_connect(node.addr, &q, &[("x-forwarded-for", "203.0.113.1")])
        .await
        .unwrap();
    let q2 = format!("?token={}", token("u2"));
    // Another client address behind the same proxy is its own budget...
    let second = try_connect(node.addr, &q2, &[("x-forwarded-for", "203.0.113.2")])
        .await
        .unwrap();
    // ...and the same one is refused, even when it prepends a forged hop.
    let q3 = format!("?token={}", token("u3"));
    let refused = try_connect(
        node.addr,
        &q3,
        &[("x-forwarded-for", "198.51.100.7, 203.0.113.1")],
    )
    .await;
    assert_eq!(refused.err(), Some(429));
    let line = node
        .wait_line("session started", |l| {
            l.contains("session started") && l.contains("u1")
        })
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["peer"], "203.0.113.1");
    drop((first, second));
}

#[test]
fn config_check_validates_addresses_tls_files_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("holdfast-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |body: &str| {
        let f = dir.join("c.toml");
        std::fs::write(&f, body).unwrap();
        let out = Command::new(BIN)
            .args(["config", "check", f.to_str().unwrap()])
            .env_remove("HOLDFAST_AUTH__HMAC_SECRET")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run("[server]\nlisten = \"not-an-address\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("server.listen") && err.contains("c.toml"),
        "{err}"
    );
    let (code, _, err) = run("[server]\nlisten = \"127.0.0.1:8080\"\nlisten_backlog = 5\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("c.toml") && err.contains("listen_backlog"),
        "{err}"
    );
    let (code, _, err) =
        run("[server.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("server.tls") && err.contains("/nonexistent/c.pem"),
        "{err}"
    );
    let (code, out, _) = run("[server]\nlisten = \"0.0.0.0:8080\"\n[auth]\nhmac_secret = \"s\"\n");
    assert_eq!(code, Some(0));
    assert!(out.contains("ok"), "{out}");
    // The shipped example configuration is valid.
    let example = repo_root().join("deploy/holdfast.toml");
    let out = Command::new(BIN)
        .args(["config", "check", example.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("holdfast {}", env!("CARGO_PKG_VERSION"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_can_be_kept_off_the_public_listener() {
    let node = Node::start(&[("HOLDFAST_METRICS__PUBLIC", "false".into())]).await;
    assert_eq!(http_get(node.addr, "/metrics").await.0, 404);
    assert_eq!(http_get(node.addr, "/healthz").await.0, 200);
    // The same rendering, mounted on a listener of the embedder's choice.
    let mut cfg = holdfast_gateway::Config::default();
    cfg.auth.hmac_secret = "s".into();
    cfg.metrics.public = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = holdfast_gateway::Gateway::start(cfg, listener)
        .await
        .unwrap();
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr = internal.local_addr().unwrap();
    let app = holdfast_gateway::metrics::router::<()>(gw.node().clone());
    let server = tokio::spawn(async move { axum_serve(internal, app).await });
    let (status, body) = http_get(internal_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("holdfast_connections_active{transport=\"websocket\"} 0"));
    server.abort();
    gw.shutdown().await;
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}
