//! w5: 1,000 idle connections held open. With all of them registered on the server, the
//! orchestrator reads the server's RSS (VmRSS) and thread count; then it tells the server to
//! dispose and the server prints how long that took (rxplus `dispose()`; raw: stop flag, shut
//! down every socket, join every thread; tokio: drop the runtime, which cancels every task and
//! joins its workers).
//!
//! The servers are w3's echo servers with their defaults. The client side is the same for all
//! three: one thread holding 1,000 plain raw tungstenite clients, which costs the server
//! nothing beyond the connections themselves. Both processes raise RLIMIT_NOFILE (in `main`).
//! The server's figures include the benchmark harness' main thread (the same for all).

use std::net::SocketAddr;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    dispose_server, start_client, start_server, wait_server_count, Cmp, Ctx, Metric, Sample,
    Target, Variant, Workload, CONNECT_TIMEOUT, EXIT_TIMEOUT,
};
use crate::child::{announce, hold_until_exit};
use crate::peers::{raw, RunningServer, Stack};
use crate::procfs;

pub struct Idle;
pub static W5: Idle = Idle;

const PATH: &str = "/idle";

#[derive(Debug, Serialize, Deserialize)]
struct Params {
    connections: usize,
}

static METRICS: [Metric; 3] = [
    Metric {
        key: "server_rss_mib",
        label: "server RSS",
        unit: "MiB",
        higher_is_better: false,
        baselines: &["raw"],
        decimals: 1,
    },
    Metric {
        key: "server_threads",
        label: "server threads",
        unit: "threads",
        higher_is_better: false,
        baselines: &["raw"],
        decimals: 0,
    },
    Metric {
        key: "dispose_ms",
        label: "server dispose",
        unit: "ms",
        higher_is_better: false,
        baselines: &["raw"],
        decimals: 1,
    },
];

impl Workload for Idle {
    fn id(&self) -> &'static str {
        "w5"
    }

    fn title(&self, params: &Value) -> String {
        let n = params["connections"].as_u64().unwrap_or(0);
        format!("{n} idle connections held open: server memory, threads, dispose time")
    }

    fn variants(&self) -> &'static [Variant] {
        &super::STANDARD_VARIANTS
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::Value {
                variant: "rxplus",
                metric: "server_rss_mib",
                cmp: Cmp::AtMost,
                bound: 64.0,
            },
            Target::Value {
                variant: "rxplus",
                metric: "dispose_ms",
                cmp: Cmp::AtMost,
                bound: 2000.0,
            },
        ]
    }

    fn runs(&self, quick: bool) -> usize {
        if quick {
            2
        } else {
            5
        }
    }

    fn params(&self, _quick: bool) -> Value {
        serde_json::json!(Params { connections: 1000 })
    }

    fn run_once(&self, ctx: &Ctx, variant: &Variant, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let params = params.to_string();
        let (mut server, addr) = start_server(ctx, self.id(), variant, &params)?;
        let mut client = start_client(ctx, self.id(), variant, &addr, &params)?;
        client.expect("CONNECTED", CONNECT_TIMEOUT)?;
        wait_server_count(&mut server, p.connections)?;
        let status = procfs::status(server.pid())?;
        let dispose_ms = dispose_server(&mut server)?;
        server.finish(EXIT_TIMEOUT)?;
        client.finish(EXIT_TIMEOUT)?;
        Ok(Sample::from([
            ("server_rss_mib".into(), status.rss_kib as f64 / 1024.0),
            ("server_threads".into(), status.threads as f64),
            ("dispose_ms".into(), dispose_ms),
        ]))
    }

    fn server(&self, variant: &str, _params: &Value) -> Result<Box<dyn RunningServer>> {
        super::echo::echo_server(Stack::of(variant)?)
    }

    /// Opens every connection, says `CONNECTED <n>`, holds them until told to exit (the
    /// process ends there; there is no `RESULT`).
    fn client(&self, _variant: &str, addr: SocketAddr, params: &Value) -> Result<Sample> {
        let p: Params = serde_json::from_value(params.clone())?;
        let conns = raw::connect_many(addr, PATH, p.connections)?;
        announce(&format!("CONNECTED {}", conns.len()));
        hold_until_exit()
    }
}
