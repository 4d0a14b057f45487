//! The workloads. Each is a [`Workload`]: it names its variants, metrics and targets, sizes
//! itself (full or `--quick`), and implements both child roles (server and client) for every
//! variant. The orchestrator only iterates [`all`]; adding a workload is one module here plus
//! one line in [`all`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::child::Child;
use crate::peers::RunningServer;

mod broadcast;
mod echo;
mod gateway;
mod idle;
mod oneway;
mod scale;
mod scale_out;
mod stall;
mod tls;

/// Every workload, in run order.
pub fn all() -> Vec<&'static dyn Workload> {
    vec![
        &oneway::W1,
        &oneway::W2,
        &echo::W3,
        &broadcast::W4,
        &idle::W5,
        &scale::W6,
        &stall::W7,
        &gateway::G1,
        &gateway::G2,
        &gateway::G3,
        &tls::W2_TLS,
        &tls::W3_TLS,
        &scale_out::S1,
    ]
}

pub fn find(id: &str) -> Result<&'static dyn Workload> {
    match all().into_iter().find(|w| w.id() == id) {
        Some(w) => Ok(w),
        None => bail!("unknown workload {id:?}"),
    }
}

/// One run's measurements: metric key → value.
pub type Sample = BTreeMap<String, f64>;

/// One implementation of a workload. `key` goes on child command lines and starts with the
/// stack's name (see [`crate::peers::Stack`]).
#[derive(Debug)]
pub struct Variant {
    pub key: &'static str,
    pub label: &'static str,
}

/// rxplus, raw tungstenite and tokio-tungstenite, each as a user would write it.
pub static STANDARD_VARIANTS: [Variant; 3] = [
    Variant {
        key: "rxplus",
        label: "rxplus",
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

#[derive(Debug)]
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// Variants every other variant is compared with (ratio per run pair).
    pub baselines: &'static [&'static str],
    pub decimals: usize,
}

/// How a measured figure must compare with a bound.
#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    AtLeast,
    AtMost,
    Below,
}

/// A goal from the issue, checked against the medians (never hard-coded as met).
#[derive(Debug)]
pub enum Target {
    /// median(variant / baseline per run pair) against `bound`.
    Ratio {
        variant: &'static str,
        metric: &'static str,
        baseline: &'static str,
        cmp: Cmp,
        bound: f64,
    },
    /// median of the variant's metric against `bound` (in the metric's unit).
    Value {
        variant: &'static str,
        metric: &'static str,
        cmp: Cmp,
        bound: f64,
    },
    /// median of the variant's metric against the median of `other`'s.
    Versus {
        variant: &'static str,
        metric: &'static str,
        other: &'static str,
        cmp: Cmp,
    },
}

/// What a run needs from the orchestrator.
pub struct Ctx {
    pub exe: PathBuf,
    pub quick: bool,
}

pub trait Workload: Sync {
    fn id(&self) -> &'static str;
    /// One line: what is measured, with the sizes in `params`.
    fn title(&self, params: &Value) -> String;
    fn variants(&self) -> &'static [Variant];
    fn metrics(&self) -> &'static [Metric];
    fn targets(&self) -> Vec<Target> {
        Vec::new()
    }
    fn runs(&self, quick: bool) -> usize;
    /// Sizes, passed as JSON to both children.
    fn params(&self, quick: bool) -> Value;

    /// One measured run of one variant (orchestrator side). The default starts a server child
    /// and a client child and takes the client's `RESULT`.
    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        client_server_run(ctx, self.id(), variant, params, |_| Ok(Sample::new()))
    }

    /// The server child's work: start the server and return it.
    fn server(&self, variant: &str, params: &Value) -> Result<Box<dyn RunningServer>>;
    /// The client child's work: run against `addr` and return the measurements.
    fn client(&self, variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample>;
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(120);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Clients give up after this; it is below [`RESULT_TIMEOUT`] so a client's own message wins.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(90);
/// A client child that holds many connections (w5, w6) says `CONNECTED` within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// A server child answers `COUNT` within this, and counts every connection within this.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(30);
const DISPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the server child for `variant`, waits for `READY`.
pub fn start_server(
    ctx: &Ctx,
    id: &str,
    variant: &Variant,
    params: &str,
) -> Result<(Child, String)> {
    let mut server = Child::spawn(
        &ctx.exe,
        format!("{id} {} server", variant.key),
        &["server", id, variant.key, params],
    )?;
    let addr = server.expect("READY", READY_TIMEOUT)?;
    Ok((server, addr))
}

pub fn start_client(
    ctx: &Ctx,
    id: &str,
    variant: &Variant,
    addr: &str,
    params: &str,
) -> Result<Child> {
    Child::spawn(
        &ctx.exe,
        format!("{id} {} client", variant.key),
        &["client", id, variant.key, addr, params],
    )
}

/// Server child, client child, the client's `RESULT`; `extra` may read the server before it
/// is told to exit (e.g. its peak RSS).
pub fn client_server_run(
    ctx: &Ctx,
    id: &str,
    variant: &Variant,
    params: &Value,
    extra: impl FnOnce(&Child) -> Result<Sample>,
) -> Result<Sample> {
    let params = params.to_string();
    let (server, addr) = start_server(ctx, id, variant, &params)?;
    let mut client = start_client(ctx, id, variant, &addr, &params)?;
    let mut sample: Sample = serde_json::from_str(&client.expect("RESULT", RESULT_TIMEOUT)?)?;
    sample.extend(extra(&server)?);
    client.finish(EXIT_TIMEOUT)?;
    server.finish(EXIT_TIMEOUT)?;
    Ok(sample)
}

/// Waits (polling, bounded) until `count()` reaches `n`: connections a client has completed
/// can take a moment to be registered on the server side.
pub fn wait_until(n: usize, deadline: Duration, count: impl Fn() -> usize) -> Result<()> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let c = count();
        if c >= n {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            bail!(
                "only {c} of {n} connections after {:.0} s",
                deadline.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Asks the server child for its connection count (`COUNT`) until it reaches `n`: connections
/// a client has completed can take a moment to be registered on the server side.
pub fn wait_server_count(server: &mut Child, n: usize) -> Result<()> {
    let until = std::time::Instant::now() + COUNT_TIMEOUT;
    loop {
        let c = server_count(server)?;
        if c >= n {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            bail!("server sees only {c} of {n} connections");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The server child's open WebSocket connections (`COUNT`).
pub fn server_count(server: &mut Child) -> Result<usize> {
    server.send("COUNT")?;
    Ok(server.expect("COUNT", COUNT_TIMEOUT)?.parse()?)
}

/// Tells the server child to dispose (`DISPOSE`); returns how long its dispose took, in ms.
pub fn dispose_server(server: &mut Child) -> Result<f64> {
    server.send("DISPOSE")?;
    Ok(server.expect("DISPOSED", DISPOSE_TIMEOUT)?.parse()?)
}
