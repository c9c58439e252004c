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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::future::OptionFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use holdfast_protocol::{CloseCode, Encoding, ServerFrame, ServerShutdown};
use tokio_util::sync::CancellationToken;

use super::auth::authenticate;
use super::core::Session;
use super::frame::WsError;
use super::heartbeat::{Beat, Cadence, Heartbeat};
use crate::auth::Claims;
use crate::logs;
use crate::metrics::Transport;
use crate::node::{Admission, Node};
use crate::registry::SessionHandle;
use crate::room::encode;
use crate::timers::Timers;

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

/// What a connection brings to its opening, boxed: an `async` block keeps its captures all its
/// life, so what is needed only to open the session is held behind one pointer.
pub(crate) struct Opening {
    /// The node (the session keeps it once started).
    pub(crate) node: Node,
    /// The claims, when the token came with the upgrade request; otherwise the first frame
    /// must be `auth`.
    pub(crate) pre_auth: Option<Claims>,
    /// The upgrade request's `device` parameter, used when the token names no device.
    pub(crate) device: Option<String>,
    /// The connection's span (tracing on): it covers the upgrade and authentication and ends
    /// when the session starts (or is refused); the session's operations are its children.
    pub(crate) trace: Option<opentelemetry::Context>,
}

impl Opening {
    /// A connection to `node` that must authenticate in-band, without a device or a span.
    #[cfg(test)]
    pub(crate) fn new(node: Node) -> Opening {
        Opening {
            node,
            pre_auth: None,
            device: None,
            trace: None,
        }
    }
}

/// Runs a connection from upgrade to close.
/// (A plain function returning an `async move` block, not an `async fn`, so the socket is held
/// once in the task's state, not twice; see [`drive`].)
#[allow(clippy::manual_async_fn)] // see above: an `async fn` would hold its arguments twice
pub(crate) fn run<S, E>(
    mut ws: S,
    opening: Box<Opening>,
    admission: Admission,
    encoding: Encoding,
) -> impl std::future::Future<Output = ()>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    async move {
        let inner = &opening.node.inner;
        // In the timers' milliseconds: 8 bytes in the task's state, where an `Instant` is 16.
        let started = inner.timers.millis_now();
        inner.metrics.session_opened(Transport::WebSocket);
        // The opening is boxed so the task keeps only the state of the phase it is in: an idle
        // session's task holds the socket, the session and the loop's state, inline, and
        // nothing else. (The box is made in a statement of its own: a temporary of the
        // awaiting statement, `Box::pin(f).await`, would keep `f`'s full size reserved in this
        // future even though it was moved into the box.)
        let opening = Box::pin(open(opening, &mut ws, encoding, admission.ip()));
        let mut opened = opening.await;
        // The session stays where it is and the loop borrows it: a value moved into an awaited
        // future is held twice in the task's state (once here, once in the future). Nothing
        // else is held across the loop: what follows it looks the session up again.
        let code = match &mut opened {
            Ok(session) => drive(session, &mut ws).await,
            Err((_, code)) => *code,
        };
        let node = match &opened {
            Ok(session) => {
                let (id, user) = (&session.handle.id, &session.handle.user);
                let timers = &session.node.inner.timers;
                let elapsed = Duration::from_millis(timers.millis_now().saturating_sub(started));
                let peer = admission.ip();
                logs::session_ended(id, user, peer, Transport::WebSocket, code, elapsed);
                &session.node
            }
            Err((node, _)) => node,
        };
        drop(admission);
        node.inner
            .metrics
            .session_closed(Transport::WebSocket, code);
    }
}

/// Authenticates the connection (in-band unless `pre_auth` has the claims) and starts its
/// session; on failure the socket is closed and the close code returned.
async fn open<S, E>(
    opening: Box<Opening>,
    ws: &mut S,
    encoding: Encoding,
    peer: std::net::IpAddr,
) -> Result<Session, (Node, u16)>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let Opening {
        node,
        pre_auth,
        device,
        mut trace,
    } = *opening;
    let node = &node;
    let claims = match pre_auth {
        Some(c) => Ok(Box::new(c)),
        // A connect hook called after in-band `auth` is a child of the connection's span.
        None => match &trace {
            Some(cx) => {
                use opentelemetry::context::FutureExt as _;
                authenticate(node, ws, encoding)
                    .with_context(cx.clone())
                    .await
                    .map(Box::new)
            }
            None => authenticate(node, ws, encoding).await.map(Box::new),
        },
    };
    match claims {
        Ok(mut claims) => {
            claims.set_device(device.as_deref());
            let mut session = Session::start(node.clone(), claims, encoding).await;
            let (id, user) = (&session.handle.id, &session.handle.user);
            if let Some(cx) = trace.take() {
                session.trace = Some(Box::new(crate::telemetry::connection_started(cx, id, user)));
            }
            logs::session_started(id, user, peer, Transport::WebSocket);
            Ok(session)
        }
        Err(code) => {
            let inner = &node.inner;
            if let Some(reason) = logs::auth_close_reason(code) {
                (inner.auth_log).record(&inner.metrics, peer, Transport::WebSocket, reason);
            }
            // Authentication failed: the connection's span ends with the close code.
            if let Some(cx) = trace {
                use opentelemetry::trace::TraceContextExt;
                cx.span().set_attribute(opentelemetry::KeyValue::new(
                    "holdfast.close_code",
                    i64::from(code),
                ));
                crate::telemetry::end(&cx, "refused", false);
            }
            Err((node.clone(), code))
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

/// What ended a wait of the session loop early: a close asked for, or the drain.
enum Interrupt {
    Close(CloseCode),
    Drain,
}

impl From<Interrupt> for Ending {
    fn from(i: Interrupt) -> Ending {
        match i {
            Interrupt::Close(code) => Ending::Close(code),
            Interrupt::Drain => Ending::Drain,
        }
    }
}

/// Whether the session must stop: a close asked for on its handle (first), or the drain. The
/// task's waker is registered with the handle, which the drain wakes as well.
fn poll_interrupt(
    handle: &SessionHandle,
    drain: &CancellationToken,
    cx: &mut Context<'_>,
) -> Option<Interrupt> {
    if let Poll::Ready(code) = handle.poll_closed(cx) {
        return Some(Interrupt::Close(code));
    }
    drain.is_cancelled().then_some(Interrupt::Drain)
}

/// What an idle session was woken for.
enum Event<E> {
    Stop(Interrupt),
    Queued,
    Timer,
    Read(Option<Result<Message, E>>),
}

/// An idle session's one wait: a close or the drain, a queued frame, its deadline, or a frame
/// from the client, in that order of priority. One waker serves the handle's four signals
/// (close, drain, queue, and the node's timers, see [`crate::timers`]), so an idle session
/// holds no wait state beyond two references and its deadline.
struct Idle<'a, S> {
    /// The handle, the drain and the timers are reached through the session.
    session: &'a mut Session,
    ws: &'a mut S,
    /// The earliest deadline the session has armed with the node's timers (a millisecond of
    /// theirs) that has not come yet, [`NONE`] when none: a later deadline is armed once it
    /// has.
    armed: u64,
}

/// No deadline armed.
const NONE: u64 = u64::MAX;

impl<S, E> Future for Idle<'_, S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
{
    type Output = Event<E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event<E>> {
        let event = self.as_mut().next_event(cx);
        if event.is_ready() {
            // Whatever it was, the loop comes back here, registers again and looks at
            // everything first: until then, a wake-up (by a reply this very task queues, say)
            // would only poll the task again for nothing.
            self.session.handle.unregister();
        }
        event
    }
}

impl<S, E> Idle<'_, S>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
{
    fn next_event(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event<E>> {
        let this = self.get_mut();
        let (handle, inner) = (&this.session.handle, &this.session.node.inner);
        if let Some(stop) = poll_interrupt(handle, inner.drain.token(), cx) {
            return Poll::Ready(Event::Stop(stop));
        }
        if handle.has_queued() {
            return Poll::Ready(Event::Queued);
        }
        handle.register(cx);
        if handle.has_queued() {
            return Poll::Ready(Event::Queued);
        }
        if inner.timers.millis_now() >= this.armed {
            return Poll::Ready(Event::Timer);
        }
        this.ws.poll_next_unpin(cx).map(Event::Read)
    }
}

/// `fut` raced against a close or the drain (checked first), so a client that stopped
/// reading cannot pin its task in a write.
struct Guarded<'a, F> {
    /// The handle and the drain are reached through the session.
    session: &'a Session,
    fut: F,
}

impl<F: Future + Unpin> Future for Guarded<'_, F> {
    type Output = Result<F::Output, Interrupt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (handle, drain) = (&this.session.handle, this.session.node.inner.drain.token());
        if let Some(stop) = poll_interrupt(handle, drain, cx) {
            return Poll::Ready(Err(stop));
        }
        Pin::new(&mut this.fut).poll(cx).map(Ok)
    }
}

/// The session's heartbeat settings, from the node's configuration.
fn cadence(session: &Session) -> Cadence {
    let hb = &session.node.inner.config.heartbeat;
    Cadence::new(
        Duration::from_millis(hb.ping_interval_ms),
        Duration::from_millis(hb.pong_timeout_ms),
    )
}

/// What the loop writes after a wake-up.
enum Write {
    /// The queued frames (a batch).
    Queued,
    /// A ping.
    Ping,
}

/// A client frame for the session to handle.
enum Frame {
    Text(Utf8Bytes),
    Binary(bytes::Bytes),
}

/// Handles a client frame. Boxed by the loop, so its state exists only while it runs, and of
/// one type for every frame, so the loop holds a thin pointer to it.
#[allow(clippy::manual_async_fn)] // see [`drive`]
fn handle(session: &mut Session, frame: Frame) -> impl Future<Output = Option<CloseCode>> + '_ {
    async move {
        match frame {
            Frame::Text(text) => session.on_text(&text).await,
            Frame::Binary(bytes) if session.handle.encoding == Encoding::MsgPack => {
                session.on_message(&bytes).await
            }
            Frame::Binary(_) => session.on_unexpected_binary().await,
        }
    }
}

/// Writes `what` (see [`write_out`]) raced against a close or the drain. Boxed by the loop:
/// one allocation holds the write and its guard, behind a thin pointer.
async fn write_guarded<S: Sink<Message> + Unpin>(
    session: &Session,
    ws: &mut S,
    what: Write,
) -> Result<Result<(), S::Error>, Interrupt> {
    let metrics = &session.node.inner.metrics;
    let fut = std::pin::pin!(write_out(ws, what, &session.handle, metrics));
    Guarded { session, fut }.await
}

/// The session loop, until the session is finished; returns the close code to record.
/// (A plain function returning an `async move` block rather than an `async fn`: an `async fn`
/// moves its arguments into locals and so holds them twice in its state.)
///
/// The loop's state is what an idle session costs, so it is kept to the wait itself: every
/// other await is on a boxed future, nothing but what the wait needs is live across it (what a
/// wake-up leads to is decided after it), and nothing bigger than a pointer is held
/// across another await (a value moved into an awaited future, or the scrutinee of a `match`
/// around an await, would stay reserved in the state beside it).
#[allow(clippy::manual_async_fn)] // see above
pub(super) fn drive<'a, S, E>(
    session: &'a mut Session,
    ws: &'a mut S,
) -> impl std::future::Future<Output = u16> + 'a
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin + 'a,
    E: std::error::Error + 'static,
{
    // The loop's references and its armed deadline are the wait's own: the wait is made once,
    // here, and awaited by reference, so the loop's state holds them once (an `async` block's
    // captures and a wait made in it would each hold them).
    let mut idle = Idle {
        session,
        ws,
        armed: NONE,
    };
    async move {
        // One deadline serves the ping cadence, the pong deadline and the token expiry, all in
        // the timers' nanoseconds. (The node is reached through the session at each use
        // rather than held in locals: whatever the loop holds is held by every idle session.)
        let session = &*idle.session;
        let mut heartbeat =
            Heartbeat::new(session.node.inner.timers.nanos_now(), &cadence(session));
        let ending = loop {
            let session = &*idle.session;
            let timers = &session.node.inner.timers;
            let now = timers.nanos_now();
            let deadline = heartbeat
                .wake_at(now, &cadence(session))
                .min(session.handle.expiry());
            let at = Timers::millis_of_nanos(deadline);
            if idle.armed != NONE && idle.armed <= timers.millis_now() {
                idle.armed = NONE;
            }
            if idle.armed == NONE || at < idle.armed {
                // Armed at most a minute ahead: woken then, the loop arms the rest.
                idle.armed = timers.arm(at, &session.handle);
            }
            // Woken by the armed deadline, the loop looks at its own: when it is later (a pong
            // moved it), the later one is armed then. What the wake-up leads to is decided once
            // the wait is over (the event ends with this statement), so nothing of it is
            // reserved beside the wait or what follows.
            let (frame, write) = match (&mut idle).await {
                Event::Stop(stop) => break stop.into(),
                Event::Queued => (None, Some(Write::Queued)),
                Event::Timer => {
                    let now = idle.session.node.inner.timers.nanos_now();
                    if now >= idle.session.handle.expiry() {
                        break Ending::Close(CloseCode::TokenExpired);
                    }
                    match heartbeat.poll(now, &cadence(idle.session)) {
                        Beat::TimedOut => break Ending::Close(CloseCode::HeartbeatTimeout),
                        Beat::Ping => (None, Some(Write::Ping)),
                        Beat::Wait(_) => continue,
                    }
                }
                Event::Read(None) => break Ending::Lost,
                // A broken frame still gets a close frame with its code, not a dropped
                // connection the client would take for network trouble.
                Event::Read(Some(Err(e))) => match read_close_code(&e) {
                    Some(code) => break Ending::Close(code),
                    None => break Ending::Lost,
                },
                Event::Read(Some(Ok(msg))) => match msg {
                    Message::Text(text) => (Some(Frame::Text(text)), None),
                    Message::Binary(bytes) => (Some(Frame::Binary(bytes)), None),
                    Message::Pong(_) => {
                        let inner = &idle.session.node.inner;
                        let now = inner.timers.nanos_now();
                        if let Some(rtt) = heartbeat.on_pong(now, &cadence(idle.session)) {
                            inner.metrics.heartbeat_rtt.observe(rtt.as_secs_f64());
                        }
                        continue;
                    }
                    Message::Ping(_) => continue,
                    Message::Close(frame) => {
                        break Ending::ClientClosed(frame.map(|f| f.code).unwrap_or(1005));
                    }
                },
            };
            // The handling is moved whole into the awaited future (an `if let` on an option
            // would keep it reserved beside it), so its borrow of the session ends there.
            let session = &mut *idle.session;
            let handling = OptionFuture::from(frame.map(|f| Box::pin(handle(session, f))));
            if let Some(Some(code)) = handling.await {
                break Ending::Close(code);
            }
            if let Some(what) = write {
                let writing = Box::pin(write_guarded(&*idle.session, &mut *idle.ws, what));
                match writing.await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Ending::Lost,
                    Err(stop) => break stop.into(),
                }
            }
        };
        let closing = Box::pin(close(&mut *idle.ws, ending, &*idle.session));
        let code = closing.await;
        let finishing = Box::pin(idle.session.finish());
        finishing.await;
        tracing::debug!(session = %idle.session.handle.id, code, "session ended");
        code
    }
}

/// Ends the connection as `ending` says; returns the close code to record.
async fn close<S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin, E>(
    ws: &mut S,
    ending: Ending,
    session: &Session,
) -> u16 {
    match ending {
        Ending::Close(code) => {
            close_with(ws, code).await;
            linger(ws).await;
            code.code()
        }
        Ending::Drain => {
            let notice = ServerFrame::ServerShutdown(ServerShutdown {
                reason: "node draining".into(),
                reconnect_after_ms: session.node.inner.config.server.shutdown_reconnect_after_ms,
            });
            write_now(ws, session.handle.encoding, &notice).await;
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
}

/// Writes a ping, or the queued frames (up to [`MAX_BATCH`]) with a single flush.
async fn write_out<S: Sink<Message> + Unpin>(
    ws: &mut S,
    what: Write,
    handle: &SessionHandle,
    metrics: &crate::metrics::Metrics,
) -> Result<(), S::Error> {
    if let Write::Ping = what {
        return ws.send(Message::Ping(bytes::Bytes::new())).await;
    }
    let mut n = 0u64;
    // Emission times of the batch's room frames; fan-out lag is observed once the flush has
    // completed, so it includes the write itself.
    let mut emitted = [None; MAX_BATCH];
    while let Some(out) = handle.try_pop() {
        if let Some(slot) = emitted.get_mut(n as usize) {
            *slot = out.emitted;
        }
        ws.feed(out.payload.into_message()).await?;
        n += 1;
        if n >= MAX_BATCH as u64 {
            break;
        }
    }
    ws.flush().await?;
    for t in emitted.iter().flatten() {
        metrics.fanout_lag.observe(t.elapsed().as_secs_f64());
    }
    metrics.messages_sent.inc_by(n);
    Ok(())
}
