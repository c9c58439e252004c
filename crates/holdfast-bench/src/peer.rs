//! The plain tokio-tungstenite peer: the room broadcast server a team would write in an
//! afternoon with tokio-tungstenite and no framework, used as a baseline.
//!
//! A socket joins the room named by its `room` query parameter. A text frame with a `room` field
//! is broadcast verbatim to every socket of that room (the sender included); any other text
//! frame is echoed to its sender. Default tungstenite buffer sizes are kept on purpose: the peer
//! shows what the straightforward version costs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames queued for one socket. Bounded: a reader that falls this far behind is closed
/// instead of letting memory grow.
const OUTBOUND_CAPACITY: usize = 1024;

/// Every room's members, by connection id.
#[derive(Default)]
struct Rooms {
    /// A std mutex: it is held only to clone senders and `try_send`, never across an await.
    members: Mutex<HashMap<String, HashMap<u64, mpsc::Sender<Utf8Bytes>>>>,
}

impl Rooms {
    fn join(&self, room: &str, id: u64, tx: mpsc::Sender<Utf8Bytes>) {
        let mut rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_owned()).or_default().insert(id, tx);
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Queues `frame` for every member of `room`; members whose queue is full are dropped
    /// from the room (their connection task then closes them as slow consumers).
    fn broadcast(&self, room: &str, frame: &Utf8Bytes) {
        let mut rooms = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = rooms.get_mut(room) {
            members.retain(|_, tx| tx.try_send(frame.clone()).is_ok());
        }
    }
}

/// The only field the peer reads from a frame.
#[derive(Deserialize)]
struct Routed<'a> {
    #[serde(borrow, default)]
    room: Option<std::borrow::Cow<'a, str>>,
}

/// Serves until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let rooms = Arc::new(Rooms::default());
    let ids = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(session(stream, rooms.clone(), id));
            }
        }
    }
}

fn room_of(request: &Request) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="))
        .map(str::to_owned)
}

async fn session(stream: TcpStream, rooms: Arc<Rooms>, id: u64) {
    let mut room = None;
    // The error type is tungstenite's; the callback never fails.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        room = room_of(req);
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(OUTBOUND_CAPACITY);
    if let Some(room) = &room {
        rooms.join(room, id, tx.clone());
    }
    drop(tx);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let target = serde_json::from_str::<Routed<'_>>(text.as_str())
                        .ok()
                        .and_then(|r| r.room.map(|r| r.into_owned()));
                    match target {
                        Some(target) => rooms.broadcast(&target, &text),
                        None => {
                            if ws.send(Message::Text(text)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(frame) => {
                    if ws.send(Message::Text(frame)).await.is_err() {
                        break;
                    }
                }
                None => {
                    // Dropped from the room because the queue was full.
                    let close = CloseFrame { code: CloseCode::Again, reason: "slow consumer".into() };
                    let _ = ws.close(Some(close)).await;
                    break;
                }
            },
        }
    }
    if let Some(room) = &room {
        rooms.leave(room, id);
    }
}
