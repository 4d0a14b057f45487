//! w3: echo round trips of a 32 B text message through a server subscriber that answers the
//! connection the message came from; p50/p99/p99.9 in µs after a warm-up.
//!
//! Clients: rxplus reactive (the subscriber records the sample and sends the next message with
//! `on_next` from inside its callback), rxplus with a blocking caller (`on_next`, then wait on
//! `stream()`, like examples/echo_rtt.rs), raw (blocking send, then read), tokio (one task:
//! send, then next). The echo servers here are also w5's idle servers.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text};
use rxplus::Notification;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use super::{Cmp, Metric, Sample, Target, Variant, Workload, CLIENT_DEADLINE};
use crate::peers::raw::{self, RawServer};
use crate::peers::rx::{self, RxServer};
use crate::peers::tokio_ws::{self, TokioServer};
use crate::peers::{RunningServer, Stack};

pub struct Echo;
pub static W3: Echo = Echo;

const PATH: &str = "/echo";

/// Sizes of an echo workload (w3 here, g2 in `gateway.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Params {
    pub(super) warmup: usize,
    pub(super) iterations: usize,
    pub(super) size: usize,
}

impl Params {
    pub(super) fn json(quick: bool) -> Value {
        let (warmup, iterations) = if quick { (500, 5_000) } else { (1_000, 20_000) };
        serde_json::json!(Params {
            warmup,
            iterations,
            size: 32,
        })
    }
}

static VARIANTS: [Variant; 4] = [
    Variant {
        key: "rxplus",
        label: "rxplus (reactive)",
    },
    Variant {
        key: "rxplus-blocking",
        label: "rxplus (blocking caller)",
    },
    Variant {
        key: "raw",
        label: "raw tungstenite",
    },
    Variant {
        key: "tokio",
        label: "tokio-tungstenite",
    },
];

const fn latency(key: &'static str, label: &'static str) -> Metric {
    Metric {
        key,
        label,
        unit: "µs",
        higher_is_better: false,
        baselines: &["raw"],
        decimals: 1,
    }
}

static METRICS: [Metric; 3] = [
    latency("p50_us", "round trip p50"),
    latency("p99_us", "round trip p99"),
    latency("p999_us", "round trip p99.9"),
];

impl Workload for Echo {
    fn id(&self) -> &'static str {
        "w3"
    }

    fn title(&self, params: &Value) -> String {
        match serde_json::from_value::<Params>(params.clone()) {
            Ok(p) => format!(
                "echo round trip of a {} B text message, {} samples after {} warm-up",
                p.size, p.iterations, p.warmup
            ),
            Err(_) => "echo round trip".into(),
        }
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn targets(&self) -> Vec<Target> {
        ["rxplus", "rxplus-blocking"]
            .into_iter()
            .flat_map(|variant| {
                [
                    Target::Ratio {
                        variant,
                        metric: "p50_us",
                        baseline: "raw",
                        cmp: Cmp::AtMost,
                        bound: 1.3,
                    },
                    Target::Ratio {
                        variant,
                        metric: "p99_us",
                        baseline: "raw",
                        cmp: Cmp::AtMost,
                        bound: 2.0,
                    },
                    Target::Versus {
                        variant,
                        metric: "p50_us",
                        other: "tokio",
                        cmp: Cmp::Below,
                    },
                ]
            })
            .collect()
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            5
        } else {
            7
        }
    }

    fn params(&self, quick: bool) -> Value {
        Params::json(quick)
    }

    fn server(&self, variant: &str, _params: &Value) -> Result<Box<dyn RunningServer>> {
        echo_server(Stack::of(variant)?)
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let payload = "x".repeat(p.size);
        let total = p.warmup + p.iterations;
        let samples = match variant {
            "rxplus" => rx_reactive(rx::client(addr, PATH, Text)?, &p, payload)?,
            "rxplus-blocking" => rx_blocking(&rx::client(addr, PATH, Text)?, &p, payload)?,
            "raw" => {
                let mut ws = raw::connect(addr, PATH)?;
                ws.get_mut().set_read_timeout(Some(CLIENT_DEADLINE))?;
                raw_ping_pong(&mut ws, &p, payload)?
            }
            "tokio" => tokio_ws::runtime()?.block_on(async {
                let mut ws = tokio_ws::connect(addr, PATH).await?;
                let mut samples = Vec::with_capacity(p.iterations);
                for i in 0..total {
                    let t = Instant::now();
                    ws.send(Message::text(payload.clone())).await?;
                    loop {
                        match tokio::time::timeout(CLIENT_DEADLINE, ws.next()).await {
                            Ok(Some(Ok(m))) if m.is_text() => break,
                            Ok(Some(Ok(_))) => {}
                            other => bail!("echo {i}: {other:?}"),
                        }
                    }
                    if i >= p.warmup {
                        samples.push(t.elapsed());
                    }
                }
                anyhow::Ok(samples)
            })?,
            other => bail!("w3 has no variant {other:?}"),
        };
        Ok(latency_sample(samples))
    }
}

/// p50, p99, p99.9 and mean of round trips, in µs.
pub(super) fn latency_sample(mut samples: Vec<Duration>) -> Sample {
    samples.sort_unstable();
    let us = |q: f64| percentile(&samples, q).as_secs_f64() * 1e6;
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    Sample::from([
        ("p50_us".into(), us(0.50)),
        ("p99_us".into(), us(0.99)),
        ("p999_us".into(), us(0.999)),
        ("mean_us".into(), mean * 1e6),
    ])
}

/// The blocking caller: `on_next`, then wait on `stream()` for the echo.
pub(super) fn rx_blocking(
    client: &RxWSClient<String>,
    p: &Params,
    payload: String,
) -> Result<Vec<Duration>> {
    let inbox = client.stream();
    let mut samples = Vec::with_capacity(p.iterations);
    for i in 0..p.warmup + p.iterations {
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
    Ok(samples)
}

/// Raw tungstenite on any blocking stream: send, then read until the echo.
pub(super) fn raw_ping_pong<S: Read + Write>(
    ws: &mut WebSocket<S>,
    p: &Params,
    payload: String,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(p.iterations);
    for i in 0..p.warmup + p.iterations {
        let t = Instant::now();
        ws.send(Message::text(payload.clone()))?;
        while !ws.read().with_context(|| format!("echo {i}"))?.is_text() {}
        if i >= p.warmup {
            samples.push(t.elapsed());
        }
    }
    Ok(samples)
}

/// Nearest-rank percentile of sorted samples.
pub(super) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct PingPong {
    sent_at: Instant,
    received: usize,
    samples: Vec<Duration>,
}

/// The ping-pong is driven by the subscriber: each echo records a sample and sends the next
/// message from inside the callback (on the client's reader thread).
pub(super) fn rx_reactive(
    client: RxWSClient<String>,
    p: &Params,
    payload: String,
) -> Result<Vec<Duration>> {
    let (warmup, total) = (p.warmup, p.warmup + p.iterations);
    let state = Arc::new(Mutex::new(PingPong {
        sent_at: Instant::now(),
        received: 0,
        samples: Vec::with_capacity(p.iterations),
    }));
    let (finished_tx, finished) = mpsc::sync_channel(1);
    let (st, h, next) = (state.clone(), client.handle(), payload.clone());
    let _subscription = client.subscribe(move |_echo: String| {
        let now = Instant::now();
        let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
        s.received += 1;
        if s.received > warmup {
            let rtt = now - s.sent_at;
            s.samples.push(rtt);
        }
        if s.received == total {
            let _ = finished_tx.try_send(());
            return;
        }
        s.sent_at = Instant::now();
        drop(s);
        h.on_next(next.clone());
    });
    state.lock().unwrap_or_else(PoisonError::into_inner).sent_at = Instant::now();
    client.on_next(payload);
    finished
        .recv_timeout(CLIENT_DEADLINE)
        .context("the reactive ping-pong stalled")?;
    let samples = std::mem::take(&mut state.lock().unwrap_or_else(PoisonError::into_inner).samples);
    Ok(samples)
}

/// An echo server: every data message goes back to the connection it came from.
pub fn echo_server(stack: Stack) -> Result<Box<dyn RunningServer>> {
    Ok(match stack {
        Stack::Rxplus => Box::new(rx_echo(rx::server(Text)?)),
        Stack::Raw => Box::new(RawServer::start(|ws, _| raw_echo(ws))?),
        Stack::Tokio => Box::new(TokioServer::start(
            tokio_ws::runtime()?,
            |mut ws| async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            },
        )?),
    })
}

/// rxplus' echo: the subscriber sends every message back.
pub(super) fn rx_echo(server: RxWSServer<String>) -> RxServer<String> {
    let h = server.handle();
    // The inbound item already carries its path and connection: sending it back as it is
    // answers exactly that connection (same as `m.reply(m.data.clone())`, no copy).
    server.subscribe(move |m: TaggedData<String>| h.on_next(m));
    RxServer(Arc::new(server))
}

/// Raw tungstenite's echo, on the connection's thread, over any blocking stream.
pub(super) fn raw_echo<S: Read + Write>(mut ws: WebSocket<S>) {
    while let Ok(msg) = ws.read() {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
            break;
        }
    }
}
