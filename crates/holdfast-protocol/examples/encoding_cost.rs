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
//!
//! The second table is what delta compression of successive publications (fossil delta, as
//! Centrifugo offers) would save: the delta of each publication's `data` against the previous
//! one, for a stream of game ticks and for a large document edited a little at a time.

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

/// Tick `t` of the arena: everyone moves, a shot is fired now and then, health changes rarely.
fn game_tick(t: u32) -> Value {
    let tf = f64::from(t);
    let players: Vec<Value> = (0..8u32)
        .map(|i| {
            let fi = f64::from(i);
            json!({
                "id": format!("p{i}"),
                "x": ((1024.5 + fi * 13.25 + tf * (-1.5 + fi * 0.25)) * 100.0).round() / 100.0,
                "y": ((768.25 - fi * 7.5 + tf * 0.75) * 100.0).round() / 100.0,
                "vx": -1.5 + fi * 0.25,
                "vy": 0.75,
                "hp": 100 - i * 7 - (t / 40) % 5,
                "ammo": 30 - i - (t / 10) % 3,
                "alive": true,
            })
        })
        .collect();
    let shots: Vec<Value> = (0..6u32)
        .map(|i| json!({"owner": format!("p{}", (i + t / 15) % 8), "x": 500 + i * 40 + t * 3, "y": 300 + i * 10, "dir": 1.25}))
        .collect();
    json!({"tick": 40_217 + t, "players": players, "shots": shots, "score": [12 + t / 60, 9]})
}

/// Version `v` of a 60-paragraph document; each version rewrites one paragraph.
fn document(v: u32) -> Value {
    let paragraphs: Vec<Value> = (0..60u32)
        .map(|i| {
            let rev = if i == v % 60 { v } else { 0 };
            json!({"id": format!("para-{i}"), "author": format!("user{}", i % 7), "text": format!("Paragraph {i}, revision {rev}: the quick brown fox jumps over the lazy dog.")})
        })
        .collect();
    json!({"doc": "spec-2026", "version": v, "paragraphs": paragraphs})
}

/// Mean bytes of `data`, of its delta against the previous version, and the CPU of making
/// and of applying one delta, over `n` successive versions.
fn delta_cost(n: u32, version: impl Fn(u32) -> Value) -> (f64, f64, f64, f64) {
    let texts: Vec<String> = (0..=n).map(|v| version(v).to_string()).collect();
    let (mut full, mut delta) = (0usize, 0usize);
    let mut make = 0f64;
    let mut apply = 0f64;
    for pair in texts.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        // `delta(new, old)` is what turns `old` into `new` with `apply(old, d)`.
        let d = fossil_delta::delta(b, a);
        assert_eq!(
            fossil_delta::apply(a, &d).ok().as_deref(),
            Some(b.as_bytes())
        );
        full += b.len();
        delta += d.len();
        make += per_op(200, || {
            black_box(fossil_delta::delta(black_box(b), black_box(a)));
        });
        apply += per_op(200, || {
            black_box(fossil_delta::apply(black_box(a), black_box(&d)).ok());
        });
    }
    let k = f64::from(n);
    (full as f64 / k, delta as f64 / k, make / k, apply / k)
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
    println!();
    println!("| publications | data bytes | fossil delta bytes | delta / data | make a delta (server, per publication) | apply it (client, per delivery) |");
    println!("|---|---|---|---|---|---|");
    for (name, stream) in [
        (
            "8-player ticks, 120 in a row",
            &game_tick as &dyn Fn(u32) -> Value,
        ),
        (
            "60-paragraph document, one paragraph edited each time",
            &document,
        ),
    ] {
        let (full, delta, make, apply) = delta_cost(120, stream);
        println!(
            "| {name} | {full:.0} | {delta:.0} | {:.0}% | {:.2} µs | {:.2} µs |",
            100.0 * delta / full,
            make / 1000.0,
            apply / 1000.0,
        );
    }
}
