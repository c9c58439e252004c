//! OpenTelemetry on one node (memory backend): the spans of a connection, its room
//! operations, a server API publish and the deliveries reach a real OTLP/HTTP receiver with
//! their parents; a collector that is down costs the node nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use holdfast_gateway::telemetry::TracingConfig;
use holdfast_gateway::{Config, Gateway, Listeners};
use holdfast_testkit::{
    free_port, http_request, try_connect, HttpStub, OtlpReceiver, ReceivedSpan, StubReply,
    StubRequest,
};
use serde_json::json;
use support::*;

const KEY: &str = "a-long-random-key-for-the-backend";
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn traced(endpoint: String) -> Config {
    let mut c = test_config();
    c.server.node_id = "solo".into();
    c.api.keys = vec![KEY.into()];
    c.tracing = TracingConfig {
        endpoint,
        service_name: "holdfast-solo".into(),
        scheduled_delay_ms: 50,
        ..TracingConfig::default()
    };
    c
}

async fn start_api(config: Config) -> Gateway {
    let listeners = Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        api: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    Gateway::start(config, listeners).await.unwrap()
}

fn one(spans: &[ReceivedSpan], f: impl Fn(&ReceivedSpan) -> bool) -> &ReceivedSpan {
    spans
        .iter()
        .find(|s| f(s))
        .unwrap_or_else(|| panic!("no such span in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_room_operations_api_calls_and_deliveries_are_spans_with_their_parents() {
    let receiver = OtlpReceiver::start().await;
    let gw = start_api(traced(receiver.endpoint())).await;
    let upgrade_tp = format!("00-{TRACE}-1111111111111111-01");
    let query = format!("?token={}", token("alice"));
    let mut alice = try_connect(gw.local_addr(), &query, &[("traceparent", &upgrade_tp)])
        .await
        .unwrap();
    alice.expect("welcome").await;
    alice.join("lobby").await;
    let publish_tp = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-2222222222222222-01";
    alice
        .send(json!({"type":"publish","room":"lobby","data":{},"traceparent":publish_tp}))
        .await;
    let e = alice.until("event").await;
    assert!(
        e["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-aaaaaaaa"),
        "{e}"
    );
    let api_tp = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-3333333333333333-01";
    let body = json!({"room":"lobby","data":{},"traceparent":api_tp}).to_string();
    let api = gw.api_addr().unwrap();
    let (status, _) = http_request(api, "POST", "/api/v1/publish", Some(KEY), Some(&body)).await;
    assert_eq!(status, 200);
    alice.until("event").await;
    // Every span is exported while the connection is still open (none is held for its life).
    let done = eventually(|| {
        let spans = receiver.spans();
        async move {
            ["connection", "room.join", "api.request"]
                .iter()
                .all(|n| spans.iter().any(|s| s.name == *n))
                && spans.iter().filter(|s| s.name == "deliver").count() == 2
        }
    })
    .await;
    let spans = receiver.spans();
    assert!(done, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|s| s.service == "holdfast-solo" && s.node == "solo"));
    let conn = one(&spans, |s| s.name == "connection");
    assert_eq!(
        (conn.trace_id.as_str(), conn.parent_span_id.as_str()),
        (TRACE, "1111111111111111")
    );
    assert_eq!(conn.attr("enduser.id"), Some("alice"));
    let join = one(&spans, |s| s.name == "room.join");
    assert_eq!(join.parent_span_id, conn.span_id);
    assert_eq!(join.attr("holdfast.outcome"), Some("ok"));
    let publish = one(&spans, |s| {
        s.name == "room.publish" && s.trace_id.starts_with("aaaa")
    });
    assert_eq!(publish.parent_span_id, "2222222222222222");
    let deliver = one(&spans, |s| {
        s.name == "deliver" && s.trace_id.starts_with("aaaa")
    });
    assert_eq!(deliver.parent_span_id, publish.span_id);
    // The server API call and its publish, under the body's `traceparent`.
    let call = one(&spans, |s| s.name == "api.request");
    assert_eq!(call.attr("http.route"), Some("/api/v1/publish"));
    assert_eq!(call.attr("http.response.status_code"), Some("200"));
    let api_publish = one(&spans, |s| {
        s.name == "room.publish" && s.trace_id.starts_with("bbbb")
    });
    assert_eq!(api_publish.parent_span_id, "3333333333333333");
    let api_deliver = one(&spans, |s| {
        s.name == "deliver" && s.trace_id.starts_with("bbbb")
    });
    assert_eq!(api_deliver.parent_span_id, api_publish.span_id);
    alice.close().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_neither_blocks_nor_crashes_the_node() {
    // Nothing listens there: every export fails; the queue is small, so most spans are dropped.
    let mut cfg = traced(format!("http://127.0.0.1:{}/v1/traces", free_port()));
    cfg.tracing.max_queue_size = 16;
    cfg.tracing.timeout_ms = 500;
    cfg.limits.rate_limit_per_sec = 10_000;
    cfg.limits.rate_limit_burst = 10_000;
    let gw = start(cfg).await;
    let (mut alice, _) = Client::connect(gw.local_addr(), "alice").await;
    alice.join("lobby").await;
    let tp = format!("00-{TRACE}-1111111111111111-01");
    for i in 0..300 {
        alice
            .send(json!({"type":"publish","room":"lobby","data":{"i":i},"traceparent":tp}))
            .await;
    }
    for i in 0..300 {
        let e = alice.until("event").await;
        assert_eq!(e["data"]["i"], i);
    }
    alice.close().await;
    // The drain (with the exporter's shutdown) ends in bounded time.
    let done = tokio::time::timeout(Duration::from_secs(15), gw.shutdown()).await;
    assert!(done.is_ok(), "shutdown hung on the exporter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_hook_call_is_a_span_whose_traceparent_the_hook_receives() {
    let receiver = OtlpReceiver::start().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let hook = HttpStub::start(move |req: StubRequest| {
        let tp = req.header("traceparent").unwrap_or("").to_owned();
        log.lock().unwrap().push(tp);
        Box::pin(async { (200u16, r#"{"allow":true}"#.to_owned()) }) as StubReply
    })
    .await;
    let mut cfg = traced(receiver.endpoint());
    cfg.rooms.join = Some(holdfast_gateway::config::JoinMode::Hook);
    cfg.hooks.join_url = hook.url("/join");
    let gw = start(cfg).await;
    let (mut ann, _) = Client::connect(gw.local_addr(), "ann").await;
    ann.join("vip").await;
    let sent = seen.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(sent.starts_with("00-"), "the hook got traceparent {sent:?}");
    let done = eventually(|| {
        let spans = receiver.spans();
        async move {
            spans.iter().any(|s| s.name == "hook") && spans.iter().any(|s| s.name == "room.join")
        }
    })
    .await;
    let spans = receiver.spans();
    assert!(done, "{spans:#?}");
    let join = one(&spans, |s| s.name == "room.join");
    let call = one(&spans, |s| s.name == "hook");
    assert_eq!(call.parent_span_id, join.span_id);
    assert_eq!(call.attr("holdfast.hook"), Some("join"));
    assert_eq!(call.attr("holdfast.outcome"), Some("allow"));
    assert_eq!(sent, format!("00-{}-{}-01", call.trace_id, call.span_id));
    ann.close().await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_session_has_a_connection_span_parenting_its_operations() {
    let receiver = OtlpReceiver::start().await;
    let gw = start(traced(receiver.endpoint())).await;
    let addr = gw.local_addr();
    let (status, first) = http_request(
        addr,
        "GET",
        &format!("/poll?token={}", token("pat")),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let sid = first["session_id"].as_str().unwrap().to_owned();
    let join = json!({"type":"join","room":"r"}).to_string();
    let path = format!("/poll/send?session={sid}");
    let (status, _) = http_request(addr, "POST", &path, Some(&token("pat")), Some(&join)).await;
    assert_eq!(status, 202);
    let done = eventually(|| {
        let spans = receiver.spans();
        async move { spans.iter().any(|s| s.name == "room.join") }
    })
    .await;
    let spans = receiver.spans();
    assert!(done, "{spans:#?}");
    let conn = one(&spans, |s| s.name == "connection");
    assert_eq!(conn.attr("holdfast.transport"), Some("longpoll"));
    assert_eq!(conn.attr("enduser.id"), Some("pat"));
    let join = one(&spans, |s| s.name == "room.join");
    assert_eq!(join.parent_span_id, conn.span_id);
    assert_eq!(join.trace_id, conn.trace_id);
    gw.shutdown().await;
}
