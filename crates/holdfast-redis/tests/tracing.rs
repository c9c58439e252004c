//! OpenTelemetry across a cluster: a publish's trace goes from the client through node A,
//! Redis and node B to the receiver, and both nodes export it to a real OTLP/HTTP receiver.
#![allow(clippy::unwrap_used)]

mod support;

use holdfast_gateway::telemetry::TracingConfig;
use holdfast_gateway::Config;
use holdfast_testkit::{OtlpReceiver, ReceivedSpan};
use serde_json::json;
use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traced(node: &str, receiver: &OtlpReceiver) -> Config {
    let mut c = config(node);
    c.tracing = TracingConfig {
        endpoint: receiver.endpoint(),
        service_name: format!("holdfast-{node}"),
        scheduled_delay_ms: 50,
        ..TracingConfig::default()
    };
    c
}

fn find(spans: &[ReceivedSpan], f: impl Fn(&ReceivedSpan) -> bool) -> Option<&ReceivedSpan> {
    spans.iter().find(|s| f(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_traced_from_node_a_through_redis_to_node_b() {
    let redis = Redis::start();
    let receiver = OtlpReceiver::start().await;
    let a_node = node(&redis, traced("a", &receiver)).await;
    let b_node = node(&redis, traced("b", &receiver)).await;
    let (mut alice, _) = Client::connect(a_node.local_addr(), "alice").await;
    let (mut bob, _) = Client::connect(b_node.local_addr(), "bob").await;
    alice.join("game").await;
    bob.join("game").await;
    let tp = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    alice
        .send(json!({"type":"publish","room":"game","data":{"x":1},"traceparent":tp}))
        .await;
    // The receiver on node B gets the event with the trace continued by node A's publish span.
    let event = bob.until("event").await;
    let carried = event["traceparent"].as_str().unwrap().to_owned();
    assert!(carried.starts_with(&format!("00-{TRACE}-")), "{event}");
    assert_ne!(
        carried, tp,
        "the event carries node A's span, not the client's"
    );
    let mut spans = Vec::new();
    let complete = eventually(|| {
        spans = receiver.spans();
        let publish = find(&spans, |s| s.name == "room.publish" && s.trace_id == TRACE);
        let ok = publish.is_some_and(|p| {
            find(&spans, |s| {
                s.name == "deliver" && s.node == "b" && s.parent_span_id == p.span_id
            })
            .is_some()
        });
        async move { ok }
    })
    .await;
    let spans = receiver.spans();
    assert!(complete, "spans received: {spans:#?}");
    let publish = find(&spans, |s| s.name == "room.publish" && s.trace_id == TRACE).unwrap();
    // Node A's publish span: a child of the client's span, under node A's service name.
    assert_eq!(publish.parent_span_id, CLIENT_SPAN);
    assert_eq!(publish.service, "holdfast-a");
    assert_eq!(publish.node, "a");
    assert_eq!(publish.attr("holdfast.room"), Some("game"));
    assert_eq!(publish.attr("holdfast.outcome"), Some("ok"));
    assert_eq!(carried, format!("00-{TRACE}-{}-01", publish.span_id));
    // Node B's delivery span: same trace, a child of node A's publish span, one recipient.
    let deliver = find(&spans, |s| s.name == "deliver" && s.node == "b").unwrap();
    assert_eq!(deliver.trace_id, TRACE);
    assert_eq!(deliver.parent_span_id, publish.span_id);
    assert_eq!(deliver.service, "holdfast-b");
    assert_eq!(deliver.attr("holdfast.room"), Some("game"));
    assert_eq!(deliver.attr("holdfast.recipients"), Some("1"));
    assert_eq!(deliver.attr("holdfast.outcome"), Some("delivered"));
    // Node A delivered its own copy (to alice) in the same trace.
    assert!(find(&spans, |s| s.name == "deliver"
        && s.node == "a"
        && s.trace_id == TRACE)
    .is_some());
    // The joins were traced too, each under its node's connection span.
    for n in ["a", "b"] {
        let join = find(&spans, |s| s.name == "room.join" && s.node == n).unwrap();
        let conn = find(&spans, |s| s.name == "connection" && s.node == n);
        if let Some(conn) = conn {
            assert_eq!(join.parent_span_id, conn.span_id);
        }
    }
    alice.close().await;
    bob.close().await;
    a_node.shutdown().await;
    b_node.shutdown().await;
}
