//! A loopback TCP proxy that cuts its connections on demand, refuses new ones while told to,
//! and can be pointed at another target: a transport that drops, comes back, or reaches a
//! restarted peer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    refuse: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every live pair.
    live: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if s.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    if s.refuse.load(Ordering::Acquire) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let target = *s.target.lock();
                    let Ok(server) = TcpStream::connect(target) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    s.accepted.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    {
                        let mut live = s.live.lock();
                        live.push(client.try_clone().unwrap());
                        live.push(server.try_clone().unwrap());
                    }
                    pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pump(server, client);
                }
            })
            .unwrap();
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Cuts every connection now (both sides see the transport fail, no close frame).
    pub fn cut(&self) {
        for s in self.shared.live.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// New connections are cut at once while true.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::Release);
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock() = target;
    }

    /// Connections forwarded so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.cut();
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::Builder::new()
        .name("test-proxy-pump".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        })
        .unwrap();
}
