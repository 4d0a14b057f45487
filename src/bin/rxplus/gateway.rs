//! The gateway node of `rxplus gateway` and the `gateway_node` example, speaking
//! `DefaultFrame`: events and frames on stdout, commands on stdin.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use rxplus::gateway::{
    DefaultFrame, DuplicatePolicy, GatewayConfig, GatewayEvent, GatewayNode, NodeId,
};
use rxplus::ws::ConnId;
use rxplus::OverflowStrategy;

/// The node's options, as given on the command line.
#[derive(Debug, Default, Clone)]
pub struct GatewayOpts {
    pub listen: String,
    pub connect: Vec<String>,
    pub node_id: Option<String>,
    pub handshake_timeout_ms: Option<u64>,
    /// `STRATEGY:SIZE`.
    pub overflow: Option<String>,
    /// `allow` or `keep-one`.
    pub duplicates: Option<String>,
    pub resume: bool,
    pub session_expiry_ms: Option<u64>,
}

impl GatewayOpts {
    /// The node's config, validated; the reason when an option is wrong.
    pub fn config(&self) -> Result<GatewayConfig, String> {
        let mut cfg = GatewayConfig::default();
        if let Some(v) = &self.node_id {
            cfg = cfg.node_id(v.parse::<NodeId>().map_err(|e| e.to_string())?);
        }
        if let Some(ms) = self.handshake_timeout_ms {
            cfg = cfg.handshake_timeout(Duration::from_millis(ms));
        }
        if let Some(v) = &self.overflow {
            let (s, n) = v
                .split_once(':')
                .ok_or(format!("--overflow: {v:?}: expected STRATEGY:SIZE"))?;
            let strategy: OverflowStrategy = s.parse().map_err(|e: rxplus::Error| e.to_string())?;
            let size: usize = n
                .parse()
                .map_err(|_| format!("--overflow: {n:?} is not a size"))?;
            cfg = cfg.overflow(strategy, size);
        }
        if let Some(v) = &self.duplicates {
            cfg = cfg.duplicates(v.parse::<DuplicatePolicy>().map_err(|e| e.to_string())?);
        }
        cfg.resume.enabled = self.resume;
        if let Some(ms) = self.session_expiry_ms {
            cfg.resume.session_expiry = Duration::from_millis(ms);
        }
        let cfg = cfg.listen(&self.listen).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }
}

/// One line on stdout, flushed (lines from event callbacks and the command loop never mix).
fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
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

/// Starts the node, dials `connect`, and runs the stdin commands until `quit` or end of
/// input (a graceful stop, exit 0). A node that cannot start exits 1.
pub fn run(cfg: GatewayConfig, connect: &[String]) -> ExitCode {
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
        dial(&node, url);
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
