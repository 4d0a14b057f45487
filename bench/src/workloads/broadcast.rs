//! w4: one server, 100 clients on one path; once every client is connected, the client process
//! sends `go` on one connection and the server broadcasts N 64 B text messages to the path.
//! The client process times from sending `go` until the last client has all N: deliveries/s is
//! clients × N / that time. The orchestrator then reads the server's peak RSS (VmHWM).
//!
//! Clients run on the same stack as the server (100 rxplus clients, 100 raw client threads,
//! 100 tokio tasks), so the figure is the whole stack's.
//!
//! Servers: rxplus `server.on_next(TaggedData::new(path, item))` (no connection id = the
//! path), with the `block` outbound policy like the others' bounded channels. Raw: per connection a reader thread and a writer thread fed by a bounded channel
//! (1024, as rxplus' default outbound queue) that drains the channel, writes all, flushes once.
//! tokio: per connection a reader task and a writer task with the same channel and
//! drain-then-flush logic (`feed` each, `flush` once).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use rxplus::ws::{TaggedData, Text};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::{
    client_server_run, wait_until, Cmp, Ctx, Metric, Sample, Target, Variant, Workload,
    CLIENT_DEADLINE,
};
use crate::peers::raw::{self, RawServer};
use crate::peers::rx::{self, RxServer};
use crate::peers::tokio_ws::{self, TokioServer};
use crate::peers::{RunningServer, Stack};
use crate::procfs;

pub struct Broadcast;
pub static W4: Broadcast = Broadcast;

const PATH: &str = "/broadcast";
/// Per-connection queue of the raw and tokio servers (rxplus' default outbound capacity).
const QUEUE: usize = 1024;
/// How long the server waits, after `go`, for every client to be registered.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// Sizes of a broadcast (w4 here; w6 in `scale.rs` broadcasts one message).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Params {
    pub(super) clients: usize,
    pub(super) messages: usize,
    pub(super) size: usize,
}

static METRICS: [Metric; 2] = [
    Metric {
        key: "deliveries_per_s",
        label: "broadcast deliveries",
        unit: "msg/s",
        higher_is_better: true,
        baselines: &["raw"],
        decimals: 0,
    },
    Metric {
        key: "server_peak_rss_mib",
        label: "server peak RSS",
        unit: "MiB",
        higher_is_better: false,
        baselines: &["raw"],
        decimals: 1,
    },
];

impl Workload for Broadcast {
    fn id(&self) -> &'static str {
        "w4"
    }

    fn title(&self, params: &Value) -> String {
        match serde_json::from_value::<Params>(params.clone()) {
            Ok(p) => format!(
                "broadcast of {} text messages of {} B to {} clients on one path",
                p.messages, p.size, p.clients
            ),
            Err(_) => "broadcast".into(),
        }
    }

    fn variants(&self) -> &'static [Variant] {
        &super::STANDARD_VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::Ratio {
                variant: "rxplus",
                metric: "deliveries_per_s",
                baseline: "raw",
                cmp: Cmp::AtLeast,
                bound: 0.9,
            },
            Target::Versus {
                variant: "rxplus",
                metric: "deliveries_per_s",
                other: "tokio",
                cmp: Cmp::AtLeast,
            },
        ]
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            5
        } else {
            7
        }
    }

    fn params(&self, quick: bool) -> Value {
        serde_json::json!(Params {
            clients: 100,
            messages: if quick { 2_000 } else { 10_000 },
            size: 64,
        })
    }

    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        client_server_run(ctx, self.id(), variant, params, |server| {
            let status = procfs::status(server.pid())?;
            Ok(Sample::from([(
                "server_peak_rss_mib".into(),
                status.peak_rss_kib as f64 / 1024.0,
            )]))
        })
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let p: Params = serde_json::from_value(params.clone())?;
        match Stack::of(variant)? {
            // `block`, as the raw and tokio servers' bounded channels: the broadcaster waits
            // for the slowest client, and every client gets all N (the server's default would
            // cut a client that falls 1,024 messages behind).
            Stack::Rxplus => rx_server(
                PATH,
                p,
                rxplus::ws::WSConfig::default().outbound(QUEUE, rxplus::OverflowStrategy::Block),
            ),
            Stack::Raw => raw_server(p),
            Stack::Tokio => tokio_server(p),
        }
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let elapsed = match Stack::of(variant)? {
            Stack::Rxplus => rx_clients(addr, &p)?,
            Stack::Raw => raw_clients(addr, PATH, &p, "go")?,
            Stack::Tokio => tokio_clients(addr, &p)?,
        };
        let secs = elapsed.as_secs_f64();
        Ok(Sample::from([
            ("elapsed_s".into(), secs),
            (
                "deliveries_per_s".into(),
                (p.clients * p.messages) as f64 / secs,
            ),
        ]))
    }
}

/// The message a client process sends on one connection to start the broadcast.
fn is_go(msg: &Message) -> bool {
    matches!(msg, Message::Text(t) if t.as_str() == "go")
}

/// How many clients a `go` message asks the broadcast to wait for: all for `go`, `n` for
/// `go <n>` (w6: the connections the server holds, fewer when it refused some); `None` when
/// the text is no `go`.
pub(super) fn go_for(text: &str, all: usize) -> Option<usize> {
    match text.strip_prefix("go")? {
        "" => Some(all),
        rest => rest.strip_prefix(' ')?.parse().ok(),
    }
}

/// rxplus with `cfg`: on `go`, `p.messages` items of `p.size` B to `path` once `p.clients`
/// are there.
pub(super) fn rx_server(
    path: &'static str,
    p: Params,
    cfg: rxplus::ws::WSConfig,
) -> Result<Box<dyn RunningServer>> {
    let server = Arc::new(rx::server_with(Text, cfg)?);
    let (go_tx, go) = mpsc::sync_channel::<usize>(1);
    server.subscribe(move |m: TaggedData<String>| {
        if let Some(clients) = go_for(&m.data, p.clients) {
            let _ = go_tx.try_send(clients);
        }
    });
    let s = server.clone();
    // The application's thread that broadcasts (not the reader thread that got `go`).
    std::thread::spawn(move || {
        let Ok(clients) = go.recv() else {
            return;
        };
        if let Err(e) = wait_until(clients, REGISTER_WAIT, || s.connections(path).len()) {
            eprintln!("rxplus broadcast server: {e}");
            return;
        }
        let payload = "x".repeat(p.size);
        let path: Arc<str> = path.into();
        for _ in 0..p.messages {
            s.on_next(TaggedData::new(path.clone(), payload.clone()));
        }
    });
    Ok(Box::new(RxServer(server)))
}

type Senders<T> = Arc<Mutex<Vec<T>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn raw_server(p: Params) -> Result<Box<dyn RunningServer>> {
    // `None` tells a writer to stop (sent by its reader when the connection ends).
    let senders: Senders<mpsc::SyncSender<Option<Message>>> = Arc::default();
    let (go_tx, go) = mpsc::sync_channel::<()>(1);
    let registered = senders.clone();
    let server = RawServer::start(move |mut ws, threads| {
        let Ok(sock) = ws.get_ref().try_clone() else {
            return;
        };
        // A second WebSocket on a clone of the socket is the writer's; the reader's never
        // writes here (clients send no pings; only a close reply could race, at the end).
        let mut out = WebSocket::from_raw_socket(sock, Role::Server, None);
        let (tx, rx) = mpsc::sync_channel::<Option<Message>>(QUEUE);
        threads.spawn(move || {
            while let Ok(Some(first)) = rx.recv() {
                if out.write(first).is_err() {
                    return;
                }
                loop {
                    match rx.try_recv() {
                        Ok(Some(m)) => {
                            if out.write(m).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = out.flush();
                            return;
                        }
                        Err(_) => break,
                    }
                }
                if out.flush().is_err() {
                    return;
                }
            }
        });
        lock(&registered).push(tx.clone());
        while let Ok(msg) = ws.read() {
            if is_go(&msg) {
                let _ = go_tx.try_send(());
            }
        }
        let _ = tx.send(None);
    })?;
    std::thread::spawn(move || {
        if go.recv().is_err() {
            return;
        }
        if let Err(e) = wait_until(p.clients, REGISTER_WAIT, || lock(&senders).len()) {
            eprintln!("w4 raw server: {e}");
            return;
        }
        let targets = lock(&senders).clone();
        let payload = "x".repeat(p.size);
        for _ in 0..p.messages {
            // One message per broadcast item; clones share its bytes.
            let msg = Message::text(payload.clone());
            for tx in &targets {
                let _ = tx.send(Some(msg.clone()));
            }
        }
    });
    Ok(Box::new(server))
}

struct TokioHub {
    senders: Mutex<Vec<tokio::sync::mpsc::Sender<Message>>>,
    go: tokio::sync::Notify,
}

fn tokio_server(p: Params) -> Result<Box<dyn RunningServer>> {
    let rt = tokio_ws::runtime()?;
    let hub = Arc::new(TokioHub {
        senders: Mutex::new(Vec::new()),
        go: tokio::sync::Notify::new(),
    });
    let h = hub.clone();
    rt.spawn(async move {
        h.go.notified().await;
        let until = Instant::now() + REGISTER_WAIT;
        while lock(&h.senders).len() < p.clients {
            if Instant::now() >= until {
                eprintln!("w4 tokio server: not every client registered");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let targets = lock(&h.senders).clone();
        let payload = "x".repeat(p.size);
        for _ in 0..p.messages {
            let msg = Message::text(payload.clone());
            for tx in &targets {
                let _ = tx.send(msg.clone()).await;
            }
        }
    });
    let server = TokioServer::start(rt, move |ws| {
        let hub = hub.clone();
        async move {
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(QUEUE);
            let writer = tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    if sink.feed(first).await.is_err() {
                        return;
                    }
                    while let Ok(m) = rx.try_recv() {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            lock(&hub.senders).push(tx);
            while let Some(Ok(msg)) = stream.next().await {
                if is_go(&msg) {
                    hub.go.notify_one();
                }
            }
            writer.abort();
        }
    })?;
    Ok(Box::new(server))
}

fn rx_clients(addr: SocketAddr, p: &Params) -> Result<Duration> {
    let (done_tx, done) = mpsc::channel();
    let mut clients = Vec::with_capacity(p.clients);
    for _ in 0..p.clients {
        let client = rx::client(addr, PATH, Text)?;
        let (count, done_tx, n) = (AtomicUsize::new(0), done_tx.clone(), p.messages);
        client.subscribe(move |_m: String| {
            if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                let _ = done_tx.send(Ok(()));
            }
        });
        clients.push(client);
    }
    let t = Instant::now();
    clients[0].on_next("go".to_string());
    wait_all(&done, p.clients, t)?;
    Ok(t.elapsed())
}

/// Each client reports once: `Ok` with all messages, or why its connection ended early.
type Done = mpsc::Sender<Result<(), String>>;

fn wait_all(done: &mpsc::Receiver<Result<(), String>>, clients: usize, t: Instant) -> Result<()> {
    for i in 0..clients {
        let left = CLIENT_DEADLINE.saturating_sub(t.elapsed());
        let report = done
            .recv_timeout(left)
            .with_context(|| format!("only {i} of {clients} clients got every message"))?;
        report.map_err(|e| anyhow::anyhow!("a client failed after {i} had finished: {e}"))?;
    }
    Ok(())
}

/// `p.clients` raw clients of `path`, each a reader thread counting to `p.messages`; `go`
/// sent on the first starts the broadcast. The time until all have them.
pub(super) fn raw_clients(addr: SocketAddr, path: &str, p: &Params, go: &str) -> Result<Duration> {
    let mut conns = (0..p.clients)
        .map(|_| raw::connect(addr, path))
        .collect::<Result<Vec<_>>>()?;
    let (done_tx, done) = mpsc::channel();
    let n = p.messages;
    let reader = |mut ws: raw::RawWs| {
        let done_tx: Done = done_tx.clone();
        move || {
            let _ = ws.get_mut().set_read_timeout(Some(CLIENT_DEADLINE));
            let mut count = 0;
            let report = loop {
                match ws.read() {
                    Ok(msg) if msg.is_text() => {
                        count += 1;
                        if count == n {
                            break Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break Err(format!("after {count} messages: {e}")),
                }
            };
            let _ = done_tx.send(report);
        }
    };
    let mut first = conns.remove(0);
    for ws in conns {
        std::thread::spawn(reader(ws));
    }
    let t = Instant::now();
    first.send(Message::text(go))?;
    std::thread::spawn(reader(first));
    wait_all(&done, p.clients, t)?;
    Ok(t.elapsed())
}

fn tokio_clients(addr: SocketAddr, p: &Params) -> Result<Duration> {
    let rt = tokio_ws::runtime()?;
    let (done_tx, done) = mpsc::channel();
    let n = p.messages;
    let t = rt.block_on(async {
        let mut conns = Vec::with_capacity(p.clients);
        for _ in 0..p.clients {
            conns.push(tokio_ws::connect(addr, PATH).await?);
        }
        let reader = |mut ws: tokio_ws::TokioWs| {
            let done_tx: Done = done_tx.clone();
            async move {
                let mut count = 0;
                let report = loop {
                    match ws.next().await {
                        Some(Ok(msg)) if msg.is_text() => {
                            count += 1;
                            if count == n {
                                break Ok(());
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Err(format!("after {count} messages: {e}")),
                        None => break Err(format!("closed after {count} messages")),
                    }
                };
                let _ = done_tx.send(report);
            }
        };
        let mut first = conns.remove(0);
        for ws in conns {
            tokio::spawn(reader(ws));
        }
        let t = Instant::now();
        first.send(Message::text("go")).await?;
        tokio::spawn(reader(first));
        anyhow::Ok(t)
    })?;
    // Blocking wait outside the runtime; its workers keep running the reader tasks.
    wait_all(&done, p.clients, t)?;
    let elapsed = t.elapsed();
    drop(rt);
    Ok(elapsed)
}
