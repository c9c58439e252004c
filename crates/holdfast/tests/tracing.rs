//! `holdfast serve` configured with the standard `OTEL_*` variables exports its spans to a
//! real OTLP/HTTP receiver; a protocol it cannot speak is refused at start.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use holdfast_testkit::{eventually, OtlpReceiver, WAIT};
use serde_json::json;
use support::{Node, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_spans_where_the_otel_variables_say() {
    let receiver = OtlpReceiver::start().await;
    let base = receiver
        .endpoint()
        .trim_end_matches("/v1/traces")
        .to_owned();
    let node = Node::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_SERVICE_NAME", "holdfast-edge".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("HOLDFAST_SERVER__NODE_ID", "edge-1".into()),
    ])
    .await;
    node.wait_line("announcing the export", |l| {
        l.contains("exporting traces over OTLP/HTTP")
    })
    .await;
    let (mut c, _) = holdfast_testkit::Client::connect(node.addr, "ann").await;
    c.join("lobby").await;
    let tp = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    c.send(json!({"type":"publish","room":"lobby","data":{},"traceparent":tp}))
        .await;
    let e = tokio::time::timeout(WAIT, c.until("event")).await.unwrap();
    assert!(e["traceparent"]
        .as_str()
        .unwrap()
        .starts_with("00-5bf92f35"));
    let found = eventually(|| {
        let spans = receiver.spans();
        async move {
            spans.iter().any(|s| {
                s.name == "room.publish"
                    && s.service == "holdfast-edge"
                    && s.node == "edge-1"
                    && s.parent_span_id == "00f067aa0ba902b7"
            })
        }
    })
    .await;
    assert!(found, "spans: {:#?}", receiver.spans());
}

#[test]
fn serve_refuses_an_otlp_protocol_it_does_not_speak() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HOLDFAST_AUTH__HMAC_SECRET", "s")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
}
