//! A bounded soak: twenty clients in four rooms publish continuously for a few seconds while a
//! proxy cuts their connections at random; at the end every member of every room must have seen
//! every acknowledged publish exactly once, at its acknowledged seq, in order.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holdfast_client::ClientEvent;
use rand::Rng;
use serde_json::json;
use support::{client_config, connect, gateway, Proxy};

const CLIENTS: usize = 20;
const ROOMS: usize = 4;
const PUBLISHERS_PER_CLIENT: usize = 2;
const RUN_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_survive_random_cuts_without_loss_or_duplicates() {
    let gw = gateway(|c| c.reconnection.event_buffer_size = 100_000).await;
    let proxies = [
        Proxy::start(gw.local_addr()).await,
        Proxy::start(gw.local_addr()).await,
    ];

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let proxy = &proxies[i % proxies.len()];
        let (client, events) = connect(client_config(proxy.addr(), &format!("user{i}"))).await;
        let room = format!("room{}", i % ROOMS);
        client.join(room.clone()).await.unwrap();
        clients.push((client, events, room));
    }

    let running = Arc::new(AtomicBool::new(true));
    let mut publishers = Vec::new();
    for (i, (client, _, room)) in clients.iter().enumerate() {
        for p in 0..PUBLISHERS_PER_CLIENT {
            let (client, room, running) = (client.clone(), room.clone(), running.clone());
            publishers.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut n = 0u64;
                while running.load(Ordering::Relaxed) {
                    let data = json!({ "c": i, "p": p, "n": n });
                    let seq = client
                        .publish(room.clone(), data.clone())
                        .await
                        .unwrap_or_else(|e| panic!("client {i} publisher {p} #{n}: {e}"));
                    acks.push((room.clone(), seq, data));
                    n += 1;
                    let pause = rand::rng().random_range(5..25);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                acks
            }));
        }
    }

    let deadline = tokio::time::Instant::now() + RUN_FOR;
    let mut cuts = 0;
    while tokio::time::Instant::now() < deadline {
        let pause = rand::rng().random_range(150..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let which = rand::rng().random_range(0..proxies.len());
        proxies[which].cut_all();
        cuts += 1;
    }
    running.store(false, Ordering::Relaxed);

    // Every publish must be acknowledged: none lost, none failed.
    let mut published: HashMap<String, Vec<(u64, serde_json::Value)>> = HashMap::new();
    for task in publishers {
        let acks = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("publisher finishes")
            .expect("publisher task");
        for (room, seq, data) in acks {
            published.entry(room).or_default().push((seq, data));
        }
    }
    let mut total = 0;
    for events in published.values_mut() {
        events.sort_by_key(|(seq, _)| *seq);
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "the gateway gave two publishes the same seq"
        );
        total += events.len();
    }

    for (i, (client, events, room)) in clients.iter().enumerate() {
        let expected = &published[room];
        let last = expected.last().map_or(0, |(seq, _)| *seq);
        events
            .wait_for(
                "the room's last event",
                Duration::from_secs(20),
                |e| matches!(e, ClientEvent::Event(ev) if ev.room == *room && ev.seq == last),
            )
            .await;
        let got = events.room_events(room);
        assert_eq!(got.len(), expected.len(), "client {i}: count");
        assert_eq!(&got, expected, "client {i}: every event once, in order");
        let seqs = events.room_seqs(room);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "client {i}: {seqs:?}");
        let all = events.all();
        for e in &all {
            assert!(
                !matches!(
                    e,
                    ClientEvent::Gap { .. }
                        | ClientEvent::ResumeFailed { .. }
                        | ClientEvent::Closed(_)
                ),
                "client {i}: {e:?}"
            );
        }
        client.close().await;
    }
    assert!(cuts >= 5, "the soak cut connections {cuts} times");
    assert!(total > 1_000, "only {total} publishes");
    println!("soak: {total} publishes across {ROOMS} rooms, {cuts} cuts");
}
