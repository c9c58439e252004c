//! Tokens signed with RSA, EC and Ed25519 keys, verified from a JWKS served by a local HTTP
//! server: caching, key rotation, a JWKS server that goes down, and static PEM keys.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_gateway::auth::{unix_now, SigningKey};
use holdfast_gateway::config::KeyConfig;
use holdfast_testkit::{HttpStub, StubReply, StubRequest};
use serde_json::{json, Value};
use support::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap()
}

fn sign(alg: &str, key: &str, kid: &str, user: &str) -> String {
    SigningKey::new(
        alg,
        fixture(&format!("{key}.key")).as_bytes(),
        Some(kid.into()),
    )
    .and_then(|k| k.sign(&json!({"sub": user, "exp": unix_now() + 600})))
    .unwrap()
}

/// What the JWKS server serves: the key set, or 503 while `down`.
#[derive(Default)]
struct JwksState {
    keys: Vec<Value>,
    down: bool,
}

async fn jwks_server(state: Arc<Mutex<JwksState>>) -> HttpStub {
    HttpStub::start(move |_req: StubRequest| -> StubReply {
        let s = state.lock().unwrap();
        let reply = if s.down {
            (503, "{}".to_owned())
        } else {
            (200, json!({ "keys": s.keys }).to_string())
        };
        Box::pin(async move { reply })
    })
    .await
}

async fn welcomed(addr: std::net::SocketAddr, token: &str) -> Result<String, u16> {
    let mut c = try_connect(addr, &format!("?token={token}"), &[]).await?;
    let w = c.expect("welcome").await;
    Ok(w["user_id"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn rs256_es256_and_eddsa_from_a_jwks_with_rotation_and_an_outage() {
    let state = Arc::new(Mutex::new(JwksState {
        keys: vec![jwk("rsa1"), jwk("ec1"), jwk("ed1")],
        down: false,
    }));
    let server = jwks_server(state.clone()).await;
    let mut c = test_config();
    c.auth.jwks_url = server.url("/.well-known/jwks.json");
    c.auth.jwks_min_refresh_secs = 1;
    let gw = start(c).await;
    let addr = gw.local_addr();

    assert_eq!(
        welcomed(addr, &sign("RS256", "rsa1", "rsa-1", "ann")).await,
        Ok("ann".into())
    );
    assert_eq!(
        welcomed(addr, &sign("ES256", "ec1", "ec-1", "bea")).await,
        Ok("bea".into())
    );
    assert_eq!(
        welcomed(addr, &sign("EdDSA", "ed1", "ed-1", "cy")).await,
        Ok("cy".into())
    );
    assert_eq!(server.hits(), 1, "the keys are cached");
    // The HS256 secret still works beside the JWKS.
    assert_eq!(welcomed(addr, &token("dan")).await, Ok("dan".into()));
    // A key under another key's kid, or a kid's key with the wrong algorithm, is refused.
    assert_eq!(
        welcomed(addr, &sign("RS256", "rsa2", "rsa-1", "eve")).await,
        Err(401)
    );
    assert_eq!(
        welcomed(addr, &sign("ES256", "ec1", "rsa-1", "eve")).await,
        Err(401)
    );

    // Rotation: rsa-2 is not published yet; its token is refused after one refetch.
    let rotated = sign("RS256", "rsa2", "rsa-2", "fay");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(welcomed(addr, &rotated).await, Err(401));
    assert_eq!(server.hits(), 2);
    // Unknown kids within the refresh interval do not reach the JWKS server.
    for i in 0..5 {
        let t = sign("RS256", "rsa2", &format!("made-up-{i}"), "eve");
        assert_eq!(welcomed(addr, &t).await, Err(401));
    }
    assert_eq!(server.hits(), 2, "refreshes are rate limited");
    // Once published (and the interval has passed), the new kid triggers a refetch.
    state.lock().unwrap().keys = vec![jwk("rsa2"), jwk("ec1")];
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(welcomed(addr, &rotated).await, Ok("fay".into()));
    assert_eq!(server.hits(), 3);
    // rsa-1 was retired with the new document.
    assert_eq!(
        welcomed(addr, &sign("RS256", "rsa1", "rsa-1", "ann")).await,
        Err(401)
    );

    // The JWKS server goes down: cached keys keep working, unknown kids are refused.
    state.lock().unwrap().down = true;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        welcomed(addr, &sign("RS256", "rsa1", "rsa-1", "ann")).await,
        Err(401)
    );
    assert_eq!(server.hits(), 4);
    assert_eq!(welcomed(addr, &rotated).await, Ok("fay".into()));
    assert_eq!(
        welcomed(addr, &sign("ES256", "ec1", "ec-1", "bea")).await,
        Ok("bea".into())
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_hanging_or_oversized_jwks_is_bounded() {
    let slow = HttpStub::start(|_req: StubRequest| -> StubReply {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (200, "{}".into())
        })
    })
    .await;
    let mut c = test_config();
    c.auth.jwks_url = slow.url("/jwks");
    c.auth.jwks_timeout_ms = 300;
    let gw = start(c).await;
    let t = std::time::Instant::now();
    assert_eq!(
        welcomed(gw.local_addr(), &sign("RS256", "rsa1", "rsa-1", "ann")).await,
        Err(401)
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    gw.shutdown().await;

    let big = HttpStub::start(|_req: StubRequest| -> StubReply {
        Box::pin(async {
            let pad = "x".repeat(64 * 1024);
            (200, json!({"keys": [jwk("rsa1")], "pad": pad}).to_string())
        })
    })
    .await;
    let mut c = test_config();
    c.auth.jwks_url = big.url("/jwks");
    c.auth.jwks_max_bytes = 16 * 1024;
    let gw = start(c).await;
    assert_eq!(
        welcomed(gw.local_addr(), &sign("RS256", "rsa1", "rsa-1", "ann")).await,
        Err(401)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn static_pem_keys_by_kid_and_join_tokens_signed_with_them() {
    let mut c = test_config();
    c.rooms.join = None;
    c.auth.keys = vec![
        KeyConfig {
            kid: "app-rsa".into(),
            alg: "RS256".into(),
            public_key: fixture("rsa1.pub"),
            ..KeyConfig::default()
        },
        KeyConfig {
            kid: "app-ec".into(),
            alg: "ES256".into(),
            public_key: fixture("ec1.pub"),
            ..KeyConfig::default()
        },
    ];
    let gw = start(c).await;
    let addr = gw.local_addr();
    let t = sign("RS256", "rsa1", "app-rsa", "ann");
    let (mut ann, _) = Client::connect_with_token(addr, &t).await;
    let jt = SigningKey::new(
        "ES256",
        fixture("ec1.key").as_bytes(),
        Some("app-ec".into()),
    )
    .and_then(|k| k.sign(&json!({"sub": "ann", "room": "r1", "exp": unix_now() + 60})))
    .unwrap();
    ann.send(json!({"type": "join", "room": "r1", "token": jt}))
        .await;
    ann.expect("joined").await;
    assert_eq!(
        welcomed(addr, &sign("ES256", "ec1", "app-rsa", "x")).await,
        Err(401)
    );
    gw.shutdown().await;
}
