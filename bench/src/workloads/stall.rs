//! w7: one stalled reader among four. An rxplus server with its default settings broadcasts N
//! text messages to a path; three raw tungstenite clients (a reader thread each) count them.
//! In the `stalled` variant a fourth peer on the path completed its handshake and never reads
//! (its receive buffer is 4 KiB). The client process times from `go` until all three fast
//! clients have N: deliveries/s to them. The bound: with the stalled reader, the three
//! keep at least 90 % of their rate without it.
//!
//! The server, with `WSConfig::default()` (the default policy is what is measured): on `go`,
//! once every expected connection is registered, N items to the path, then `end`. Readers
//! count until `end`; a reader that falls behind loses the oldest queued messages (drop-old),
//! so the share delivered is reported too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use rxplus::ws::{TaggedData, Text, WSConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tungstenite::Message;

use super::{wait_until, Cmp, Metric, Sample, Target, Variant, Workload, CLIENT_DEADLINE};
use crate::peers::raw;
use crate::peers::rx::{self, RxServer};
use crate::peers::RunningServer;

pub struct Stall;
pub static W7: Stall = Stall;

const PATH: &str = "/stall";
/// The fast clients.
const FAST: usize = 3;
/// The last message: readers stop at it (under the default `drop-old` a reader that falls
/// behind may miss others, never the newest).
const END: &str = "end";
const REGISTER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Params {
    messages: usize,
    size: usize,
}

static VARIANTS: [Variant; 2] = [
    Variant {
        key: "rxplus",
        label: "rxplus, 3 readers",
    },
    Variant {
        key: "rxplus-stalled",
        label: "rxplus, 3 readers + 1 stalled",
    },
];

static METRICS: [Metric; 2] = [
    Metric {
        key: "deliveries_per_s",
        label: "deliveries to the 3 fast readers",
        unit: "msg/s",
        higher_is_better: true,
        baselines: &["rxplus"],
        decimals: 0,
    },
    Metric {
        key: "delivered_pct",
        label: "of the messages, delivered to the 3",
        unit: "%",
        higher_is_better: true,
        baselines: &["rxplus"],
        decimals: 1,
    },
];

impl Workload for Stall {
    fn id(&self) -> &'static str {
        "w7"
    }

    fn title(&self, params: &Value) -> String {
        match serde_json::from_value::<Params>(params.clone()) {
            Ok(p) => format!(
                "broadcast of {} text messages of {} B to 3 readers, with and without a 4th that never reads (server defaults)",
                p.messages, p.size
            ),
            Err(_) => "stalled reader".into(),
        }
    }

    fn variants(&self) -> &'static [Variant] {
        &VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::Ratio {
            variant: "rxplus-stalled",
            metric: "deliveries_per_s",
            baseline: "rxplus",
            cmp: Cmp::AtLeast,
            bound: 0.9,
        }]
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            3
        } else {
            7
        }
    }

    fn params(&self, quick: bool) -> Value {
        serde_json::json!(Params {
            messages: if quick { 50_000 } else { 200_000 },
            size: 256,
        })
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let p: Params = serde_json::from_value(params.clone())?;
        let expect = FAST + usize::from(variant == "rxplus-stalled");
        // The defaults: they are what w7 measures.
        let server = Arc::new(rx::server_with(Text, WSConfig::default())?);
        let (go_tx, go) = mpsc::sync_channel::<()>(1);
        server.subscribe(move |m: TaggedData<String>| {
            if m.data == "go" {
                let _ = go_tx.try_send(());
            }
        });
        let s = server.clone();
        std::thread::spawn(move || {
            if go.recv().is_err() {
                return;
            }
            if let Err(e) = wait_until(expect, REGISTER_WAIT, || s.connections(PATH).len()) {
                eprintln!("w7 server: {e}");
                return;
            }
            let payload = "x".repeat(p.size);
            let path: Arc<str> = PATH.into();
            for _ in 0..p.messages {
                s.on_next(TaggedData::new(path.clone(), payload.clone()));
            }
            s.on_next(TaggedData::new(path, END.to_string()));
        });
        Ok(Box::new(RxServer(server)))
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let stalled = (variant == "rxplus-stalled")
            .then(|| stalled_peer(addr))
            .transpose()?;
        let mut conns = (0..FAST)
            .map(|_| raw::connect(addr, PATH))
            .collect::<Result<Vec<_>>>()?;
        let t = Instant::now();
        conns[0].send(Message::text("go"))?;
        let readers: Vec<_> = conns
            .into_iter()
            .map(|mut ws| {
                std::thread::spawn(move || -> Result<usize> {
                    let _ = ws.get_mut().set_read_timeout(Some(CLIENT_DEADLINE));
                    let mut got = 0;
                    loop {
                        match ws.read()? {
                            Message::Text(t) if t.as_str() == END => return Ok(got),
                            Message::Text(_) => got += 1,
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        let mut got = 0;
        for r in readers {
            got += r
                .join()
                .map_err(|_| anyhow::anyhow!("w7 reader panicked"))??;
        }
        let secs = t.elapsed().as_secs_f64();
        drop(stalled);
        Ok(Sample::from([
            ("deliveries_per_s".into(), got as f64 / secs),
            (
                "delivered_pct".into(),
                100.0 * got as f64 / (FAST * p.messages) as f64,
            ),
        ]))
    }
}

/// A peer that completes the handshake by hand and never reads again.
fn stalled_peer(addr: SocketAddr) -> Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_recv_buffer_size(4096)?;
    s.connect(&addr.into())?;
    let mut s: TcpStream = s.into();
    write!(
        s,
        "GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    let mut b = [0u8; 1];
    while !resp.ends_with(b"\r\n\r\n") {
        ensure!(
            s.read(&mut b)? == 1,
            "stalled peer: closed during the handshake"
        );
        resp.push(b[0]);
    }
    ensure!(
        resp.starts_with(b"HTTP/1.1 101"),
        "stalled peer: {}",
        String::from_utf8_lossy(&resp)
    );
    Ok(s)
}
