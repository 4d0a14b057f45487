//! w6: 10,000 connections on one server (2,000 with `--quick`): what each costs the server
//! idle and after a broadcast, how long the broadcast to all of them takes, and how long
//! dispose takes. w5's big sibling, on w4's broadcast.
//!
//! The orchestrator reads the server process's threads (`/proc/<pid>/status`), descriptors
//! (entries of `/proc/<pid>/fd`) and RSS (VmRSS) three times: right after `READY` with no
//! connection (the baseline), once the server counts every connection (idle), and once the
//! client has the broadcast on every connection (after). A per-connection figure is
//! (figure − baseline) ÷ connections, so the harness' own threads and descriptors (main thread,
//! stdio pipes, listener, accept thread, the broadcaster waiting for `go`) cancel out.
//!
//! Then the orchestrator says `GO` to the client, which sends `go` on its first connection and
//! times until every connection has read one 64 B text message that the server broadcasts to
//! the path (`broadcast_ms`; it includes the client reading the sockets one after the other
//! from one thread). Last, the server disposes and prints how long that took (`dispose_ms`),
//! as in w5.
//!
//! Servers, defaults everywhere:
//! * rxplus: w4's, `server.on_next(TaggedData::new(path, item))` from an application thread.
//! * raw tungstenite, thread per connection: one reader thread per connection; the broadcaster
//!   thread writes every connection itself, in turn, through a second (write-only)
//!   `WebSocket` on the connection's socket, shared with the reader (`SharedSocket`, no
//!   `try_clone`): one thread and one descriptor per connection.
//! * tokio-tungstenite: one task per connection reading its half of the split stream; the
//!   broadcaster task `send`s to every sink in turn (2 runtime workers in all).
//!
//! The client process is the same for all three and uses no thread per connection (10,000
//! threads would distort the machine): one thread opens every raw tungstenite connection in
//! turn, then reads them in turn. Both processes need more descriptors than a default limit:
//! `main` raises the soft RLIMIT_NOFILE to the hard one, and the server asks for 5 per
//! connection, raising the hard limit too where it may (CAP_SYS_RESOURCE). A server that runs
//! out of descriptors refuses connections: the client stops at the first refusal and the run
//! goes on with the connections the server holds, which `held_pct` reports (the
//! per-connection figures are then per connection held).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::broadcast::{self, go_for, lock};
use super::{
    dispose_server, server_count, start_client, start_server, wait_server_count, wait_until, Cmp,
    Ctx, Metric, Sample, Target, Variant, Workload, CLIENT_DEADLINE, CONNECT_TIMEOUT,
    COUNT_TIMEOUT, EXIT_TIMEOUT, RESULT_TIMEOUT,
};
use crate::child::{announce, hold_until_exit, wait_command, Child};
use crate::peers::raw::{self, RawServer, SharedSocket};
use crate::peers::tokio_ws::{self, TokioServer, TokioWs};
use crate::peers::{RunningServer, Stack};
use crate::procfs;

pub struct Scale;
pub static W6: Scale = Scale;

const PATH: &str = "/w6";
/// The broadcast message's size.
const SIZE: usize = 64;
/// How long a server waits, after `go`, for every connection to be registered (they already
/// are: the orchestrator waits for the count before `GO`).
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// Descriptors the server process asks for, per connection (rxplus used 4 before its
/// connection-core rework) and beyond the connections.
const SERVER_FDS_PER_CONN: u64 = 5;
const SPARE_FDS: u64 = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Params {
    connections: usize,
}

const fn per_conn(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    decimals: usize,
) -> Metric {
    Metric {
        key,
        label,
        unit,
        higher_is_better: false,
        baselines: &["raw"],
        decimals,
    }
}

static METRICS: [Metric; 9] = [
    Metric {
        key: "held_pct",
        label: "connections held and broadcast to",
        unit: "%",
        higher_is_better: true,
        baselines: &["raw"],
        decimals: 1,
    },
    per_conn(
        "threads_per_conn",
        "threads per connection, idle",
        "threads",
        2,
    ),
    per_conn("fds_per_conn", "descriptors per connection, idle", "fds", 2),
    per_conn("rss_kib_per_conn", "RSS per connection, idle", "KiB", 1),
    per_conn("broadcast_ms", "broadcast to all", "ms", 1),
    per_conn(
        "threads_per_conn_after",
        "threads per connection, after broadcast",
        "threads",
        2,
    ),
    per_conn(
        "fds_per_conn_after",
        "descriptors per connection, after broadcast",
        "fds",
        2,
    ),
    per_conn(
        "rss_kib_per_conn_after",
        "RSS per connection, after broadcast",
        "KiB",
        1,
    ),
    per_conn("dispose_ms", "server dispose", "ms", 1),
];

/// What the server process holds at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    threads: f64,
    fds: f64,
    rss_kib: f64,
}

impl Usage {
    fn of(pid: u32) -> Result<Usage> {
        let status = procfs::status(pid)?;
        Ok(Usage {
            threads: status.threads as f64,
            fds: procfs::fd_count(pid)? as f64,
            rss_kib: status.rss_kib as f64,
        })
    }

    /// (self − baseline) ÷ connections, as metrics whose keys end in `suffix`.
    fn per_conn(&self, base: &Usage, conns: usize, suffix: &str) -> Sample {
        let per = |now: f64, then: f64| (now - then) / conns as f64;
        Sample::from([
            (
                format!("threads_per_conn{suffix}"),
                per(self.threads, base.threads),
            ),
            (format!("fds_per_conn{suffix}"), per(self.fds, base.fds)),
            (
                format!("rss_kib_per_conn{suffix}"),
                per(self.rss_kib, base.rss_kib),
            ),
        ])
    }
}

impl Workload for Scale {
    fn id(&self) -> &'static str {
        "w6"
    }

    fn title(&self, params: &Value) -> String {
        let n = params["connections"].as_u64().unwrap_or(0);
        format!(
            "{n} connections on one server, idle then one broadcast to all: threads, \
             descriptors and RSS per connection, broadcast and dispose time"
        )
    }

    fn variants(&self) -> &'static [Variant] {
        &super::STANDARD_VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    /// Requirement 7 of the issue, idle and after the broadcast.
    fn targets(&self) -> Vec<Target> {
        let at_most = |metric, bound| Target::Value {
            variant: "rxplus",
            metric,
            cmp: Cmp::AtMost,
            bound,
        };
        vec![
            Target::Value {
                variant: "rxplus",
                metric: "held_pct",
                cmp: Cmp::AtLeast,
                bound: 100.0,
            },
            at_most("threads_per_conn", 1.2),
            at_most("fds_per_conn", 2.0),
            at_most("rss_kib_per_conn", 40.0),
            at_most("threads_per_conn_after", 1.2),
            at_most("fds_per_conn_after", 2.0),
            at_most("rss_kib_per_conn_after", 40.0),
            at_most("dispose_ms", 2000.0),
        ]
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            1
        } else {
            3
        }
    }

    fn params(&self, quick: bool) -> Value {
        serde_json::json!(Params {
            connections: if quick { 2_000 } else { 10_000 },
        })
    }

    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let params = params.to_string();
        let (mut server, addr) = start_server(ctx, self.id(), variant, &params)?;
        let pid = server.pid();
        let base = Usage::of(pid)?;
        let mut client = start_client(ctx, self.id(), variant, &addr, &params)?;
        let connected = client.expect("CONNECTED", CONNECT_TIMEOUT)?;
        let held = match connected.split_once(' ') {
            // The server refused one: it holds what it counts once its count settles.
            Some((_, "refused")) => settled_count(&mut server)?,
            _ => {
                let opened = connected.parse()?;
                wait_server_count(&mut server, opened)?;
                opened
            }
        };
        ensure!(held > 0, "the server holds no connection");
        let idle = Usage::of(pid)?;
        client.send(&format!("GO {held}"))?;
        let mut sample: Sample = serde_json::from_str(&client.expect("RESULT", RESULT_TIMEOUT)?)?;
        let after = Usage::of(pid)?;
        let received = sample.get("received").copied().unwrap_or(0.0) as usize;
        ensure!(
            received == held,
            "the broadcast reached {received} of the {held} connections the server holds"
        );
        let dispose_ms = dispose_server(&mut server)?;
        server.finish(EXIT_TIMEOUT)?;
        client.finish(EXIT_TIMEOUT)?;
        sample.extend(idle.per_conn(&base, held, ""));
        sample.extend(after.per_conn(&base, held, "_after"));
        sample.insert("dispose_ms".into(), dispose_ms);
        sample.insert(
            "held_pct".into(),
            100.0 * held as f64 / p.connections as f64,
        );
        Ok(sample)
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let p: Params = serde_json::from_value(params.clone())?;
        // Best effort: where it fails, the connections the server refuses tell (`held_pct`).
        let _ = procfs::ensure_nofile(p.connections as u64 * SERVER_FDS_PER_CONN + SPARE_FDS);
        match Stack::of(variant)? {
            Stack::Rxplus => broadcast::rx_server(
                PATH,
                broadcast::Params {
                    clients: p.connections,
                    messages: 1,
                    size: SIZE,
                },
                // The defaults: they are what w6 measures.
                rxplus::ws::WSConfig::default(),
            ),
            Stack::Raw => raw_server(p.connections),
            Stack::Tokio => tokio_server(p.connections),
        }
    }

    /// Opens the connections and says `CONNECTED <n>` (`CONNECTED <n> refused` when the server
    /// refused one, e.g. out of descriptors: the run goes on with those it took). On `GO <k>`
    /// (the connections the server counts) it sends `go <k>`, reads every connection, says
    /// `RESULT` with the broadcast time and how many had it, then holds the connections until
    /// told to exit (the server is measured and disposed meanwhile).
    fn client(&self, _variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        procfs::ensure_nofile(p.connections as u64 + SPARE_FDS)?;
        let (mut conns, refused) = raw::connect_up_to(addr, PATH, p.connections);
        ensure!(!conns.is_empty(), "no connection: {refused:?}");
        for ws in &conns {
            ws.get_ref().set_read_timeout(Some(CLIENT_DEADLINE))?;
        }
        match refused {
            None => announce(&format!("CONNECTED {}", conns.len())),
            Some(e) => {
                let limit = rlimit::Resource::NOFILE.get().map_or(0, |(soft, _)| soft);
                eprintln!(
                    "w6 client: the server took {} of {} connections (RLIMIT_NOFILE here: \
                     {limit}): {e:#}",
                    conns.len(),
                    p.connections
                );
                announce(&format!("CONNECTED {} refused", conns.len()));
            }
        }
        let counted: usize = wait_command("GO", CLIENT_DEADLINE)?.parse()?;
        let t = Instant::now();
        conns[0].send(Message::text(format!("go {counted}")))?;
        let mut received = 0;
        for (i, ws) in conns.iter_mut().enumerate() {
            loop {
                match ws.read() {
                    Ok(Message::Text(_)) => {
                        received += 1;
                        break;
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        bail!(
                            "{received} connections had the broadcast {:.1} s after `go`; \
                             connection {i} still waits",
                            t.elapsed().as_secs_f64()
                        )
                    }
                    // Closed: a connection the server dropped after its handshake (it does not
                    // count it); `received` tells the orchestrator.
                    Err(_) => break,
                }
            }
        }
        let broadcast_ms = t.elapsed().as_secs_f64() * 1e3;
        let sample = Sample::from([
            ("broadcast_ms".into(), broadcast_ms),
            ("received".into(), received as f64),
        ]);
        announce(&format!("RESULT {}", serde_json::to_string(&sample)?));
        hold_until_exit()
    }
}

/// The connections a `go <n>` message asks to wait for.
fn go_msg(msg: &Message, all: usize) -> Option<usize> {
    match msg {
        Message::Text(t) => go_for(t, all),
        _ => None,
    }
}

/// The server's connection count once it stops changing (twice the same, 0.5 s apart): after
/// a refusal the server may still close the last connections the client opened.
fn settled_count(server: &mut Child) -> Result<usize> {
    let until = Instant::now() + COUNT_TIMEOUT;
    let mut last = server_count(server)?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = server_count(server)?;
        if now == last {
            return Ok(now);
        }
        ensure!(
            Instant::now() < until,
            "the server's connection count keeps changing"
        );
        last = now;
    }
}

fn raw_server(conns: usize) -> Result<Box<dyn RunningServer>> {
    // The broadcaster's write-only WebSockets, one per connection.
    let writers: Arc<Mutex<Vec<WebSocket<SharedSocket>>>> = Arc::default();
    let (go_tx, go) = mpsc::sync_channel::<usize>(1);
    let registered = writers.clone();
    let server = RawServer::start(move |mut ws, conn| {
        let out = WebSocket::from_raw_socket(conn.socket(), Role::Server, None);
        lock(&registered).push(out);
        while let Ok(msg) = ws.read() {
            if let Some(n) = go_msg(&msg, conns) {
                let _ = go_tx.try_send(n);
            }
        }
    })?;
    std::thread::spawn(move || {
        let Ok(n) = go.recv() else {
            return;
        };
        if let Err(e) = wait_until(n, REGISTER_WAIT, || lock(&writers).len()) {
            eprintln!("w6 raw server: {e}");
            return;
        }
        let msg = Message::text("x".repeat(SIZE));
        for out in lock(&writers).iter_mut() {
            // A connection that has gone is the client's to report.
            let _ = out.send(msg.clone());
        }
    });
    Ok(Box::new(server))
}

struct TokioHub {
    sinks: Mutex<Vec<SplitSink<TokioWs, Message>>>,
    go: tokio::sync::mpsc::Sender<usize>,
}

fn tokio_server(conns: usize) -> Result<Box<dyn RunningServer>> {
    let rt = tokio_ws::runtime()?;
    let (go_tx, mut go) = tokio::sync::mpsc::channel::<usize>(1);
    let hub = Arc::new(TokioHub {
        sinks: Mutex::new(Vec::new()),
        go: go_tx,
    });
    let h = hub.clone();
    rt.spawn(async move {
        let Some(n) = go.recv().await else {
            return;
        };
        let until = Instant::now() + REGISTER_WAIT;
        while lock(&h.sinks).len() < n {
            if Instant::now() >= until {
                eprintln!("w6 tokio server: not every connection registered");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Out of the lock while awaiting, back in afterwards: the connections stay as they were.
        let mut sinks = std::mem::take(&mut *lock(&h.sinks));
        let msg = Message::text("x".repeat(SIZE));
        for sink in &mut sinks {
            let _ = sink.send(msg.clone()).await;
        }
        lock(&h.sinks).extend(sinks);
    });
    let server = TokioServer::start(rt, move |ws| {
        let hub = hub.clone();
        async move {
            let (sink, mut stream) = ws.split();
            lock(&hub.sinks).push(sink);
            while let Some(Ok(msg)) = stream.next().await {
                if let Some(n) = go_msg(&msg, conns) {
                    let _ = hub.go.try_send(n);
                }
            }
        }
    })?;
    Ok(Box::new(server))
}
