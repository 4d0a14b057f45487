//! w1 and w2: one client streams N messages to the server; the server's subscriber counts
//! them and, at N, answers `done` on the same connection. The client times from its first send
//! to receiving `done`, so the figure covers delivery to the server application.
//!
//! w1: 64 B text, msg/s. w2: 64 KiB binary, MB/s (10⁶ payload bytes per second).
//! Every implementation sends clones of one shared payload (`Utf8Bytes` or `Bytes`: a
//! reference count each); rxplus' server hands its subscriber the same shared-buffer items
//! (`Text` → `Utf8Bytes`, `Binary` → `Bytes`), so no implementation copies a payload.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rxplus::ws::{Binary, RxWSClient, RxWSServer, TaggedData, Text};
use rxplus::Notification;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tungstenite::{Bytes, Message, Utf8Bytes, WebSocket};

use super::{Cmp, Metric, Sample, Target, Variant, Workload, CLIENT_DEADLINE};
use crate::peers::raw::{self, RawServer};
use crate::peers::rx::{self, RxServer};
use crate::peers::tokio_ws::{self, TokioServer};
use crate::peers::{RunningServer, Stack};

pub struct OneWay {
    id: &'static str,
    binary: bool,
}

pub static W1: OneWay = OneWay {
    id: "w1",
    binary: false,
};
pub static W2: OneWay = OneWay {
    id: "w2",
    binary: true,
};

const PATH: &str = "/oneway";

#[derive(Debug, Serialize, Deserialize)]
struct Params {
    messages: usize,
    size: usize,
}

static TEXT_VARIANTS: [Variant; 5] = [
    Variant {
        key: "rxplus",
        label: "rxplus",
    },
    Variant {
        key: crate::otel::VARIANT,
        label: "rxplus, telemetry on",
    },
    Variant {
        key: "raw-flush-each",
        label: "raw tungstenite, flush per message",
    },
    Variant {
        key: "raw-flush-end",
        label: "raw tungstenite, flush at end",
    },
    Variant {
        key: "tokio",
        label: "tokio-tungstenite",
    },
];

static TEXT_METRICS: [Metric; 1] = [Metric {
    key: "msgs_per_s",
    label: "throughput",
    unit: "msg/s",
    higher_is_better: true,
    baselines: &["raw-flush-each", "raw-flush-end", "rxplus"],
    decimals: 0,
}];

static BINARY_METRICS: [Metric; 1] = [Metric {
    key: "mb_per_s",
    label: "throughput",
    unit: "MB/s",
    higher_is_better: true,
    baselines: &["raw"],
    decimals: 1,
}];

impl Workload for OneWay {
    fn id(&self) -> &'static str {
        self.id
    }

    fn title(&self, params: &Value) -> String {
        let p: Params = serde_json::from_value(params.clone()).unwrap_or(Params {
            messages: 0,
            size: 0,
        });
        let kind = if self.binary { "binary" } else { "text" };
        format!(
            "{} {kind} messages of {} B, client → server, until the server's subscriber has all",
            p.messages, p.size
        )
    }

    fn variants(&self) -> &'static [Variant] {
        if self.binary {
            &super::STANDARD_VARIANTS
        } else {
            &TEXT_VARIANTS
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        if self.binary {
            &BINARY_METRICS
        } else {
            &TEXT_METRICS
        }
    }

    fn targets(&self) -> Vec<Target> {
        let ratio = |metric, baseline, bound| Target::Ratio {
            variant: "rxplus",
            metric,
            baseline,
            cmp: Cmp::AtLeast,
            bound,
        };
        if self.binary {
            vec![ratio("mb_per_s", "raw", 0.9)]
        } else {
            vec![
                ratio("msgs_per_s", "raw-flush-each", 4.0),
                ratio("msgs_per_s", "raw-flush-end", 0.4),
                // Telemetry must cost near nothing on the hot path.
                Target::Ratio {
                    variant: crate::otel::VARIANT,
                    metric: "msgs_per_s",
                    baseline: "rxplus",
                    cmp: Cmp::AtLeast,
                    bound: 0.9,
                },
            ]
        }
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            7
        } else {
            10
        }
    }

    fn params(&self, quick: bool) -> Value {
        let p = match (self.binary, quick) {
            (false, false) => Params {
                messages: 200_000,
                size: 64,
            },
            (false, true) => Params {
                messages: 50_000,
                size: 64,
            },
            (true, false) => Params {
                messages: 20_000,
                size: 64 << 10,
            },
            (true, true) => Params {
                messages: 5_000,
                size: 64 << 10,
            },
        };
        serde_json::json!(p)
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let p: Params = serde_json::from_value(params.clone())?;
        crate::otel::install_for(variant)?;
        let n = p.messages;
        let binary = self.binary;
        let done = move || done_message(binary);
        Ok(match (Stack::of(variant)?, self.binary) {
            (Stack::Rxplus, false) => Box::new(rx_server(rx::server(Text)?, n, || {
                Utf8Bytes::from_static("done")
            })),
            (Stack::Rxplus, true) => Box::new(rx_server(rx::server(Binary)?, n, || {
                Bytes::from_static(b"done")
            })),
            (Stack::Raw, _) => Box::new(RawServer::start(move |ws, _| {
                raw_count(ws, n, done_message(binary))
            })?),
            (Stack::Tokio, _) => Box::new(TokioServer::start(
                tokio_ws::runtime()?,
                move |mut ws| async move {
                    let mut count = 0;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            count += 1;
                            if count == n && ws.send(done()).await.is_err() {
                                break;
                            }
                        }
                    }
                },
            )?),
        })
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        crate::otel::install_for(variant)?;
        let n = p.messages;
        let text = Utf8Bytes::from("x".repeat(p.size));
        let bytes = Bytes::from((0..p.size).map(|i| i as u8).collect::<Vec<u8>>());
        let message = || {
            if self.binary {
                Message::Binary(bytes.clone())
            } else {
                Message::Text(text.clone())
            }
        };
        let elapsed = match (variant, self.binary) {
            ("rxplus" | crate::otel::VARIANT, false) => {
                rx_client(&rx::client(addr, PATH, Text)?, n, || text.clone())?
            }
            ("rxplus", true) => rx_client(&rx::client(addr, PATH, Binary)?, n, || bytes.clone())?,
            // The naive user: `send` writes and flushes each message (one syscall each).
            // For w2 this is the plain raw design too: with 64 KiB messages each flush is a
            // full write anyway, so batching would hardly change anything.
            ("raw-flush-each", false) | ("raw", true) => {
                let mut ws = raw::connect(addr, PATH)?;
                let t = Instant::now();
                for _ in 0..n {
                    ws.send(message())?;
                }
                raw_wait_done(&mut ws)?;
                t.elapsed()
            }
            // The syscall-amortised limit: `write` buffers (default write buffer, flushed by
            // tungstenite when it fills), one `flush` at the end.
            ("raw-flush-end", false) => {
                let mut ws = raw::connect(addr, PATH)?;
                let t = Instant::now();
                for _ in 0..n {
                    ws.write(message())?;
                }
                ws.flush()?;
                raw_wait_done(&mut ws)?;
                t.elapsed()
            }
            // Idiomatic tokio: `feed` each (buffers; flushes when the buffer fills), one
            // `flush` at the end.
            ("tokio", _) => tokio_ws::runtime()?.block_on(async {
                let mut ws = tokio_ws::connect(addr, PATH).await?;
                let t = Instant::now();
                for _ in 0..n {
                    ws.feed(message()).await?;
                }
                ws.flush().await?;
                match tokio::time::timeout(CLIENT_DEADLINE, ws.next()).await {
                    Ok(Some(Ok(m))) if m.is_text() || m.is_binary() => Ok(t.elapsed()),
                    Ok(other) => bail!("expected `done`, got {other:?}"),
                    Err(_) => bail!("no `done` from the server"),
                }
            })?,
            (other, _) => bail!("{} has no variant {other:?}", self.id),
        };
        let secs = elapsed.as_secs_f64();
        Ok(Sample::from([
            ("elapsed_s".into(), secs),
            ("msgs_per_s".into(), n as f64 / secs),
            ("mb_per_s".into(), (n * p.size) as f64 / 1e6 / secs),
        ]))
    }
}

/// Raw tungstenite's counting server, on the connection's thread, over any blocking stream:
/// at the `n`th data message it answers `done`.
pub(super) fn raw_count<S: Read + Write>(mut ws: WebSocket<S>, n: usize, done: Message) {
    let mut count = 0;
    while let Ok(msg) = ws.read() {
        if msg.is_text() || msg.is_binary() {
            count += 1;
            if count == n && ws.send(done.clone()).is_err() {
                break;
            }
        }
    }
}

pub(super) fn done_message(binary: bool) -> Message {
    if binary {
        Message::binary(b"done".to_vec())
    } else {
        Message::text("done")
    }
}

/// Counts in the subscriber; at `n`, replies `done` to the connection the last item came from.
pub(super) fn rx_server<T: Clone + Send + 'static>(
    server: RxWSServer<T>,
    n: usize,
    done: impl Fn() -> T + Send + Sync + 'static,
) -> RxServer<T> {
    let h = server.handle();
    let count = AtomicUsize::new(0);
    server.subscribe(move |m: TaggedData<T>| {
        if count.fetch_add(1, Ordering::Relaxed) + 1 == n {
            h.on_next(m.reply(done()));
        }
    });
    RxServer(Arc::new(server))
}

/// Sends `n` items with `on_next`; the time until the server's `done` arrives.
pub(super) fn rx_client<T: Clone + Send + 'static>(
    client: &RxWSClient<T>,
    n: usize,
    item: impl Fn() -> T,
) -> Result<Duration> {
    let inbox = client.stream();
    let t = Instant::now();
    for _ in 0..n {
        client.on_next(item());
    }
    match inbox.recv_timeout(CLIENT_DEADLINE) {
        Ok(Notification::Next(_)) => Ok(t.elapsed()),
        Ok(Notification::Error(e)) => bail!("client failed before `done`: {e}"),
        Ok(Notification::Completed) => bail!("client completed before `done`"),
        Err(e) => bail!("no `done` from the server: {e}"),
    }
}

fn raw_wait_done(ws: &mut raw::RawWs) -> Result<()> {
    ws.get_mut()
        .set_read_timeout(Some(CLIENT_DEADLINE))
        .context("set read timeout")?;
    wait_done(ws)
}

/// Reads until a data message (`done`), on any blocking stream (its read timeout set).
pub(super) fn wait_done<S: Read + Write>(ws: &mut WebSocket<S>) -> Result<()> {
    loop {
        let msg = ws.read().context("waiting for `done`")?;
        if msg.is_text() || msg.is_binary() {
            return Ok(());
        }
    }
}
