//! The accept side the server and the gateway node share: a listener bound with a chosen
//! backlog, the accept loop, admission against the limits (handshakes in progress,
//! connections), refusals that never block the loop, and a spare descriptor so that a pending
//! connection still gets its `503` when the process is out of descriptors.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::handshake::UNAVAILABLE;
use crate::error::Result;
use crate::telemetry::event;

/// How long the accept loop waits after an `accept` error it cannot act on (no busy spin).
const BACKOFF: Duration = Duration::from_millis(50);
/// A cheap descriptor to hold in reserve.
const SPARE_PATH: &str = "/dev/null";

/// Binds `addr` and listens with `backlog`. Like `TcpListener::bind` (which listens with a
/// fixed backlog): `SO_REUSEADDR` on unix, close-on-exec, `IPV6_V6ONLY` left at the system
/// default (dual stack for `[::]` on Linux).
pub(crate) fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    // The kernel caps it (Linux: net.core.somaxconn).
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock.into())
}

/// [`listen`] on each address `addrs` resolves to, until one binds (as `TcpListener::bind`).
pub(crate) fn listen_any(addrs: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last = None;
    for a in addrs.to_socket_addrs()? {
        match listen(a, backlog) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// Wakes an accept loop blocked on `listener` (so it sees that its component is stopping):
/// a throwaway connection to `addr`, and, when that cannot be made (out of descriptors), a
/// shutdown of the listening socket, which makes a blocked `accept` return on Linux.
pub(crate) fn wake(listener: &Weak<TcpListener>, addr: SocketAddr) {
    if super::handshake::wake_listener(addr) {
        return;
    }
    if let Some(l) = listener.upgrade() {
        let _ = SockRef::from(&*l).shutdown(Shutdown::Read);
    }
}

/// Handshakes in progress, counted from accept until the connection is registered or ends;
/// their sockets are kept so a stopping component can cut them short.
#[derive(Debug, Default)]
pub(crate) struct Handshakes(Arc<InProgress>);

#[derive(Debug, Default)]
struct InProgress {
    count: AtomicUsize,
    next: AtomicU64,
    socks: Mutex<HashMap<u64, Arc<TcpStream>>>,
}

impl Handshakes {
    pub(crate) fn in_progress(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    fn begin(&self, sock: &Arc<TcpStream>) -> HandshakeSlot {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.socks.lock().insert(id, sock.clone());
        self.0.count.fetch_add(1, Ordering::AcqRel);
        HandshakeSlot {
            of: self.0.clone(),
            id,
        }
    }

    /// Shuts down every socket still in its handshake, so no thread of a stopping component
    /// waits out a silent peer's deadline.
    pub(crate) fn abort_all(&self) {
        for s in self.0.socks.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// One handshake in progress: dropping it, however the handshake ends, counts it out.
#[derive(Debug)]
pub(crate) struct HandshakeSlot {
    of: Arc<InProgress>,
    id: u64,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.of.socks.lock().remove(&self.id);
        self.of.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a new connection is refused: the `reason` logged and the limit reached.
pub(crate) type Refusal = (&'static str, usize);

/// What the accept loop needs of its component.
pub(crate) trait Acceptor: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Stopping or completing: the loop ends.
    fn stopping(&self) -> bool;
    fn handshakes(&self) -> &Handshakes;
    /// The limit a new connection would break, given the handshakes in progress (checked by
    /// the loop before it spawns anything).
    fn over_limit(&self, in_progress: usize) -> Option<Refusal>;
    /// Starts serving an admitted connection on a thread of its own (which keeps `slot`
    /// until the handshake is over). Fails when no thread could be started.
    fn serve(
        self: &Arc<Self>,
        sock: Arc<TcpStream>,
        peer: SocketAddr,
        accepted_at: Instant,
        slot: HandshakeSlot,
    ) -> Result<()>;
}

/// The accept thread: admits or refuses each connection, never blocking on one.
pub(crate) fn accept_loop<A: Acceptor>(weak: Weak<A>, listener: Arc<TcpListener>) {
    let mut spare = Spare::new();
    loop {
        // Blocks holding no reference to the component, so dropping it is never held up.
        let accepted = match listener.accept() {
            Ok((sock, peer)) => Ok(Accepted::Conn(sock, peer)),
            Err(e) if out_of_descriptors(&e) => spare.accept_on_spare(&listener, e),
            Err(e) => Err(e),
        };
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopping() {
            return;
        }
        let name = inner.name();
        match accepted {
            Ok(Accepted::Conn(sock, peer)) => admit(&inner, sock, peer),
            Ok(Accepted::Refused(peer)) => {
                log::warn!(component = name, peer:% = peer, reason = "descriptors", status = 503; "{}", event::CONNECTION_REFUSED);
            }
            Err(e) => {
                log::warn!(component = name, error:% = e; "{}", event::ACCEPT_FAILED);
                drop(inner);
                std::thread::sleep(BACKOFF);
            }
        }
    }
}

fn admit<A: Acceptor>(inner: &Arc<A>, sock: TcpStream, peer: SocketAddr) {
    let accepted_at = Instant::now();
    let name = inner.name();
    if let Some((reason, limit)) = inner.over_limit(inner.handshakes().in_progress()) {
        log::warn!(component = name, peer:% = peer, reason, limit, status = 503; "{}", event::CONNECTION_REFUSED);
        refuse(&sock);
        return;
    }
    // Kept here too, so a connection whose thread could not start still gets its answer.
    let sock = Arc::new(sock);
    let slot = inner.handshakes().begin(&sock);
    if let Err(e) = inner.serve(sock.clone(), peer, accepted_at, slot) {
        log::warn!(component = name, peer:% = peer, error:% = e, status = 503; "{}", event::CONNECTION_SETUP_FAILED);
        refuse(&sock);
    }
}

/// Answers `503` and half-closes, without blocking the caller. Request bytes that already
/// arrived are read and discarded first: closing a socket with unread data sends a reset,
/// which can destroy the response before the peer reads it.
pub(crate) fn refuse(sock: &TcpStream) {
    if sock.set_nonblocking(true).is_ok() {
        let mut s = sock;
        let mut buf = [0u8; 4096];
        // Bounded: a peer streaming bytes cannot hold the loop here.
        for _ in 0..4 {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        // A fresh socket's send buffer takes the whole response at once.
        let _ = s.write_all(UNAVAILABLE.as_bytes());
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// `accept` failed for want of descriptors (the process's or the system's).
fn out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// What the accept loop took from the listener.
enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// Accepted on the spare descriptor while out of descriptors, and refused with `503`.
    Refused(SocketAddr),
}

/// A descriptor held in reserve. Out of descriptors, `accept` fails at once (Linux takes the
/// new descriptor before it waits), while connections wait in the backlog and their clients
/// see nothing until they time out. Giving up the spare lets the next connection be accepted:
/// served if descriptors are free again by then, otherwise refused with `503`.
struct Spare(Option<File>);

impl Spare {
    fn new() -> Self {
        Spare(File::open(SPARE_PATH).ok())
    }

    /// After `accept` failed with `out_of_descriptors` error `e`: accepts the next connection
    /// (blocking until one arrives) on the spare descriptor, then takes the spare back. Fails
    /// with `e` when there is no spare to give up (it is tried again next time).
    fn accept_on_spare(&mut self, listener: &TcpListener, e: io::Error) -> io::Result<Accepted> {
        let Some(spare) = self.0.take().or_else(|| File::open(SPARE_PATH).ok()) else {
            return Err(e);
        };
        drop(spare);
        let accepted = listener.accept();
        self.0 = File::open(SPARE_PATH).ok();
        let (sock, peer) = accepted?;
        if self.0.is_some() {
            // Descriptors came free while waiting: serve it.
            return Ok(Accepted::Conn(sock, peer));
        }
        refuse(&sock);
        drop(sock);
        self.0 = File::open(SPARE_PATH).ok();
        Ok(Accepted::Refused(peer))
    }
}
