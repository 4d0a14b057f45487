//! w2-tls and w3-tls: w2 and w3 over `wss://` (TLS 1.3, rustls with the `ring` provider),
//! rxplus next to raw tungstenite over `rustls::StreamOwned` (blocking, one thread per
//! connection). Same sizes, loops and servers as the plaintext workloads; both stacks use the
//! same certificate (made once per run, ECDSA P-256) and rustls configs built alike, and every
//! run records the protocol version and cipher suite its connection negotiated (the runs of a
//! workload must all agree).
//!
//! * w2-tls: 64 KiB binary messages client → server until the server's subscriber has all;
//!   MB/s and msg/s.
//! * w3-tls: echo round trip of 32 B text; p50/p99/p99.9 in µs (rxplus reactive and blocking
//!   caller).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rxplus::ws::{Binary, Text};
use serde_json::Value;
use tungstenite::Message;

use super::echo::{self, Params as EchoParams};
use super::oneway;
use super::CLIENT_DEADLINE;
use super::{client_server_run, Cmp, Ctx, Metric, Sample, Target, Variant, Workload};
use crate::peers::tls::{self, Negotiated, PkiFiles};
use crate::peers::{RunningServer, Stack};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    OneWay,
    Echo,
}

pub struct Tls {
    id: &'static str,
    kind: Kind,
}

pub static W2_TLS: Tls = Tls {
    id: "w2-tls",
    kind: Kind::OneWay,
};
pub static W3_TLS: Tls = Tls {
    id: "w3-tls",
    kind: Kind::Echo,
};

const ONEWAY_PATH: &str = "/oneway";
const ECHO_PATH: &str = "/echo";
const RAW_LABEL: &str = "raw tungstenite + rustls";

static ONEWAY_VARIANTS: [Variant; 2] = [
    Variant {
        key: "rxplus",
        label: "rxplus",
    },
    Variant {
        key: "raw",
        label: RAW_LABEL,
    },
];

static ECHO_VARIANTS: [Variant; 3] = [
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
        label: RAW_LABEL,
    },
];

static ONEWAY_METRICS: [Metric; 2] = [
    Metric {
        key: "mb_per_s",
        label: "throughput",
        unit: "MB/s",
        higher_is_better: true,
        baselines: &["raw"],
        decimals: 1,
    },
    Metric {
        key: "msgs_per_s",
        label: "throughput",
        unit: "msg/s",
        higher_is_better: true,
        baselines: &["raw"],
        decimals: 0,
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

static ECHO_METRICS: [Metric; 3] = [
    latency("p50_us", "round trip p50"),
    latency("p99_us", "round trip p99"),
    latency("p999_us", "round trip p99.9"),
];

/// The first run's negotiated version and suite (orchestrator side), which every other run
/// of every TLS workload must match.
static NEGOTIATED: Mutex<Option<(f64, f64)>> = Mutex::new(None);

fn pki(params: &Value) -> Result<PkiFiles> {
    match params.get("pki") {
        Some(v) => Ok(serde_json::from_value(v.clone())?),
        None => bail!(
            "no certificate: {}",
            params
                .get("pki_error")
                .and_then(Value::as_str)
                .unwrap_or("(not made)")
        ),
    }
}

fn with_negotiated(mut sample: Sample, n: Negotiated) -> Sample {
    sample.insert("tls_version".into(), f64::from(n.version));
    sample.insert("tls_suite".into(), f64::from(n.suite));
    sample
}

impl Workload for Tls {
    fn id(&self) -> &'static str {
        self.id
    }

    fn title(&self, params: &Value) -> String {
        let field = |k: &str| params.get(k).and_then(Value::as_u64).unwrap_or(0);
        match self.kind {
            Kind::OneWay => format!(
                "w2 over TLS: {} binary messages of {} B, client → server, until the server's \
                 subscriber has all",
                field("messages"),
                field("size")
            ),
            Kind::Echo => format!(
                "w3 over TLS: echo round trip of a {} B text message, {} samples after {} \
                 warm-up",
                field("size"),
                field("iterations"),
                field("warmup")
            ),
        }
    }

    fn variants(&self) -> &'static [Variant] {
        match self.kind {
            Kind::OneWay => &ONEWAY_VARIANTS,
            Kind::Echo => &ECHO_VARIANTS,
        }
    }

    fn metrics(&self) -> &'static [Metric] {
        match self.kind {
            Kind::OneWay => &ONEWAY_METRICS,
            Kind::Echo => &ECHO_METRICS,
        }
    }

    fn targets(&self) -> Vec<Target> {
        match self.kind {
            Kind::OneWay => vec![Target::Ratio {
                variant: "rxplus",
                metric: "mb_per_s",
                baseline: "raw",
                cmp: Cmp::AtLeast,
                bound: 0.9,
            }],
            Kind::Echo => ["rxplus", "rxplus-blocking"]
                .into_iter()
                .map(|variant| Target::Ratio {
                    variant,
                    metric: "p50_us",
                    baseline: "raw",
                    cmp: Cmp::AtMost,
                    bound: 1.3,
                })
                .collect(),
        }
    }

    fn runs(&self, quick: bool) -> usize {
        match self.kind {
            Kind::OneWay => oneway::W2.runs(quick),
            Kind::Echo => echo::W3.runs(quick),
        }
    }

    /// The plaintext workload's sizes, plus where the run's certificate is.
    fn params(&self, quick: bool) -> Value {
        let mut p = match self.kind {
            Kind::OneWay => oneway::W2.params(quick),
            Kind::Echo => EchoParams::json(quick),
        };
        match tls::pki_files() {
            Ok(files) => p["pki"] = serde_json::json!(files),
            Err(e) => p["pki_error"] = Value::String(e),
        }
        p
    }

    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        let sample = client_server_run(ctx, self.id, variant, params, |_| Ok(Sample::new()))?;
        let (Some(&version), Some(&suite)) = (sample.get("tls_version"), sample.get("tls_suite"))
        else {
            bail!("the client did not say what its connection negotiated");
        };
        let mut first = NEGOTIATED.lock().unwrap_or_else(|e| e.into_inner());
        match *first {
            None => {
                eprintln!(
                    "[{}] negotiated: {} (every run must match)",
                    self.id,
                    Negotiated::describe(version, suite)
                );
                *first = Some((version, suite));
            }
            Some((v, s)) if (v, s) == (version, suite) => {}
            Some((v, s)) => bail!(
                "{} negotiated {}, an earlier run {}: the comparison would not be fair",
                variant.key,
                Negotiated::describe(version, suite),
                Negotiated::describe(v, s)
            ),
        }
        Ok(sample)
    }

    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>> {
        let pki = pki(params)?;
        Ok(match (self.kind, Stack::of(variant)?) {
            (Kind::OneWay, Stack::Rxplus) => {
                let n = oneway_params(params)?.0;
                Box::new(oneway::rx_server(tls::rx_server(&pki, Binary)?, n, || {
                    b"done".to_vec()
                }))
            }
            (Kind::OneWay, Stack::Raw) => {
                let n = oneway_params(params)?.0;
                Box::new(tls::raw_server(&pki, move |ws, _| {
                    oneway::raw_count(ws, n, oneway::done_message(true))
                })?)
            }
            (Kind::Echo, Stack::Rxplus) => Box::new(echo::rx_echo(tls::rx_server(&pki, Text)?)),
            (Kind::Echo, Stack::Raw) => {
                Box::new(tls::raw_server(&pki, |ws, _| echo::raw_echo(ws))?)
            }
            (_, Stack::Tokio) => bail!("{} has no variant {variant:?}", self.id),
        })
    }

    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let pki = pki(params)?;
        match self.kind {
            Kind::OneWay => oneway_client(&pki, variant, addr, params),
            Kind::Echo => echo_client(&pki, variant, addr, params),
        }
    }
}

/// (messages, size) of w2's parameters.
fn oneway_params(params: &Value) -> Result<(usize, usize)> {
    let field = |k: &str| {
        params
            .get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .with_context(|| format!("params: no {k}"))
    };
    Ok((field("messages")?, field("size")?))
}

/// As w2's client: every message from a fresh clone of the payload; from the first send to
/// the server's `done`.
fn oneway_client(
    pki: &PkiFiles,
    variant: &str,
    addr: SocketAddr,
    params: &Value,
) -> Result<Sample> {
    let (n, size) = oneway_params(params)?;
    let bytes: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let (elapsed, negotiated) = match variant {
        "rxplus" => {
            let (client, negotiated) = tls::rx_client(pki, addr, ONEWAY_PATH, Binary)?;
            (oneway::rx_client(&client, n, || bytes.clone())?, negotiated)
        }
        "raw" => {
            let (mut ws, negotiated) = tls::raw_connect(pki, addr, ONEWAY_PATH)?;
            let t = Instant::now();
            for _ in 0..n {
                ws.send(Message::binary(bytes.clone()))?;
            }
            ws.get_ref().sock.set_read_timeout(Some(CLIENT_DEADLINE))?;
            oneway::wait_done(&mut ws)?;
            (t.elapsed(), negotiated)
        }
        other => bail!("w2-tls has no variant {other:?}"),
    };
    let secs = elapsed.as_secs_f64();
    let sample = Sample::from([
        ("elapsed_s".into(), secs),
        ("msgs_per_s".into(), n as f64 / secs),
        ("mb_per_s".into(), (n * size) as f64 / 1e6 / secs),
    ]);
    Ok(with_negotiated(sample, negotiated))
}

fn echo_client(pki: &PkiFiles, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
    let p: EchoParams = serde_json::from_value(params.clone())?;
    let payload = "x".repeat(p.size);
    let (samples, negotiated) = match variant {
        "rxplus" => {
            let (client, negotiated) = tls::rx_client(pki, addr, ECHO_PATH, Text)?;
            (echo::rx_reactive(client, &p, payload)?, negotiated)
        }
        "rxplus-blocking" => {
            let (client, negotiated) = tls::rx_client(pki, addr, ECHO_PATH, Text)?;
            (echo::rx_blocking(&client, &p, payload)?, negotiated)
        }
        "raw" => {
            let (mut ws, negotiated) = tls::raw_connect(pki, addr, ECHO_PATH)?;
            ws.get_ref().sock.set_read_timeout(Some(CLIENT_DEADLINE))?;
            (echo::raw_ping_pong(&mut ws, &p, payload)?, negotiated)
        }
        other => bail!("w3-tls has no variant {other:?}"),
    };
    Ok(with_negotiated(echo::latency_sample(samples), negotiated))
}
