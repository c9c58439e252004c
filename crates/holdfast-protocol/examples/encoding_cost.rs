//! Bytes on the wire and CPU per frame for JSON and MessagePack on a game-state event.
//!
//! ```text
//! cargo run --release -q -p holdfast-protocol --example encoding_cost
//! ```
//!
//! The gateway serialises a room message once as JSON and, when a MessagePack member is in
//! the room, re-encodes it once to MessagePack (`json_to_msgpack`); every member of an encoding
//! then shares the same bytes. So the server's cost per message is one encode per encoding in
//! use, and per delivery a reference-count increment. A client decodes every frame it gets.

use std::hint::black_box;
use std::time::Instant;

use holdfast_protocol::msgpack::{decode_server_frame, json_to_msgpack};
use holdfast_protocol::{encode, Event, ServerFrame};
use serde_json::{json, Value};

fn event(data: Value) -> ServerFrame {
    ServerFrame::Event(Event {
        room: "game:arena-17".into(),
        seq: 184_467,
        epoch: "3f9a1c2b7d4e".into(),
        ts: 1_767_225_600_123,
        from: "p3".into(),
        user_id: "alice".into(),
        data,
        id: Some("k9x2-1842".into()),
        traceparent: None,
    })
}

/// A tick of an 8-player arena: positions, velocities, health, a few projectiles.
fn game_state() -> Value {
    let players: Vec<Value> = (0..8)
        .map(|i| {
            json!({
                "id": format!("p{i}"),
                "x": 1024.5 + f64::from(i) * 13.25,
                "y": 768.25 - f64::from(i) * 7.5,
                "vx": -1.5 + f64::from(i) * 0.25,
                "vy": 0.75,
                "hp": 100 - i * 7,
                "ammo": 30 - i,
                "alive": true,
            })
        })
        .collect();
    let shots: Vec<Value> = (0..6)
        .map(|i| json!({"owner": format!("p{}", i % 8), "x": 500 + i * 40, "y": 300 + i * 10, "dir": 1.25}))
        .collect();
    json!({"tick": 40_217, "players": players, "shots": shots, "score": [12, 9]})
}

/// The same tick packed by the application into 8 × 24 + 6 × 12 raw bytes.
fn game_state_bytes() -> Value {
    let raw: Vec<u8> = (0..(8 * 24 + 6 * 12))
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    json!({"tick": 40_217, "snapshot": holdfast_protocol::msgpack::bytes_value(&raw)})
}

fn per_op(n: u32, f: impl Fn()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    const N: u32 = 100_000;
    println!("| payload | JSON bytes | MessagePack bytes | JSON encode (once per message) | MessagePack from JSON (once per message) | JSON decode (client, per frame) | MessagePack decode (client, per frame) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, data) in [
        ("8-player tick, JSON object", game_state()),
        ("same tick as 264 raw bytes", game_state_bytes()),
    ] {
        let frame = event(data);
        let text = encode(&frame);
        let packed = json_to_msgpack(&text).expect("re-encode");
        let enc_json = per_op(N, || {
            black_box(encode(black_box(&frame)));
        });
        let enc_mp = per_op(N, || {
            black_box(json_to_msgpack(black_box(&text)).ok());
        });
        let dec_json = per_op(N, || {
            black_box(serde_json::from_str::<ServerFrame>(black_box(&text)).ok());
        });
        let dec_mp = per_op(N, || {
            black_box(decode_server_frame(black_box(&packed)).ok());
        });
        println!(
            "| {name} | {} | {} ({:.0}%) | {:.2} µs | {:.2} µs | {:.2} µs | {:.2} µs |",
            text.len(),
            packed.len(),
            100.0 * packed.len() as f64 / text.len() as f64,
            enc_json / 1000.0,
            enc_mp / 1000.0,
            dec_json / 1000.0,
            dec_mp / 1000.0,
        );
    }
}
