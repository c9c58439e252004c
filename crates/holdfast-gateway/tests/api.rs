//! The server API on one node: every real response matches docs/api/openapi.yaml, the curl
//! commands of docs/INTEGRATING.md run verbatim, and requests are bounded.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_gateway::{Config, Gateway, Listeners};
use holdfast_testkit::http_request;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "a-long-random-key-for-the-backend";

fn api_config() -> Config {
    let mut c = test_config();
    c.api.keys = vec![KEY.into()];
    c
}

async fn start_api(config: Config) -> Gateway {
    let listeners = Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        api: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    Gateway::start(config, listeners).await.unwrap()
}

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// docs/api/openapi.yaml as JSON.
fn openapi() -> Value {
    serde_yaml::from_str(&repo_file("docs/api/openapi.yaml")).unwrap()
}

/// Resolves a local `$ref`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {r}"));
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Checks `v` against the subset of JSON Schema the description uses, strictly: an unknown
/// keyword fails the check, so the checker cannot silently ignore part of the description.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let obj = schema
        .as_object()
        .ok_or(format!("{at}: schema is not an object"))?;
    const KNOWN: [&str; 14] = [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "nullable",
        "description",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ];
    for k in obj.keys() {
        if !KNOWN.contains(&k.as_str()) && k != "default" {
            return Err(format!("{at}: the checker does not know `{k}`"));
        }
    }
    if v.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
    }
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return Ok(()); // any value
    };
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        other => return Err(format!("{at}: unknown type {other}")),
    };
    if !ok {
        return Err(format!("{at}: {v} is not of type {ty}"));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            return Err(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64()) {
        if n > max {
            return Err(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(s) = v.as_str() {
        let n = s.len() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: length {n} out of range"));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: {n} items out of range"));
        }
        if let Some(item) = schema.get("items") {
            for (i, x) in items.iter().enumerate() {
                check(doc, item, x, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(map) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !map.contains_key(r) {
                return Err(format!("{at}: missing required `{r}` in {v}"));
            }
        }
        for (k, x) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: `{k}` is not described"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Calls the API and checks the answer against the description of `template` / `method` /
/// the status; records what was exercised.
struct Checked {
    doc: Value,
    api: SocketAddr,
    seen: BTreeSet<(String, String, u16)>,
}

impl Checked {
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(self.api, method, path, Some(KEY), body.as_deref()).await;
        self.check(method, template, status, &text);
        (status, serde_json::from_str(&text).unwrap())
    }

    fn check(&mut self, method: &str, template: &str, status: u16, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not described");
        let resp = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {template}: status {status} is not described"));
        let resp = resolve(&self.doc, resp);
        let schema = &resp["content"]["application/json"]["schema"];
        if let Err(e) = check(&self.doc, schema, &v, "$") {
            panic!("{method} {template} {status}: {e}");
        }
        self.seen
            .insert((template.to_owned(), method.to_lowercase(), status));
    }
}

#[tokio::test]
async fn every_real_response_matches_the_openapi_description() {
    let gw = start_api(api_config()).await;
    let api = gw.api_addr().unwrap();
    let mut c = Checked {
        doc: openapi(),
        api,
        seen: BTreeSet::new(),
    };
    let (mut alice, _) = Client::connect(gw.local_addr(), "alice").await;
    let (mut bob, _) = Client::connect(gw.local_addr(), "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.expect_presence("online").await;
    let (s, _) = c
        .call("POST", "/api/v1/publish", "/api/v1/publish", Some(json!({"room":"lobby","data":{"a":1},"id":"x","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        alice.expect("event").await["traceparent"]
            .as_str()
            .map(str::len),
        Some(55)
    );
    c.call(
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({"room":"nobody","data":1})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({"room":"","data":1})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({"room":"r","data":"x".repeat(70_000)})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/broadcast",
        "/api/v1/broadcast",
        Some(json!({"rooms":["lobby","nobody"],"data":2,"id":"b"})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/broadcast",
        "/api/v1/broadcast",
        Some(json!({"rooms":[],"data":2})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/send",
        "/api/v1/send",
        Some(json!({"user":"bob","data":{"hi":1}})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/send",
        "/api/v1/send",
        Some(json!({"user":"nobody","data":1})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/send",
        "/api/v1/send",
        Some(json!({"user":"bob","data":1,"extra":true})),
    )
    .await;
    c.call("GET", "/api/v1/users/{user}", "/api/v1/users/alice", None)
        .await;
    c.call("GET", "/api/v1/users/{user}", "/api/v1/users/nobody", None)
        .await;
    let (_, room) = c
        .call("GET", "/api/v1/rooms/{room}", "/api/v1/rooms/lobby", None)
        .await;
    assert_eq!(room["member_count"], 2);
    c.call("GET", "/api/v1/rooms/{room}", "/api/v1/rooms/nobody", None)
        .await;
    let (_, h) = c
        .call(
            "GET",
            "/api/v1/rooms/{room}/history",
            "/api/v1/rooms/lobby/history?from=1",
            None,
        )
        .await;
    assert!(!h["events"].as_array().unwrap().is_empty());
    c.call(
        "GET",
        "/api/v1/rooms/{room}/history",
        "/api/v1/rooms/lobby/history?from=5&to=2",
        None,
    )
    .await;
    c.call(
        "GET",
        "/api/v1/rooms/{room}/history",
        "/api/v1/rooms/lobby/history?limit=1001",
        None,
    )
    .await;
    c.call(
        "GET",
        "/api/v1/rooms",
        "/api/v1/rooms?prefix=lob&limit=10",
        None,
    )
    .await;
    c.call("GET", "/api/v1/rooms", "/api/v1/rooms?limit=0", None)
        .await;
    c.call("GET", "/api/v1/nodes", "/api/v1/nodes", None).await;
    let (s, set) = c
        .call(
            "POST",
            "/api/v1/rooms/{room}/state",
            "/api/v1/rooms/lobby/state",
            Some(json!({"state": {"tick": 1, "blob": {"$base64": "AAE="}}})),
        )
        .await;
    assert_eq!((s, set["delivered"].clone()), (200, json!(true)));
    c.call(
        "POST",
        "/api/v1/rooms/{room}/state",
        "/api/v1/rooms/lobby/state",
        Some(json!({"state": "x".repeat(70_000)})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/rooms/{room}/state",
        "/api/v1/rooms/lobby/state",
        Some(json!({"nope": 1})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/disconnect",
        "/api/v1/disconnect",
        Some(json!({"user":"bob","code":4000})),
    )
    .await;
    c.call(
        "POST",
        "/api/v1/disconnect",
        "/api/v1/disconnect",
        Some(json!({"user":"bob","code":4007,"reason":"test"})),
    )
    .await;
    assert_eq!(bob.expect_close().await, 4007);
    let (s, text) = http_request(
        api,
        "GET",
        "/api/v1/nodes",
        Some("wrong-key-0123456789"),
        None,
    )
    .await;
    c.check("GET", "/api/v1/nodes", s, &text);
    // Every described operation was exercised, with its success answer.
    let doc = c.doc.clone();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                c.seen.contains(&(path.clone(), method.clone(), 200)),
                "{method} {path} was never answered 200 in this test"
            );
        }
    }
}

#[tokio::test]
async fn the_integrating_guide_runs_verbatim_against_a_real_node() {
    let gw = start_api(api_config()).await;
    let (mut alice, _) = Client::connect(gw.local_addr(), "alice").await;
    alice.join("lobby").await;
    let guide = repo_file("docs/INTEGRATING.md");
    let mut script = String::from("set -euo pipefail\n");
    let mut blocks = 0;
    let mut in_block = false;
    for line in guide.lines() {
        if in_block {
            if line.trim_start().starts_with("```") {
                in_block = false;
                script.push_str("echo\n");
            } else {
                script.push_str(line);
                script.push('\n');
            }
        } else if line.trim() == "```sh" {
            in_block = true;
            blocks += 1;
        }
    }
    assert!(blocks >= 9, "the guide's examples were not found");
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HOLDFAST_API", format!("http://{}", gw.api_addr().unwrap()))
        .env("HOLDFAST_API_KEY", KEY)
        .output()
        .await
        .expect("bash runs (curl is installed by scripts/test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the guide's commands failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each command printed one JSON answer.
    let answers: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(answers.len(), blocks - 1, "{stdout}");
    assert_eq!(answers[0]["delivered"], true, "{stdout}");
    assert_eq!(answers.last().unwrap()["disconnected"], true, "{stdout}");
    // Alice saw what the guide did to her, and was disconnected last.
    let e = alice.expect("event").await;
    assert_eq!(
        (e["from"].clone(), e["data"]["text"].clone()),
        (json!("server"), json!("Welcome!"))
    );
    assert_eq!(
        alice.expect("event").await["data"]["maintenance_in_minutes"],
        10
    );
    assert_eq!(
        alice.expect("message").await["data"]["kind"],
        "friend_request"
    );
    assert_eq!(alice.expect_close().await, 4007);
}

#[tokio::test]
async fn bodies_and_parameters_are_bounded() {
    let mut cfg = api_config();
    cfg.limits.body_timeout_ms = 300;
    cfg.api.max_body_bytes = 70_000;
    let gw = start_api(cfg).await;
    let api = gw.api_addr().unwrap();
    let big = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(80_000));
    let (s, _) = http_request(api, "POST", "/api/v1/publish", Some(KEY), Some(&big)).await;
    assert_eq!(s, 413);
    // A body that never finishes is answered 408 once limits.body_timeout_ms passed.
    let mut sock = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"room\""
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, sock.read_to_end(&mut buf)).await;
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"));
    let (s, _) = http_request(api, "GET", "/api/v1/rooms?limit=100000", Some(KEY), None).await;
    assert_eq!(s, 400);
    let (s, r) = http_request(api, "GET", "/api/v1/nope", Some(KEY), None).await;
    assert_eq!(
        (
            s,
            serde_json::from_str::<Value>(&r).unwrap()["code"].clone()
        ),
        (404, json!("not_found"))
    );
    // The public listener serves no API, and /metrics only while metrics.public is set.
    assert_eq!(http_get(gw.local_addr(), "/api/v1/nodes").await.0, 404);
    assert_eq!(http_get(gw.local_addr(), "/metrics").await.0, 200);
    assert_eq!(http_get(api, "/metrics").await.0, 200);
    let mut private = api_config();
    private.metrics.public = false;
    let gw2 = start_api(private).await;
    assert_eq!(http_get(gw2.local_addr(), "/metrics").await.0, 404);
    assert_eq!(http_get(gw2.api_addr().unwrap(), "/metrics").await.0, 200);
    // The internal listener stops with the node.
    gw.shutdown().await;
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn admin_page_is_served_on_the_internal_listener_only() {
    let gw = start_api(api_config()).await;
    let api = gw.api_addr().unwrap();
    // The page itself needs no key; every call it makes does.
    let (status, body) = http_get(api, "/admin").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Holdfast admin</title>"), "{body}");
    assert!(body.contains("/api/v1/nodes"));
    // No other origin: no CDN, no web fonts.
    assert!(!body.contains("http://") && !body.contains("https://"));
    assert_eq!(http_get(api, "/api/v1/nodes").await.0, 401);
    // Never on the public listener.
    assert_eq!(http_get(gw.local_addr(), "/admin").await.0, 404);
    gw.shutdown().await;
}
