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

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use rxplus::gateway::{
    DefaultFrame, DuplicatePolicy, GatewayConfig, GatewayEvent, GatewayNode, NodeId,
};
use rxplus::ws::ConnId;
use rxplus::OverflowStrategy;

/// One line on stdout, flushed (lines from event callbacks and the command loop never mix).
fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

const USAGE: &str = "usage: gateway_node --listen HOST:PORT [--connect URL]... [--node-id 32HEX] \
[--handshake-timeout-ms N] [--overflow STRATEGY:SIZE] [--duplicates allow|keep-one] [--resume] \
[--session-expiry-ms N]";

fn parse(args: &[String]) -> Result<(GatewayConfig, Vec<String>), String> {
    let mut cfg = GatewayConfig::default();
    let mut listen = None;
    let mut connect = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--connect" => connect.push(value()?),
            "--node-id" => {
                let v = value()?;
                cfg = cfg.node_id(v.parse::<NodeId>().map_err(|e| e.to_string())?);
            }
            "--handshake-timeout-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--handshake-timeout-ms: {v:?} is not a number"))?;
                cfg = cfg.handshake_timeout(Duration::from_millis(ms));
            }
            "--overflow" => {
                let v = value()?;
                let (s, n) = v
                    .split_once(':')
                    .ok_or(format!("--overflow: {v:?}: expected STRATEGY:SIZE"))?;
                let strategy: OverflowStrategy =
                    s.parse().map_err(|e: rxplus::Error| e.to_string())?;
                let size: usize = n
                    .parse()
                    .map_err(|_| format!("--overflow: {n:?} is not a size"))?;
                cfg = cfg.overflow(strategy, size);
            }
            "--duplicates" => {
                let v = value()?;
                cfg = cfg.duplicates(v.parse::<DuplicatePolicy>().map_err(|e| e.to_string())?);
            }
            "--resume" => cfg.resume.enabled = true,
            "--session-expiry-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--session-expiry-ms: {v:?} is not a number"))?;
                cfg.resume.session_expiry = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen = listen.ok_or(format!("--listen is required\n{USAGE}"))?;
    let cfg = cfg.listen(&listen).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok((cfg, connect))
}

/// Dials `url` and prints `dialing CONNID`. Stdout stays locked from before the dial until the
/// line is out, so the link's `connected` line (printed from its own thread) always follows it.
fn dial(node: &GatewayNode<DefaultFrame>, url: &str) {
    let mut o = std::io::stdout().lock();
    match node.connect_to(url) {
        Ok(id) => {
            let _ = writeln!(o, "dialing {id}");
            let _ = o.flush();
        }
        Err(e) => eprintln!("error: connect {url}: {e}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cfg, connect) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let node = match GatewayNode::<DefaultFrame>::new(cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    node.subscribe(|f| {
        let text = f
            .frame
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        out(&format!("frame {} {text}", f.conn_id));
    });
    node.subscribe_events(|e| match e {
        GatewayEvent::Connected {
            conn_id,
            remote_node_id,
            direction,
        } => out(&format!("connected {conn_id} {remote_node_id} {direction}")),
        GatewayEvent::Disconnected { conn_id, cause, .. } => {
            out(&format!("disconnected {conn_id} {cause}"))
        }
        GatewayEvent::Interrupted { conn_id } => out(&format!("interrupted {conn_id}")),
        GatewayEvent::Resumed { conn_id, replayed } => {
            out(&format!("resumed {conn_id} {replayed}"))
        }
        GatewayEvent::ResumeFailed {
            conn_id,
            cause,
            lost,
        } => out(&format!("resume-failed {conn_id} {cause} {lost}")),
        _ => {}
    });
    if let Err(e) = node.start() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let addr = node.local_addr().map(|a| a.to_string()).unwrap_or_default();
    out(&format!("listening on {addr} node {}", node.node_id()));
    for url in connect {
        dial(&node, &url);
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        match cmd {
            "" => {}
            "send" => {
                let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match id.parse::<ConnId>() {
                    Ok(id) => {
                        if let Err(e) = node.send_to(id, DefaultFrame::data(text.to_owned())) {
                            eprintln!("error: send: {e}");
                        }
                    }
                    Err(e) => eprintln!("error: send: {e}"),
                }
            }
            "all" => {
                let n = node.broadcast(DefaultFrame::data(rest.to_owned()));
                out(&format!("sent {n}"));
            }
            "peers" => {
                let peers = node.get_connected_peers();
                let mut line = format!("peers {}", peers.len());
                for p in peers {
                    line.push(' ');
                    line.push_str(&p.to_string());
                }
                out(&line);
            }
            "connect" => dial(&node, rest.trim()),
            "quit" => break,
            other => {
                eprintln!("error: unknown command {other:?} (send, all, peers, connect, quit)")
            }
        }
    }
    node.stop();
    ExitCode::SUCCESS
}
