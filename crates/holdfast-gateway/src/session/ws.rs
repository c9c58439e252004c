//! The WebSocket loop: one task per connection, from upgrade to close.
//!
//! The task is the only writer of its socket. Everything addressed to the session (room
//! messages, replies, direct messages) arrives through its bounded queue and is written in
//! batches: one flush (one write syscall in the common case) per batch of queued frames.
//! Writes are raced against the close signal and the drain, so a client that stopped reading
//! cannot pin its task.
//!
//! The loop is generic over the connection: anything that is both a sink and a stream of
//! frames, as axum's `WebSocket` is, so tests can drive a session through an in-memory pair.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use holdfast_protocol::{CloseCode, Encoding, ServerFrame, ServerShutdown};
use tokio::time::{sleep_until, Instant};

use super::auth::authenticate;
use super::core::Session;
use super::frame::WsError;
use super::heartbeat::{Beat, Heartbeat};
use crate::auth::Claims;
use crate::logs;
use crate::metrics::Transport;
use crate::node::{Admission, Node};
use crate::registry::{Outbound, SessionHandle};
use crate::room::encode;

/// Most frames written per flush.
const MAX_BATCH: usize = 64;
/// How long a close or shutdown notice may take to write before the socket is dropped.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long, and for how many frames, the server keeps reading after its close frame.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_FRAMES: usize = 1024;

/// After the server's close frame: reads and discards what the client still sends, until its
/// close answer (or the connection's end), bounded in time and count. Dropping a socket with
/// unread input makes the kernel reset the connection, and the client would then lose the close
/// frame (and its code: a rate-limited client would see 1006 and reconnect at once).
pub(crate) async fn linger<S, E>(ws: &mut S)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + LINGER;
    for _ in 0..MAX_LINGER_FRAMES {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// How a session loop ended.
enum Ending {
    /// Close the socket with this code (a close frame is attempted).
    Close(CloseCode),
    /// The node is draining: `server_shutdown`, then 1001.
    Drain,
    /// The client closed, with its code (1005 when it gave none).
    ClientClosed(u16),
    /// The connection is gone without a close (1006).
    Lost,
}

/// Runs a connection from upgrade to close. `pre_auth` holds the claims when the token came
/// with the upgrade request; otherwise the first frame must be `auth`. `device` is the
/// upgrade request's `device` parameter, used when the token names no device. `trace` is the
/// connection's span (tracing on): it covers the upgrade and authentication and ends when the
/// session starts (or is refused); the session's operations are its children.
/// (A plain function returning an `async move` block, not an `async fn`, so the socket is held
/// once in the task's state, not twice; see [`drive`].)
#[allow(clippy::manual_async_fn)] // see above: an `async fn` would hold its arguments twice
pub(crate) fn run<S, E>(
    node: Node,
    mut ws: S,
    pre_auth: Option<Box<Claims>>,
    device: Option<String>,
    admission: Admission,
    encoding: Encoding,
    mut trace: Option<opentelemetry::Context>,
) -> impl std::future::Future<Output = ()>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    async move {
        let metrics = node.inner.metrics.clone();
        let (peer, started) = (admission.ip(), std::time::Instant::now());
        metrics.session_opened(Transport::WebSocket);
        // The phases are boxed so the task keeps only the state of the phase it is in: an idle
        // session's task stays small. Each box is made in a statement of its own: a temporary of
        // the awaiting statement (`Box::pin(f).await`) would keep `f`'s full size reserved in
        // this future even though it was moved into the box.
        let code = match pre_auth {
            Some(c) => Ok(c),
            // A connect hook called after in-band `auth` is a child of the connection's span.
            None => match &trace {
                Some(cx) => {
                    use opentelemetry::context::FutureExt as _;
                    let auth =
                        Box::pin(authenticate(&node, &mut ws, encoding).with_context(cx.clone()));
                    auth.await.map(Box::new)
                }
                None => {
                    let auth = Box::pin(authenticate(&node, &mut ws, encoding));
                    auth.await.map(Box::new)
                }
            },
        };
        let code = match code {
            Ok(claims) => {
                let claims = Box::new(claims.with_device(device.as_deref()));
                let start = Box::pin(Session::start(node, claims, encoding));
                let mut session = start.await;
                let (id, user) = (session.handle.id.clone(), session.handle.user.clone());
                if let Some(cx) = trace.take() {
                    session.trace = Some(crate::telemetry::connection_started(cx, &id, &user));
                }
                logs::session_started(&id, &user, peer, Transport::WebSocket);
                let driving = Box::pin(drive(session, &mut ws));
                let code = driving.await;
                logs::session_ended(
                    &id,
                    &user,
                    peer,
                    Transport::WebSocket,
                    code,
                    started.elapsed(),
                );
                code
            }
            Err(code) => {
                if let Some(reason) = logs::auth_close_reason(code) {
                    (node.inner.auth_log).record(&metrics, peer, Transport::WebSocket, reason);
                }
                code
            }
        };
        drop(admission);
        metrics.session_closed(Transport::WebSocket, code);
        // Authentication failed: the connection's span ends with the close code.
        if let Some(cx) = trace {
            use opentelemetry::trace::TraceContextExt;
            cx.span().set_attribute(opentelemetry::KeyValue::new(
                "holdfast.close_code",
                i64::from(code),
            ));
            crate::telemetry::end(&cx, "refused", false);
        }
    }
}

/// Writes one frame directly (before the session's queue exists, or after it is done).
pub(super) async fn write_now<S: Sink<Message> + Unpin>(
    ws: &mut S,
    encoding: Encoding,
    frame: &ServerFrame,
) {
    let msg = match encoding {
        Encoding::Json => Message::Text(encode(frame)),
        Encoding::MsgPack => {
            Message::Binary(holdfast_protocol::msgpack::encode_msgpack(frame).into())
        }
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.send(msg)).await;
}

/// Sends a close frame with `code`, bounded in time.
pub(crate) async fn close_with<S: Sink<Message> + Unpin>(ws: &mut S, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
}

/// The close code for a failed read, the one mapping of read errors for every WebSocket
/// server of the gateway (the `/ws` sessions and the conformance echo server): the socket's
/// own error ([`WsError::close_code`]: 1009 for a message or frame over the configured size,
/// 1007 for a text message that is not UTF-8, 1002 for any other broken frame), and `None`
/// when the connection itself failed (I/O error, reset): nothing can be sent then. The error
/// chain is searched, so an error wrapped by another is found as well.
pub(crate) fn read_close_code(e: &(dyn std::error::Error + 'static)) -> Option<CloseCode> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(e) = err.downcast_ref::<WsError>() {
            return e.close_code();
        }
        cur = err.source();
    }
    None
}

/// The session loop; returns the close code to record.
/// (A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// moves its arguments into locals and so holds the session twice in its state.)
#[allow(clippy::manual_async_fn)] // see above
pub(super) fn drive<'a, S, E>(
    mut session: Session,
    ws: &'a mut S,
) -> impl std::future::Future<Output = u16> + 'a
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin + 'a,
    E: std::error::Error + 'static,
{
    async move {
        let inner = session.node.inner.clone();
        let hb = &inner.config.heartbeat;
        // One timer serves the ping cadence, the pong deadline and the token expiry, so an idle
        // session holds no timer allocation of its own.
        let mut heartbeat = Heartbeat::new(
            Instant::now(),
            Duration::from_millis(hb.ping_interval_ms),
            Duration::from_millis(hb.pong_timeout_ms),
        );
        let handle = session.handle.clone();
        let ending = loop {
            let timer = heartbeat.deadline().min(session.expiry);
            tokio::select! {
                biased;
                code = handle.closed() => break Ending::Close(code),
                _ = inner.drain.token().cancelled() => break Ending::Drain,
                out = handle.next() => {
                    // Boxed: the write state exists only while a batch is being written.
                    let write = Box::pin(write_batch(ws, out, &handle, &inner.metrics));
                    tokio::select! {
                        r = write => {
                            if r.is_err() { break Ending::Lost }
                        }
                        code = handle.closed() => break Ending::Close(code),
                        _ = inner.drain.token().cancelled() => break Ending::Drain,
                    }
                }
                _ = sleep_until(timer) => {
                    let now = Instant::now();
                    if now >= session.expiry {
                        break Ending::Close(CloseCode::TokenExpired);
                    }
                    match heartbeat.poll(now) {
                        Beat::TimedOut => break Ending::Close(CloseCode::HeartbeatTimeout),
                        Beat::Ping => {
                            let send = Box::pin(ws.send(Message::Ping(bytes::Bytes::new())));
                            tokio::select! {
                                r = send => if r.is_err() { break Ending::Lost },
                                code = handle.closed() => break Ending::Close(code),
                                _ = inner.drain.token().cancelled() => break Ending::Drain,
                            }
                        }
                        Beat::Wait(_) => {}
                    }
                }
                msg = ws.next() => match msg {
                    None => break Ending::Lost,
                    Some(Err(e)) => {
                        // A broken frame still gets a close frame with its code, not a dropped
                        // connection the client would take for network trouble.
                        match read_close_code(&e) {
                            Some(code) => break Ending::Close(code),
                            None => break Ending::Lost,
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        // Boxed for the same reason (and in its own statement, see `run`): frame
                        // handling state is transient.
                        let handling = Box::pin(session.on_text(&text));
                        if let Some(code) = handling.await {
                            break Ending::Close(code);
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        let handling: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
                            if handle.encoding == Encoding::MsgPack {
                                Box::pin(session.on_message(&bytes))
                            } else {
                                Box::pin(session.on_unexpected_binary())
                            };
                        if let Some(code) = handling.await {
                            break Ending::Close(code);
                        }
                    }
                    Some(Ok(Message::Pong(_))) => {
                        if let Some(rtt) = heartbeat.on_pong(Instant::now()) {
                            inner.metrics.heartbeat_rtt.observe(rtt.as_secs_f64());
                        }
                    }
                    Some(Ok(Message::Ping(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        break Ending::ClientClosed(frame.map(|f| f.code).unwrap_or(1005));
                    }
                }
            }
        };
        let closing = Box::pin(async {
            match ending {
                Ending::Close(code) => {
                    close_with(ws, code).await;
                    linger(ws).await;
                    code.code()
                }
                Ending::Drain => {
                    let notice = ServerFrame::ServerShutdown(ServerShutdown {
                        reason: "node draining".into(),
                        reconnect_after_ms: inner.config.server.shutdown_reconnect_after_ms,
                    });
                    write_now(ws, handle.encoding, &notice).await;
                    close_with(ws, CloseCode::GoingAway).await;
                    linger(ws).await;
                    CloseCode::GoingAway.code()
                }
                Ending::ClientClosed(code) => {
                    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, ws.flush()).await;
                    code
                }
                Ending::Lost => 1006,
            }
        });
        let code = closing.await;
        let finishing = Box::pin(session.finish());
        finishing.await;
        tracing::debug!(session = %handle.id, code, "session ended");
        code
    }
}

/// Writes `first` and whatever else is queued (up to [`MAX_BATCH`]) with a single flush.
async fn write_batch<S: Sink<Message> + Unpin>(
    ws: &mut S,
    first: Outbound,
    handle: &SessionHandle,
    metrics: &crate::metrics::Metrics,
) -> Result<(), S::Error> {
    let mut n = 0u64;
    let mut out = first;
    // Emission times of the batch's room frames; fan-out lag is observed once the flush has
    // completed, so it includes the write itself.
    let mut emitted = [None; MAX_BATCH];
    loop {
        if let Some(slot) = emitted.get_mut(n as usize) {
            *slot = out.emitted;
        }
        ws.feed(out.payload.into_message()).await?;
        n += 1;
        if n >= MAX_BATCH as u64 {
            break;
        }
        match handle.try_pop() {
            Some(next) => out = next,
            None => break,
        }
    }
    ws.flush().await?;
    for t in emitted.iter().flatten() {
        metrics.fanout_lag.observe(t.elapsed().as_secs_f64());
    }
    metrics.messages_sent.inc_by(n);
    Ok(())
}
