//! One gateway node on the command line, speaking `DefaultFrame`.
//!
//! ```text
//! cargo run --release --example gateway_node -- --listen HOST:PORT [--connect URL]...
//!     [--node-id 32HEX] [--handshake-timeout-ms N] [--overflow STRATEGY:SIZE]
//!     [--duplicates allow|keep-one] [--resume] [--session-expiry-ms N]
//! ```
//!
//! Prints on stdout, one flushed line each: `listening on ADDR node NODEID`,
//! `connected CONNID NODEID inbound|outbound`, `disconnected CONNID CAUSE`,
//! `interrupted CONNID`, `resumed CONNID REPLAYED`, `resume-failed CONNID CAUSE LOST`,
//! `frame CONNID TEXT`. `--resume` makes links resumable (`docs/gateway.md`, "Resume"). Reads commands on stdin: `send CONNID TEXT`,
//! `all TEXT` (prints `sent N`), `peers` (prints `peers N CONNID...`), `connect URL` (prints
//! `dialing CONNID`), `quit`. End of input quits too: a graceful stop, exit 0. Errors go to
//! stderr.

use std::process::ExitCode;

// The node and its stdin commands are shared with `rxplus gateway` (feature `cli`).
#[path = "../src/bin/rxplus/gateway.rs"]
mod gateway;

use gateway::GatewayOpts;

const USAGE: &str = "usage: gateway_node --listen HOST:PORT [--connect URL]... [--node-id 32HEX] \
[--handshake-timeout-ms N] [--overflow STRATEGY:SIZE] [--duplicates allow|keep-one] [--resume] \
[--session-expiry-ms N]";

fn parse(args: &[String]) -> Result<GatewayOpts, String> {
    let mut o = GatewayOpts::default();
    let mut listen = None;
    let mut it = args.iter();
    let ms = |flag: &str, v: String| {
        v.parse::<u64>()
            .map_err(|_| format!("{flag}: {v:?} is not a number"))
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--connect" => o.connect.push(value()?),
            "--node-id" => o.node_id = Some(value()?),
            "--handshake-timeout-ms" => o.handshake_timeout_ms = Some(ms(flag, value()?)?),
            "--overflow" => o.overflow = Some(value()?),
            "--duplicates" => o.duplicates = Some(value()?),
            "--resume" => o.resume = true,
            "--session-expiry-ms" => o.session_expiry_ms = Some(ms(flag, value()?)?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    o.listen = listen.ok_or(format!("--listen is required\n{USAGE}"))?;
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|o| o.config().map(|cfg| (cfg, o.connect))) {
        Ok((cfg, connect)) => gateway::run(cfg, &connect),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
