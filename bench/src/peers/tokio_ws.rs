//! tokio-tungstenite on a multi-thread runtime with exactly 2 worker threads (the machine's
//! core count), one task per connection, `TCP_NODELAY` on every socket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_tungstenite::WebSocketStream;

use super::RunningServer;

pub type TokioWs = WebSocketStream<TcpStream>;

/// The runtime every tokio peer uses, client and server alike.
pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio: build runtime")
}

/// Connects a client to `path` on `addr`.
pub async fn connect(addr: SocketAddr, path: &str) -> Result<TokioWs> {
    let sock = TcpStream::connect(addr)
        .await
        .with_context(|| format!("tokio: connect to {addr}"))?;
    sock.set_nodelay(true).context("tokio: set TCP_NODELAY")?;
    let (ws, _) = tokio_tungstenite::client_async(super::url(addr, path), sock)
        .await
        .map_err(|e| anyhow::anyhow!("tokio: handshake with {addr}: {e}"))?;
    Ok(ws)
}

/// A server: an accept task and a task per connection running the workload's handler.
pub struct TokioServer {
    rt: Runtime,
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl TokioServer {
    pub fn start<F, Fut>(rt: Runtime, handler: F) -> Result<TokioServer>
    where
        F: Fn(TokioWs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("tokio: bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        let handler = Arc::new(handler);
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let (counter, handler) = (counter.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(sock).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::AcqRel);
                    handler(ws).await;
                    counter.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Ok(TokioServer { rt, addr, conns })
    }
}

impl RunningServer for TokioServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::Acquire)
    }

    /// Dropping the runtime cancels every task (closing its socket) and joins the workers.
    fn dispose(self: Box<Self>) {
        drop(self.rt);
    }
}
