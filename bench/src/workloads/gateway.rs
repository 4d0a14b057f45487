//! The gateway next to the WebSocket layer alone, on the same machine and in the same run:
//!
//! * g1: 64 B frames one way through a gateway link (node → node) vs binary messages client →
//!   server; frames/s until the receiving application has them all. Also through a resumable
//!   link (both nodes with `ResumeConfig::enabled()`), against the plain link.
//! * g2: echo round trip of 32 B (blocking caller) through a gateway link vs client ↔ server;
//!   also through a resumable link.
//! * g3: connect storm: 200 nodes dial one node (vs 200 clients to one server); time until every
//!   dialer is connected, and the accepting process's threads and RSS.
//!
//! A gateway sender that wants every frame delivered uses `drop-new` and retries a refused
//! frame (`send` hands it back): that is the backpressure here, as `block` is for the
//! WebSocket client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayNode, ResumeConfig, TaggedFrame};
use rxplus::ws::{Binary, RxWSClient, TaggedData};
use rxplus::{Error, Notification, OverflowStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::echo::{percentile, Params as EchoParams};
use super::{
    start_client, start_server, Cmp, Ctx, Metric, Sample, Target, Variant, Workload,
    CLIENT_DEADLINE, EXIT_TIMEOUT,
};
use crate::child::{announce, hold_until_exit};
use crate::peers::rx::{self, RxServer};
use crate::peers::RunningServer;
use crate::procfs;

type Node = GatewayNode<DefaultFrame>;

const PATH: &str = "/gw";

/// The WebSocket layer and a gateway link; g1 and g2 also run a resumable link (resume on
/// against off), g3 only the first two.
static VARIANTS: [Variant; 3] = [
    Variant {
        key: "rxplus-ws",
        label: "WebSocket layer (client → server)",
    },
    Variant {
        key: "rxplus-gateway",
        label: "gateway link (node → node)",
    },
    Variant {
        key: "rxplus-gateway-resume",
        label: "resumable gateway link (node → node)",
    },
];

fn node_cfg(resume: bool) -> GatewayConfig {
    let cfg = GatewayConfig::default()
        .host("127.0.0.1")
        .port(0)
        .overflow(OverflowStrategy::DropNew, 1000);
    if resume {
        cfg.resume(ResumeConfig::enabled())
    } else {
        cfg
    }
}

/// Whether a g1/g2 variant is a gateway link, and a resumable one.
fn gateway_variant(variant: &str) -> Option<bool> {
    match variant {
        "rxplus-gateway" => Some(false),
        "rxplus-gateway-resume" => Some(true),
        _ => None,
    }
}

/// A listening node, as a bench server.
struct GatewayServer(Arc<Node>);

impl RunningServer for GatewayServer {
    fn addr(&self) -> SocketAddr {
        self.0
            .local_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
    fn connections(&self) -> usize {
        self.0.get_connected_peers().len()
    }
    fn dispose(self: Box<Self>) {
        self.0.stop();
    }
}

fn listening_node(resume: bool) -> Result<Node> {
    let n = Node::new(node_cfg(resume))?;
    n.start()?;
    Ok(n)
}

/// A node that dialed `addr` and is connected.
fn dialing_node(addr: SocketAddr, resume: bool) -> Result<(Node, rxplus::ws::ConnId)> {
    let n = Node::new(node_cfg(resume))?;
    let id = n.connect_to(&format!("ws://{addr}{PATH}"))?;
    ensure!(
        n.wait_connected(id, Duration::from_secs(10)),
        "gateway: not connected to {addr} within 10 s"
    );
    Ok((n, id))
}

/// Sends one frame, retrying while the link's `drop-new` queue is full. A refusal means a
/// full queue (1,000 frames, hundreds of µs of writing): wait a little before the next try,
/// as a `block` sender sleeps until its queue is half empty. The clock is read only once a frame
/// is refused (a read per frame was 13 % of the sending thread's samples in g1).
fn send_all_delivered(n: &Node, mut frame: TaggedFrame<DefaultFrame>) -> Result<()> {
    let mut deadline = None;
    loop {
        match n.send(frame) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.error(), Error::Overflow { .. }) => {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + CLIENT_DEADLINE);
                ensure!(Instant::now() < deadline, "the link never drained");
                frame = e.into_item().context("refused frame not handed back")?;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => bail!("send: {}", e.into_error()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OneWayParams {
    messages: usize,
    size: usize,
}

pub struct GatewayOneWay;
pub static G1: GatewayOneWay = GatewayOneWay;

static ONEWAY_METRICS: [Metric; 1] = [Metric {
    key: "msgs_per_s",
    label: "throughput",
    unit: "msg/s",
    higher_is_better: true,
    baselines: &["rxplus-ws", "rxplus-gateway"],
    decimals: 0,
}];

impl Workload for GatewayOneWay {
    fn id(&self) -> &'static str {
        "g1"
    }

    fn title(&self, params: &Value) -> String {
        let n = params["messages"].as_u64().unwrap_or(0);
        let size = params["size"].as_u64().unwrap_or(0);
        format!(
            "{n} binary frames of {size} B one way, until the receiving application has them all"
        )
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &ONEWAY_METRICS
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::Ratio {
                variant: "rxplus-gateway",
                metric: "msgs_per_s",
                baseline: "rxplus-ws",
                cmp: Cmp::AtLeast,
                bound: 0.8,
            },
            Target::Ratio {
                variant: "rxplus-gateway-resume",
                metric: "msgs_per_s",
                baseline: "rxplus-gateway",
                cmp: Cmp::AtLeast,
                bound: 0.8,
            },
        ]
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            5
        } else {
            10
        }
    }

    fn params(&self, quick: bool) -> Value {
        serde_json::json!(OneWayParams {
            messages: if quick { 50_000 } else { 200_000 },
            size: 64,
        })
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let p: OneWayParams = serde_json::from_value(params.clone())?;
        let n = p.messages;
        let count = AtomicUsize::new(0);
        match variant {
            "rxplus-ws" => {
                let server = rx::server(Binary)?;
                let h = server.handle();
                server.subscribe(move |m: TaggedData<Vec<u8>>| {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        h.on_next(m.reply(b"done".to_vec()));
                    }
                });
                Ok(Box::new(RxServer(Arc::new(server))))
            }
            v if gateway_variant(v).is_some() => {
                let node = listening_node(gateway_variant(v) == Some(true))?;
                let h = node.handle();
                node.subscribe(move |f: TaggedFrame<DefaultFrame>| {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        h.on_next(TaggedFrame::new(
                            f.conn_id,
                            DefaultFrame::data(&b"done"[..]),
                        ));
                    }
                });
                Ok(Box::new(GatewayServer(Arc::new(node))))
            }
            other => bail!("g1 has no variant {other:?}"),
        }
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: OneWayParams = serde_json::from_value(params.clone())?;
        let payload: Vec<u8> = (0..p.size).map(|i| i as u8).collect();
        let elapsed = match variant {
            "rxplus-ws" => {
                let client: RxWSClient<Vec<u8>> = rx::client(addr, PATH, Binary)?;
                let inbox = client.stream();
                let t = Instant::now();
                for _ in 0..p.messages {
                    client.on_next(payload.clone());
                }
                match inbox.recv_timeout(CLIENT_DEADLINE) {
                    Ok(Notification::Next(_)) => t.elapsed(),
                    other => bail!("no `done` from the server: {other:?}"),
                }
            }
            v if gateway_variant(v).is_some() => {
                let (node, id) = dialing_node(addr, gateway_variant(v) == Some(true))?;
                let inbox = node.stream();
                let t = Instant::now();
                for _ in 0..p.messages {
                    send_all_delivered(
                        &node,
                        TaggedFrame::new(id, DefaultFrame::data(payload.clone())),
                    )?;
                }
                match inbox.recv_timeout(CLIENT_DEADLINE) {
                    Ok(Notification::Next(_)) => t.elapsed(),
                    other => bail!("no `done` from the node: {other:?}"),
                }
            }
            other => bail!("g1 has no variant {other:?}"),
        };
        Ok(Sample::from([(
            "msgs_per_s".into(),
            p.messages as f64 / elapsed.as_secs_f64(),
        )]))
    }
}

pub struct GatewayEcho;
pub static G2: GatewayEcho = GatewayEcho;

const fn latency(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        unit: "µs",
        higher_is_better: false,
        baselines: &["rxplus-ws", "rxplus-gateway"],
        decimals: 1,
    }
}

static ECHO_METRICS: [Metric; 2] = [
    latency("p50_us", "round trip p50"),
    latency("p99_us", "round trip p99"),
];

impl Workload for GatewayEcho {
    fn id(&self) -> &'static str {
        "g2"
    }

    fn title(&self, params: &Value) -> String {
        format!(
            "echo round trip of a {} B binary frame, blocking caller, {} samples",
            params["size"].as_u64().unwrap_or(0),
            params["iterations"].as_u64().unwrap_or(0)
        )
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &ECHO_METRICS
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::Ratio {
                variant: "rxplus-gateway",
                metric: "p50_us",
                baseline: "rxplus-ws",
                cmp: Cmp::AtMost,
                bound: 1.15,
            },
            // "On ≥ 0.8× off" for a latency: at most 1.25× the plain link's.
            Target::Ratio {
                variant: "rxplus-gateway-resume",
                metric: "p50_us",
                baseline: "rxplus-gateway",
                cmp: Cmp::AtMost,
                bound: 1.25,
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
        EchoParams::json(quick)
    }

    fn server(&self, variant: &str, _params: &Value) -> Result<Box<dyn RunningServer>> {
        match variant {
            "rxplus-ws" => {
                let server = rx::server(Binary)?;
                let h = server.handle();
                server.subscribe(move |m: TaggedData<Vec<u8>>| h.on_next(m));
                Ok(Box::new(RxServer(Arc::new(server))))
            }
            v if gateway_variant(v).is_some() => {
                let node = listening_node(gateway_variant(v) == Some(true))?;
                let h = node.handle();
                // The inbound frame carries its connection: sending it back answers that peer.
                node.subscribe(move |f: TaggedFrame<DefaultFrame>| h.on_next(f));
                Ok(Box::new(GatewayServer(Arc::new(node))))
            }
            other => bail!("g2 has no variant {other:?}"),
        }
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: EchoParams = serde_json::from_value(params.clone())?;
        let payload = vec![b'x'; p.size];
        let total = p.warmup + p.iterations;
        let mut samples = Vec::with_capacity(p.iterations);
        match variant {
            "rxplus-ws" => {
                let client: RxWSClient<Vec<u8>> = rx::client(addr, PATH, Binary)?;
                let inbox = client.stream();
                for i in 0..total {
                    let t = Instant::now();
                    client.on_next(payload.clone());
                    match inbox.recv_timeout(CLIENT_DEADLINE) {
                        Ok(Notification::Next(_)) => {}
                        other => bail!("echo {i}: {other:?}"),
                    }
                    if i >= p.warmup {
                        samples.push(t.elapsed());
                    }
                }
            }
            v if gateway_variant(v).is_some() => {
                let (node, id) = dialing_node(addr, gateway_variant(v) == Some(true))?;
                let inbox = node.stream();
                for i in 0..total {
                    let t = Instant::now();
                    node.send_to(id, DefaultFrame::data(payload.clone()))?;
                    match inbox.recv_timeout(CLIENT_DEADLINE) {
                        Ok(Notification::Next(_)) => {}
                        other => bail!("echo {i}: {other:?}"),
                    }
                    if i >= p.warmup {
                        samples.push(t.elapsed());
                    }
                }
            }
            other => bail!("g2 has no variant {other:?}"),
        }
        samples.sort_unstable();
        let us = |q: f64| percentile(&samples, q).as_secs_f64() * 1e6;
        Ok(Sample::from([
            ("p50_us".into(), us(0.50)),
            ("p99_us".into(), us(0.99)),
        ]))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StormParams {
    dialers: usize,
}

pub struct ConnectStorm;
pub static G3: ConnectStorm = ConnectStorm;

static STORM_METRICS: [Metric; 3] = [
    Metric {
        key: "storm_ms",
        label: "all dialers connected",
        unit: "ms",
        higher_is_better: false,
        baselines: &["rxplus-ws"],
        decimals: 1,
    },
    Metric {
        key: "server_threads",
        label: "accepting side threads",
        unit: "threads",
        higher_is_better: false,
        baselines: &["rxplus-ws"],
        decimals: 0,
    },
    Metric {
        key: "server_rss_mib",
        label: "accepting side RSS",
        unit: "MiB",
        higher_is_better: false,
        baselines: &["rxplus-ws"],
        decimals: 1,
    },
];

const STORM_TIMEOUT: Duration = Duration::from_secs(60);

impl Workload for ConnectStorm {
    fn id(&self) -> &'static str {
        "g3"
    }

    fn title(&self, params: &Value) -> String {
        format!(
            "connect storm: {} dialers at once to one listener",
            params["dialers"].as_u64().unwrap_or(0)
        )
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS[..2]
    }

    fn metrics(&self) -> &'static [Metric] {
        &STORM_METRICS
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            2
        } else {
            5
        }
    }

    fn params(&self, _quick: bool) -> Value {
        serde_json::json!(StormParams { dialers: 200 })
    }

    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        let p: StormParams = serde_json::from_value(params.clone())?;
        let params = params.to_string();
        let (mut server, addr) = start_server(ctx, self.id(), variant, &params)?;
        let mut client = start_client(ctx, self.id(), variant, &addr, &params)?;
        let storm_ms: f64 = client.expect("CONNECTED", STORM_TIMEOUT)?.parse()?;
        let until = Instant::now() + STORM_TIMEOUT;
        loop {
            server.send("COUNT")?;
            let n: usize = server.expect("COUNT", STORM_TIMEOUT)?.parse()?;
            if n >= p.dialers {
                break;
            }
            ensure!(
                Instant::now() < until,
                "only {n} of {} connected",
                p.dialers
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = procfs::status(server.pid())?;
        server.send("EXIT")?;
        server.finish(EXIT_TIMEOUT)?;
        client.finish(EXIT_TIMEOUT)?;
        Ok(Sample::from([
            ("storm_ms".into(), storm_ms),
            ("server_threads".into(), status.threads as f64),
            ("server_rss_mib".into(), status.rss_kib as f64 / 1024.0),
        ]))
    }

    fn server(&self, variant: &str, _params: &Value) -> Result<Box<dyn RunningServer>> {
        match variant {
            "rxplus-ws" => Ok(Box::new(RxServer(Arc::new(rx::server::<Vec<u8>>(Binary)?)))),
            "rxplus-gateway" => Ok(Box::new(GatewayServer(Arc::new(listening_node(false)?)))),
            other => bail!("g3 has no variant {other:?}"),
        }
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: StormParams = serde_json::from_value(params.clone())?;
        let t = Instant::now();
        match variant {
            "rxplus-ws" => {
                let url = rxplus::ws::WSConnectionConfig::from_url(&format!("ws://{addr}{PATH}"))?;
                let clients = (0..p.dialers)
                    .map(|_| RxWSClient::new(url.clone(), Binary))
                    .collect::<std::result::Result<Vec<RxWSClient<Vec<u8>>>, _>>()?;
                for (i, c) in clients.iter().enumerate() {
                    ensure!(
                        c.wait_connected(STORM_TIMEOUT),
                        "client {i} never connected"
                    );
                }
                announce(&format!("CONNECTED {}", t.elapsed().as_secs_f64() * 1e3));
                hold_until_exit()
            }
            "rxplus-gateway" => {
                let url = format!("ws://{addr}{PATH}");
                let mut nodes = Vec::with_capacity(p.dialers);
                for _ in 0..p.dialers {
                    let n = Node::new(node_cfg(false))?;
                    let id = n.connect_to(&url)?;
                    nodes.push((n, id));
                }
                for (i, (n, id)) in nodes.iter().enumerate() {
                    ensure!(
                        n.wait_connected(*id, STORM_TIMEOUT),
                        "node {i} never connected"
                    );
                }
                announce(&format!("CONNECTED {}", t.elapsed().as_secs_f64() * 1e3));
                hold_until_exit()
            }
            other => bail!("g3 has no variant {other:?}"),
        }
    }
}
