//! Raw tungstenite, the simplest correct blocking design: one thread per connection (plus a
//! writer thread where a workload needs full duplex), `TCP_NODELAY` on every socket. The
//! server shares each accepted socket (`Arc`) between the connection's `WebSocket`, its other
//! threads and dispose, so a connection holds one descriptor.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;

use super::RunningServer;

/// A client connection.
pub type RawWs = WebSocket<TcpStream>;
/// A server connection, on the socket the server shares.
pub type ServerWs = WebSocket<SharedSocket>;

/// Connects a blocking client to `path` on `addr`.
pub fn connect(addr: SocketAddr, path: &str) -> Result<RawWs> {
    connect_with(addr, path, None)
}

/// A server that does not answer the handshake within this fails the connect.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn connect_with(addr: SocketAddr, path: &str, config: Option<WebSocketConfig>) -> Result<RawWs> {
    let sock = TcpStream::connect(addr).with_context(|| format!("raw: connect to {addr}"))?;
    sock.set_nodelay(true).context("raw: set TCP_NODELAY")?;
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let (ws, _) = tungstenite::client::client_with_config(super::url(addr, path), sock, config)
        .map_err(|e| anyhow::anyhow!("raw: handshake with {addr}: {e}"))?;
    ws.get_ref().set_read_timeout(None)?;
    Ok(ws)
}

/// Up to `n` blocking clients of `path`, opened one after the other from the calling thread:
/// a client process that holds thousands of connections without a thread each. Stops at the
/// first connection that fails and returns it with those already open. Their read buffers are
/// 4 KiB instead of tungstenite's 128 KiB, which every read zero-fills: one thread reading
/// 10,000 sockets would otherwise spend its time faulting in 1.25 GiB.
pub fn connect_up_to(
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> (Vec<RawWs>, Option<anyhow::Error>) {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        match connect_with(addr, path, Some(config)) {
            Ok(ws) => conns.push(ws),
            Err(e) => return (conns, Some(e.context(format!("connection {i}")))),
        }
    }
    (conns, None)
}

/// Exactly `n` clients as [`connect_up_to`] opens them, or the first failure.
pub fn connect_many(addr: SocketAddr, path: &str, n: usize) -> Result<Vec<RawWs>> {
    match connect_up_to(addr, path, n) {
        (conns, None) => Ok(conns),
        (_, Some(e)) => Err(e),
    }
}

/// A server connection's socket, shared by its `WebSocket`, its handler's other threads (e.g.
/// a second `WebSocket` that only writes) and dispose: one descriptor.
#[derive(Debug, Clone)]
pub struct SharedSocket(Arc<TcpStream>);

impl SharedSocket {
    /// A new descriptor for the socket, for a handler that wants its own.
    pub fn try_clone(&self) -> std::io::Result<TcpStream> {
        self.0.try_clone()
    }
}

impl Read for SharedSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

type Threads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Lets a connection handler start more threads that `dispose` will join, and reach its
/// socket from them.
pub struct ConnThreads {
    threads: Threads,
    socket: SharedSocket,
}

impl ConnThreads {
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let h = std::thread::spawn(f);
        lock(&self.threads).push(h);
    }

    /// The connection's socket, shared (no new descriptor).
    pub fn socket(&self) -> SharedSocket {
        self.socket.clone()
    }
}

/// A thread-per-connection server: an accept thread, and per connection a thread that does the
/// handshake and then runs the workload's handler until it returns.
pub struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<AtomicUsize>,
    // Every accepted socket, so dispose can shut them down and unblock the readers.
    socks: Arc<Mutex<Vec<Arc<TcpStream>>>>,
    threads: Threads,
    accept: Option<JoinHandle<()>>,
}

impl RawServer {
    pub fn start<F>(handler: F) -> Result<RawServer>
    where
        F: Fn(ServerWs, &ConnThreads) + Send + Sync + 'static,
    {
        Self::start_with(|sock| tungstenite::accept(sock).ok(), handler)
    }

    /// Like [`start`](Self::start), with `open` doing the handshake on the accepted socket
    /// (on the connection's thread) and giving the `WebSocket` the handler gets, or `None`
    /// to drop the connection: e.g. TLS, then WebSocket (`peers::tls`).
    pub fn start_with<S, O, F>(open: O, handler: F) -> Result<RawServer>
    where
        O: Fn(SharedSocket) -> Option<WebSocket<S>> + Send + Sync + 'static,
        F: Fn(WebSocket<S>, &ConnThreads) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").context("raw: bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(AtomicUsize::new(0));
        let socks = Arc::new(Mutex::new(Vec::new()));
        let threads: Threads = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let open = Arc::new(open);
        let accept = {
            let (stop, conns, socks, threads) =
                (stop.clone(), conns.clone(), socks.clone(), threads.clone());
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(sock) = sock else { continue };
                    let _ = sock.set_nodelay(true);
                    let sock = SharedSocket(Arc::new(sock));
                    lock(&socks).push(sock.0.clone());
                    let (conns, handler, open) = (conns.clone(), handler.clone(), open.clone());
                    let ctx = ConnThreads {
                        threads: threads.clone(),
                        socket: sock.clone(),
                    };
                    let h = std::thread::spawn(move || {
                        let Some(ws) = open(sock) else {
                            return;
                        };
                        conns.fetch_add(1, Ordering::AcqRel);
                        handler(ws, &ctx);
                        conns.fetch_sub(1, Ordering::AcqRel);
                    });
                    lock(&threads).push(h);
                }
            })
        };
        Ok(RawServer {
            addr,
            stop,
            conns,
            socks,
            threads,
            accept: Some(accept),
        })
    }
}

impl RunningServer for RawServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::Acquire)
    }

    /// Stop flag, wake the accept thread with a connection, shut down every socket, join every
    /// thread.
    fn dispose(mut self: Box<Self>) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in lock(&self.socks).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Handlers may have registered threads of their own; join until none is left.
        loop {
            let batch = std::mem::take(&mut *lock(&self.threads));
            if batch.is_empty() {
                break;
            }
            for h in batch {
                let _ = h.join();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
