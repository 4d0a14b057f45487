//! Raw tungstenite, the simplest correct blocking design: one thread per connection (plus a
//! writer thread where a workload needs full duplex), `TCP_NODELAY` on every socket.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tungstenite::WebSocket;

use super::RunningServer;

pub type RawWs = WebSocket<TcpStream>;

/// Connects a blocking client to `path` on `addr`.
pub fn connect(addr: SocketAddr, path: &str) -> Result<RawWs> {
    let sock = TcpStream::connect(addr).with_context(|| format!("raw: connect to {addr}"))?;
    sock.set_nodelay(true).context("raw: set TCP_NODELAY")?;
    let (ws, _) = tungstenite::client(super::url(addr, path), sock)
        .map_err(|e| anyhow::anyhow!("raw: handshake with {addr}: {e}"))?;
    Ok(ws)
}

type Threads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Lets a connection handler start more threads that `dispose` will join.
pub struct ConnThreads {
    threads: Threads,
}

impl ConnThreads {
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let h = std::thread::spawn(f);
        lock(&self.threads).push(h);
    }
}

/// A thread-per-connection server: an accept thread, and per connection a thread that does the
/// handshake and then runs the workload's handler until it returns.
pub struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<AtomicUsize>,
    // A clone of every accepted socket, so dispose can shut them down and unblock the readers.
    socks: Arc<Mutex<Vec<TcpStream>>>,
    threads: Threads,
    accept: Option<JoinHandle<()>>,
}

impl RawServer {
    pub fn start<F>(handler: F) -> Result<RawServer>
    where
        F: Fn(RawWs, &ConnThreads) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").context("raw: bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(AtomicUsize::new(0));
        let socks = Arc::new(Mutex::new(Vec::new()));
        let threads: Threads = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
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
                    if let Ok(clone) = sock.try_clone() {
                        lock(&socks).push(clone);
                    }
                    let (conns, handler) = (conns.clone(), handler.clone());
                    let ctx = ConnThreads {
                        threads: threads.clone(),
                    };
                    let h = std::thread::spawn(move || {
                        let Ok(ws) = tungstenite::accept(sock) else {
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
