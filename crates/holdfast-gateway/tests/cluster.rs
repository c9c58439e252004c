//! Several nodes in one process sharing the in-memory broker.
#![allow(clippy::unwrap_used)]

mod support;

use holdfast_gateway::{Gateway, MemoryBroker};
use serde_json::json;
use support::*;

async fn spawn_nodes<const N: usize>() -> [Gateway; N] {
    let broker = MemoryBroker::new();
    let mut nodes = Vec::new();
    for i in 0..N {
        let mut cfg = test_config();
        cfg.server.node_id = format!("node-{i}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(
            Gateway::start_with_broker(cfg, listener, broker.clone())
                .await
                .unwrap(),
        );
    }
    nodes.try_into().ok().unwrap()
}

#[tokio::test]
async fn single_socket_and_direct_send_across_nodes() {
    let [n0, n1] = spawn_nodes::<2>().await;
    let (mut old, w0) = Client::connect(n0.local_addr(), "alice").await;
    assert_eq!(w0["node_id"], "node-0");
    let (mut new, w1) = Client::connect(n1.local_addr(), "alice").await;
    assert_eq!(w1["node_id"], "node-1");
    assert_eq!(
        old.expect_close().await,
        4000,
        "the newest connection wins across nodes"
    );

    let (mut bob, _) = Client::connect(n0.local_addr(), "bob").await;
    bob.send(json!({"type":"send","to":"alice","data":"cross","id":"d"}))
        .await;
    assert_eq!(new.expect("message").await["data"], "cross");
    assert_eq!(bob.expect("ack").await["id"], "d");
}
