//! End to end, tiny counts: the load generator against the in-crate tungstenite peer over real
//! loopback sockets. Checks counts, never timings.

#![allow(clippy::unwrap_used)]

use holdfast_bench::driver::{run, Plan};
use holdfast_bench::load::Scenario;
use holdfast_bench::probe::ServerProbe;
use holdfast_bench::target::Target;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

async fn start_peer() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(holdfast_bench::peer::serve(listener, async {
        let _ = stopped.await;
    }));
    (format!("ws://{addr}/ws"), stop)
}

fn plan(scenario: Scenario, url: &str, connections: usize, group: usize) -> Plan {
    Plan {
        scenario,
        target: Target::Tungstenite,
        endpoint: url.parse().unwrap(),
        extra_endpoints: Vec::new(),
        secret: "unused".into(),
        label: "test".into(),
        connections,
        group,
        publish_rate: 40.0,
        size: 48,
        duration_s: 0.5,
        procs: 1,
        source_addrs: 2,
        connect_concurrency: 4,
        connect_rate: 0.0,
        ramp_timeout_s: 20.0,
        settle_s: 0.0,
        churn_rate: 20.0,
        churn_hold_ms: 50,
        storm_at_s: 0.0,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_member() {
    let (url, stop) = start_peer().await;
    let probe = ServerProbe::new(std::process::id()).unwrap();
    let r = run(&plan(Scenario::Fanout, &url, 6, 3), Some(&probe))
        .await
        .unwrap();
    assert_eq!(r.connect.established, 6, "{:?}", r.errors);
    assert_eq!(r.connect.failed, 0);
    assert!(r.traffic.publishes > 0);
    // Every publish in the window reaches the 3 members of its room, and the drain waits for
    // the last ones.
    assert_eq!(r.traffic.expected_deliveries, r.traffic.publishes * 3);
    assert_eq!(r.traffic.deliveries, r.traffic.expected_deliveries);
    assert_eq!(r.traffic.latency.count, r.traffic.deliveries);
    assert_eq!(r.disconnects, 0);
    assert!(r.server.is_some());
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_and_churn_complete() {
    let (url, stop) = start_peer().await;
    let r = run(&plan(Scenario::Echo, &url, 3, 3), None).await.unwrap();
    assert_eq!(r.connect.established, 3);
    assert!(r.traffic.deliveries > 0);
    assert!(r.traffic.deliveries <= r.traffic.publishes);
    assert!(r.server.is_none());

    let r = run(&plan(Scenario::Churn, &url, 4, 2), None).await.unwrap();
    let churn = r.churn.unwrap();
    assert_eq!(churn.failures, 0, "{:?}", r.errors);
    assert!(churn.connects > 0);
    let _ = stop.send(());
}
