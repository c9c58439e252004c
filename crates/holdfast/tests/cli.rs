//! The `holdfast` binary as a user runs it: config, token, and serve with a SIGTERM drain.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use holdfast_testkit::free_port;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

fn holdfast(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn config_prints_effective_values_with_secret_redacted() {
    let out = holdfast(
        &["config"],
        &[
            ("HOLDFAST_AUTH__HMAC_SECRET", "very-secret-value"),
            ("HOLDFAST_HEARTBEAT__PING_INTERVAL_MS", "5000"),
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ping_interval_ms = 5000"), "{text}");
    assert!(text.contains("pong_timeout_ms = 20000"));
    assert!(text.contains("max_message_bytes = 65536"));
    assert!(!text.contains("very-secret-value"));
    assert!(text.contains("(redacted)"));
}

#[test]
fn config_rejects_invalid_values_naming_the_key() {
    let out = holdfast(
        &["config"],
        &[("HOLDFAST_LIMITS__MAX_MESSAGE_BYTES", "lots")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("limits.max_message_bytes"), "{err}");

    let out = holdfast(
        &["config"],
        &[("HOLDFAST_HEARTBEAT__PONG_TIMEOUT_MS", "10")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("heartbeat.pong_timeout_ms"));

    let dir = std::env::temp_dir().join(format!("holdfast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[heartbeat]\nping_intervall_ms = 3\n").unwrap();
    let out = holdfast(&["config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("ping_intervall_ms"));
}

#[tokio::test]
async fn token_requires_a_secret_and_signs_with_it() {
    let out = holdfast(&["token", "--user", "u1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = holdfast(
        &["token", "--user", "u1", "--ttl", "60"],
        &[("HOLDFAST_AUTH__HMAC_SECRET", "s")],
    );
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let v = holdfast_gateway::auth::Verifier::new("s", 0);
    assert_eq!(v.verify(token.trim()).await.unwrap().sub, "u1");
}

/// `serve` without a secret: refused unless development mode is asked for, and always
/// refused for a cluster (its nodes would each draw their own secret).
#[test]
fn serve_without_a_secret_refuses_to_start_unless_in_development_mode() {
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("HOLDFAST_AUTH__HMAC_SECRET")
            .env("HOLDFAST_API__LISTEN", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&["serve", "--listen", &listen], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("auth.hmac_secret") && err.contains("--dev"),
        "{err}"
    );
    let out = run(
        &["serve", "--dev", "--listen", &listen],
        &[("HOLDFAST_BROKER__URL", "redis://127.0.0.1:1/")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("share one secret"), "{err}");
}

#[tokio::test]
async fn serve_drains_on_sigterm_and_exits_zero() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let api_port = free_port();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", &listen])
        .env("HOLDFAST_AUTH__HMAC_SECRET", "cli-secret")
        .env("HOLDFAST_API__LISTEN", format!("127.0.0.1:{api_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let token = holdfast_gateway::auth::mint_token("cli-secret", "u", Duration::from_secs(60));
    let url = format!("ws://{listen}/ws?token={token}");
    let mut ws = None;
    for _ in 0..100 {
        if let Ok((s, _)) = tokio_tungstenite::connect_async(&url).await {
            ws = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = ws.expect("server came up");
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"welcome\""));
    // The internal listener is up: metrics without a key, the API only with one.
    let api: std::net::SocketAddr = ([127, 0, 0, 1], api_port).into();
    assert_eq!(holdfast_testkit::http_status(api, "/metrics").await, 200);
    assert_eq!(
        holdfast_testkit::http_status(api, "/api/v1/nodes").await,
        401
    );
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut saw_notice = false;
    let mut close_code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match msg {
            Message::Text(t) if t.contains("\"server_shutdown\"") => saw_notice = true,
            Message::Close(f) => {
                close_code = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert!(saw_notice);
    assert_eq!(close_code, Some(1001));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn token_signs_with_a_private_key_and_adds_permission_claims() {
    let keys = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../holdfast-gateway/tests/fixtures/keys"
    );
    let out = holdfast(
        &[
            "token",
            "--user",
            "u2",
            "--key",
            &format!("{keys}/ec1.key"),
            "--alg",
            "ES256",
            "--kid",
            "ec-1",
            "--rooms",
            "lobby,game-*",
            "--send",
            "true",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let cfg = holdfast_gateway::config::AuthConfig {
        keys: vec![holdfast_gateway::config::KeyConfig {
            kid: "ec-1".into(),
            alg: "ES256".into(),
            public_key: std::fs::read_to_string(format!("{keys}/ec1.pub")).unwrap(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = holdfast_gateway::auth::Verifier::from_config(&cfg);
    let claims = v.verify(token.trim()).await.unwrap();
    assert_eq!(claims.sub, "u2");
    assert_eq!(
        claims.rooms,
        Some(vec!["lobby".to_owned(), "game-*".to_owned()])
    );
    assert_eq!(
        claims.send,
        Some(holdfast_gateway::auth::SendClaim::All(true))
    );

    let out = holdfast(
        &["token", "--user", "u2", "--join-room", "dm-1"],
        &[("HOLDFAST_AUTH__HMAC_SECRET", "s")],
    );
    assert!(out.status.success());
    let v = holdfast_gateway::auth::Verifier::new("s", 0);
    let claims = v
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .await
        .unwrap();
    assert_eq!(claims.room.as_deref(), Some("dm-1"));
}

/// Variables with the prefix but without the section separator are not configuration: the
/// `HOLDFAST_PORT=tcp://...` Kubernetes injects for a Service named `holdfast` is ignored.
#[test]
fn unrelated_holdfast_variables_are_ignored() {
    let out = holdfast(
        &["config"],
        &[
            ("HOLDFAST_PORT", "tcp://10.96.0.12:8080"),
            ("HOLDFAST_SERVICE_HOST", "10.96.0.12"),
            ("HOLDFAST_AUTH__HMAC_SECRET", "s"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
