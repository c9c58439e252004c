//! The node's socket readiness for plain WebSocket sessions: one epoll instance of its own,
//! instead of a registration with tokio's I/O driver per socket.
//!
//! tokio keeps a cache-line-aligned registration (256 bytes with its reference counts) for
//! every socket it drives, about a sixth of what an idle session costs. Here a socket costs a
//! 24-byte slot in a table (its readiness, a tick and the waker of the task using it) and its
//! epoll registration, which lives in the kernel.
//!
//! - The epoll instance is itself registered with tokio, once, as an [`AsyncFd`]: one task per
//!   node waits on it, reads the ready events (edge-triggered) and wakes the sessions' tasks on
//!   the worker it runs on, as tokio's own driver would. No thread of its own.
//! - A slot's readiness is set by an event and cleared by the stream when a read (or a write)
//!   answers `WouldBlock`, unless an event came meanwhile (the tick changed): an edge is never
//!   lost. The waker is stored, and the readiness cleared, under the same lock the events are
//!   applied under.
//! - A socket is deregistered, and its slot freed, under the lock the events are read and
//!   applied under: no batch of events can name a slot that was freed (the slot's generation
//!   is also in the event's token).
//! - The task runs while sockets are registered and ends when the last one is gone (the next
//!   registration starts it again), so a node without sessions keeps no task.
//!
//! TLS sessions and streams of other kinds stay with tokio's driver.

use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::event::Source;
use mio::{Events, Interest, Poll as Epoll, Token};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Readiness bits of a slot.
const READ: u8 = 1;
const WRITE: u8 = 2;
/// Events read per turn of the task.
const EVENTS: usize = 1024;

/// One registered socket.
#[derive(Default)]
struct Slot {
    /// Bumped when the slot is freed: an event naming an older generation is ignored.
    generation: u32,
    /// Bumped by every event (wrapping): a stream clears a readiness only when no event came
    /// since it looked.
    tick: u16,
    /// [`READ`] and [`WRITE`] as the last events left them (set at registration).
    ready: u8,
    /// The task waiting on the socket (one task drives a socket).
    waker: Option<Waker>,
}

struct State {
    epoll: Epoll,
    events: Events,
    slots: Vec<Slot>,
    /// Freed slots, reused first.
    free: Vec<u32>,
    /// Registered sockets.
    live: usize,
    /// Whether the task that reads the events is running.
    running: bool,
    /// The task's waker, woken when the last socket is gone so it can end.
    task: Option<Waker>,
    /// The epoll instance failed: every stream fails, and no socket is taken any more.
    broken: bool,
}

/// The epoll instance of one node (or one echo server), shared by its streams.
pub struct Reactor {
    state: Mutex<State>,
    /// The epoll instance's descriptor (owned by `state.epoll`, which lives as long as this).
    fd: RawFd,
}

fn token(index: u32, generation: u32) -> Token {
    Token(((generation as usize) << 32) | index as usize)
}

impl Reactor {
    /// A new epoll instance.
    pub fn new() -> io::Result<Arc<Reactor>> {
        let epoll = Epoll::new()?;
        let fd = epoll.as_raw_fd();
        Ok(Arc::new(Reactor {
            state: Mutex::new(State {
                epoll,
                events: Events::with_capacity(EVENTS),
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                running: false,
                task: None,
                broken: false,
            }),
            fd,
        }))
    }

    /// A new epoll instance, or `None` (logged) when none can be made: the sockets then stay
    /// with tokio's driver.
    pub fn shared() -> Option<Arc<Reactor>> {
        Reactor::new()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no epoll instance; sockets stay with tokio"),
            )
            .ok()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `stream` from tokio's driver into this epoll instance, or gives it back to tokio
    /// when that fails; an error when the socket is lost on the way (tokio could not let go
    /// of it). Must be called within the Tokio runtime: the task that reads the events is
    /// started here when it is not running.
    pub fn adopt(self: &Arc<Self>, stream: tokio::net::TcpStream) -> io::Result<Adopted> {
        if self.lock().broken {
            return Ok(Adopted::Tokio(stream));
        }
        // `into_std` leaves the socket non-blocking, as mio wants it.
        let io = mio::net::TcpStream::from_std(stream.into_std()?);
        match self.register(io) {
            Ok(s) => Ok(Adopted::Polled(s)),
            Err(io) => back_to_tokio(io),
        }
    }

    /// Takes a listener from tokio's driver; gives it back when that fails.
    pub fn listen(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> io::Result<Result<Listener, tokio::net::TcpListener>> {
        if self.lock().broken {
            return Ok(Err(listener));
        }
        let io = mio::net::TcpListener::from_std(listener.into_std()?);
        match self.register(io) {
            Ok(l) => Ok(Ok(l)),
            Err(io) => tokio::net::TcpListener::from_std(std::net::TcpListener::from(io)).map(Err),
        }
    }

    /// Registers `io` (non-blocking), or gives it back.
    fn register<T: Source>(self: &Arc<Self>, mut io: T) -> Result<Polled<T>, T> {
        let mut st = self.lock();
        if st.broken {
            return Err(io);
        }
        let index = match st.free.pop() {
            Some(i) => i,
            None => match u32::try_from(st.slots.len()) {
                Ok(i) => {
                    st.slots.push(Slot::default());
                    i
                }
                Err(_) => return Err(io),
            },
        };
        let generation = st.slots.get(index as usize).map_or(0, |s| s.generation);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = st
            .epoll
            .registry()
            .register(&mut io, token(index, generation), interest);
        if registered.is_err() {
            st.free.push(index);
            return Err(io);
        }
        if let Some(slot) = st.slots.get_mut(index as usize) {
            // Assumed ready until a read or write says otherwise.
            slot.ready = READ | WRITE;
            slot.waker = None;
        }
        st.live += 1;
        let start = !st.running;
        st.running = true;
        drop(st);
        if start {
            tokio::spawn(run(self.clone()));
        }
        Ok(Polled {
            io,
            index,
            reactor: self.clone(),
        })
    }

    /// Sockets registered.
    pub fn len(&self) -> usize {
        self.lock().live
    }

    /// Whether no socket is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the task reading the events runs (tests).
    #[cfg(test)]
    fn running(&self) -> bool {
        self.lock().running
    }

    /// `Some(tick)` when the slot is `dir`-ready; otherwise registers the waker and returns
    /// `None`.
    fn poll_ready(&self, index: u32, dir: u8, cx: &mut Context<'_>) -> Poll<io::Result<u16>> {
        let mut st = self.lock();
        if st.broken {
            return Poll::Ready(Err(broken()));
        }
        let Some(slot) = st.slots.get_mut(index as usize) else {
            return Poll::Ready(Err(broken()));
        };
        if slot.ready & dir != 0 {
            return Poll::Ready(Ok(slot.tick));
        }
        set_waker(slot, cx);
        Poll::Pending
    }

    /// The slot answered `WouldBlock` for `dir` at `tick`: clears the readiness and registers
    /// the waker, unless an event came since (then returns `false`: try again).
    fn clear(&self, index: u32, dir: u8, tick: u16, cx: &mut Context<'_>) -> bool {
        let mut st = self.lock();
        let Some(slot) = st.slots.get_mut(index as usize) else {
            return true;
        };
        if slot.tick != tick {
            return false;
        }
        slot.ready &= !dir;
        set_waker(slot, cx);
        true
    }

    /// Deregisters a stream's socket and frees its slot.
    fn release(&self, io: &mut impl Source, index: u32) {
        let mut st = self.lock();
        let _ = st.epoll.registry().deregister(io);
        if let Some(slot) = st.slots.get_mut(index as usize) {
            slot.generation = slot.generation.wrapping_add(1);
            slot.waker = None;
            slot.ready = 0;
            st.free.push(index);
            st.live -= 1;
        }
        let task = (st.live == 0).then(|| st.task.take()).flatten();
        drop(st);
        if let Some(task) = task {
            task.wake();
        }
    }

    /// Reads the ready events and applies them; returns the wakers to wake, and whether the
    /// events were all read (fewer than the buffer holds).
    fn turn(&self, wake: &mut Vec<Waker>) -> io::Result<bool> {
        let mut st = self.lock();
        let st = &mut *st;
        loop {
            match st.epoll.poll(&mut st.events, Some(Duration::ZERO)) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut n = 0;
        for event in st.events.iter() {
            n += 1;
            let raw = event.token().0;
            let (index, generation) = (raw as u32, (raw >> 32) as u32);
            let Some(slot) = st.slots.get_mut(index as usize) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            let failed = event.is_error();
            let mut bits = 0;
            if event.is_readable() || event.is_read_closed() || failed {
                bits |= READ;
            }
            if event.is_writable() || event.is_write_closed() || failed {
                bits |= WRITE;
            }
            slot.ready |= bits;
            slot.tick = slot.tick.wrapping_add(1);
            if let Some(w) = slot.waker.take() {
                wake.push(w);
            }
        }
        Ok(n < EVENTS)
    }

    /// The epoll instance failed: every stream's next poll fails (its session ends), and no
    /// socket is taken any more.
    fn fail(&self, e: &io::Error) {
        tracing::error!(error = %e, "socket readiness failed; its sessions are closed");
        let mut st = self.lock();
        st.broken = true;
        let wakers: Vec<Waker> = st.slots.iter_mut().filter_map(|s| s.waker.take()).collect();
        drop(st);
        wakers.into_iter().for_each(Waker::wake);
    }
}

fn set_waker(slot: &mut Slot, cx: &Context<'_>) {
    match &slot.waker {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => slot.waker = Some(cx.waker().clone()),
    }
}

fn broken() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "socket readiness failed")
}

/// A socket that could not be registered, back to tokio's driver.
fn back_to_tokio(io: mio::net::TcpStream) -> io::Result<Adopted> {
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(io)).map(Adopted::Tokio)
}

/// What became of a stream given to [`Reactor::adopt`].
pub enum Adopted {
    /// Registered with the reactor.
    Polled(Stream),
    /// Still (or back) with tokio's driver.
    Tokio(tokio::net::TcpStream),
}

/// The descriptor tokio waits on.
struct EpollFd(Arc<Reactor>);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd
    }
}

/// The task: reads events until no socket is registered.
async fn run(reactor: Arc<Reactor>) {
    loop {
        if let Err(e) = serve(&reactor).await {
            reactor.fail(&e);
        }
        // A socket registered since `serve` returned found the task running and did not
        // start another: look again before ending.
        let mut st = reactor.lock();
        if st.live == 0 || st.broken {
            st.running = false;
            st.task = None;
            return;
        }
    }
}

/// Waits for events and applies them, until no socket is registered (the epoll instance is
/// then given back to tokio's driver, so a later `serve` can register it again).
async fn serve(reactor: &Arc<Reactor>) -> io::Result<()> {
    // `with_interest` is deprecated for `register_with_interest`, which is `unsafe` (the
    // workspace forbids unsafe code) only to make its caller promise that the descriptor stays
    // open while registered: it does, `EpollFd` holds the reactor that owns it.
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(EpollFd(reactor.clone()), tokio::io::Interest::READABLE)?;
    let mut wake = Vec::new();
    loop {
        let guard = poll_fn(|cx| {
            {
                let mut st = reactor.lock();
                if st.live == 0 {
                    return Poll::Ready(None);
                }
                match &st.task {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.task = Some(cx.waker().clone()),
                }
            }
            fd.poll_read_ready(cx).map(Some)
        })
        .await;
        let Some(guard) = guard else {
            return Ok(());
        };
        let mut guard = guard?;
        let drained = reactor.turn(&mut wake)?;
        if drained {
            // An event after this turn's read bumps the readiness again: clearing it here
            // only clears what was read.
            guard.clear_ready();
        }
        wake.drain(..).for_each(Waker::wake);
        if !drained {
            // More to read: let the woken tasks run first.
            tokio::task::yield_now().await;
        }
    }
}

/// A socket whose readiness comes from a [`Reactor`] (16 bytes for a TCP stream).
pub struct Polled<T: Source> {
    io: T,
    index: u32,
    reactor: Arc<Reactor>,
}

/// A plain TCP stream on a [`Reactor`].
pub type Stream = Polled<mio::net::TcpStream>;

/// A TCP listener on a [`Reactor`]: the streams it accepts are registered at once.
pub type Listener = Polled<mio::net::TcpListener>;

impl<T: Source> Polled<T> {
    /// Runs `f` on the socket when it is `dir`-ready, until it does not answer `WouldBlock`.
    fn poll_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        dir: u8,
        mut f: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let tick = match self.reactor.poll_ready(self.index, dir, cx) {
                Poll::Ready(Ok(t)) => t,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match f(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.reactor.clear(self.index, dir, tick, cx) {
                        return Poll::Pending;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

impl<T: Source> Drop for Polled<T> {
    fn drop(&mut self) {
        self.reactor.release(&mut self.io, self.index);
    }
}

/// An accepted connection.
pub enum Accepted {
    /// Registered with the listener's reactor.
    Polled(Stream),
    /// With tokio's driver (the reactor could not take it).
    Tokio(tokio::net::TcpStream),
}

impl Listener {
    /// The next connection, registered with the listener's reactor (or tokio's driver if that
    /// fails), and its peer's address.
    pub async fn accept(&mut self) -> io::Result<(Accepted, std::net::SocketAddr)> {
        let (io, peer) = poll_fn(|cx| self.poll_io(cx, READ, |l| l.accept())).await?;
        let accepted = match self.reactor.register(io) {
            Ok(s) => Accepted::Polled(s),
            Err(io) => match back_to_tokio(io)? {
                Adopted::Tokio(s) => Accepted::Tokio(s),
                Adopted::Polled(s) => Accepted::Polled(s),
            },
        };
        Ok((accepted, peer))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.local_addr()
    }
}

impl Stream {
    /// Writes what the socket takes at once, without waiting.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.io).write(buf)
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.io.set_nodelay(on)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let unfilled = buf.initialize_unfilled();
        let n = std::task::ready!(this.poll_io(cx, READ, |mut io| io.read(unfilled)))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, WRITE, |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, WRITE, |mut io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests;
