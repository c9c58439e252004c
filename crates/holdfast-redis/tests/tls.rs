//! A gateway node on a Redis that speaks TLS only (`rediss://`), trusting its certificate
//! through `broker.tls_ca_file`'s contents.
#![allow(clippy::unwrap_used)]

mod support;

use holdfast_gateway::Gateway;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_node_publishes_and_delivers_over_rediss() {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let redis = Redis::start_tls(&ck.cert.pem(), &ck.key_pair.serialize_pem());
    assert!(redis.url().starts_with("rediss://"));
    // Without the CA the server's certificate is refused.
    let refused = holdfast_redis::connect(&redis.url(), "t").await;
    assert!(refused.is_err(), "an untrusted certificate must be refused");
    let mut opts = holdfast_redis::Options::new(&redis.url(), "t");
    opts.tls.ca_pem = Some(ck.cert.pem().into_bytes());
    let mut nodes = Vec::new();
    for id in ["n0", "n1"] {
        let cluster = holdfast_redis::connect_with(&opts).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = Gateway::start_with(config(id), listener, cluster.broker, Some(cluster.store))
            .await
            .unwrap();
        assert!(
            eventually(|| async { http_status(gw.local_addr(), "/readyz").await == 200 }).await
        );
        nodes.push(gw);
    }
    let (mut a, _) = Client::connect(nodes[0].local_addr(), "a").await;
    let (mut b, _) = Client::connect(nodes[1].local_addr(), "b").await;
    a.join("r").await;
    b.join("r").await;
    a.send(json!({"type":"publish","room":"r","data":"over tls","id":"m"}))
        .await;
    let e = b.until("event").await;
    assert_eq!(
        (e["seq"].as_u64(), &e["data"]),
        (Some(1), &json!("over tls"))
    );
}
