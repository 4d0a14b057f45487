//! An echo server: every message goes back to exactly the connection it came from, text as
//! text and binary as binary. Used by the conformance suite (Autobahn fuzzingclient), the
//! interop tests and the command-line contracts (`tests/tls_cli.rs`, `tests/control_cli.rs`).
//!
//! Run: `cargo run --release --example echo_server -- [--token TOKEN] [--protocols P1,P2]
//! [--tls-cert CHAIN.pem --tls-key KEY.pem] [ADDR]` (default `127.0.0.1:9001`; port 0 picks a
//! free port). Flags and `ADDR` may come in any order.
//!
//! * `--token TOKEN`: a handshake must carry `Authorization: Bearer TOKEN` or the query
//!   parameter `token=TOKEN` (compared as written, not percent-decoded); any other is refused
//!   with HTTP `401`.
//! * `--protocols P1,P2`: the subprotocols served. The first one the client offers (in the
//!   client's order) that is in this list is chosen; a handshake that offers none, or none of
//!   these, is refused with HTTP `400`. The token is checked first.
//! * `--tls-cert CHAIN.pem --tls-key KEY.pem`: serve `wss://` only (TLS, rustls), presenting
//!   the PEM certificate chain (leaf first) and its PEM private key. Both or neither: one
//!   without the other is an error. Needs the `tls` feature (on by default).
//!
//! A text message `close:CODE:REASON` (or `close:CODE`, reason empty) is not echoed: the
//! server closes that connection with that close code and reason (`RxWSServer::close`), after
//! what is already queued for it; the other connections are untouched. A `CODE` that is not a
//! number or may not be sent (outside 1000-1003, 1007-1014, 3000-4999, or a reason over 123
//! bytes) closes nothing: the server answers with one text message `error: ...` saying why,
//! and the connection stays open.
//!
//! Prints `listening on <addr>` on stdout once ready, then runs until killed. Any error (an
//! unknown flag, a flag without its value, `--tls-cert` without `--tls-key` or the reverse, an
//! empty `--protocols` list, a certificate or key that cannot be read or used, an address that
//! cannot be bound) prints `echo_server: <error>` on stderr (with the usage line for a bad
//! argument) and exits 1.

use std::io::Write;

use rxplus::ws::{
    AcceptHook, HandshakeRequest, Raw, RxWSServer, ServerHandle, TaggedData, Verdict, WSConfig,
    WSMessage,
};

const USAGE: &str = "usage: echo_server [--token TOKEN] [--protocols P1,P2] \
                     [--tls-cert CHAIN.pem --tls-key KEY.pem] [ADDR]";

/// The parsed command line.
struct Args {
    addr: String,
    /// `(chain, key)` PEM file paths: serve wss://.
    tls: Option<(String, String)>,
    /// The bearer token every handshake must carry.
    token: Option<String>,
    /// The subprotocols served (non-empty when given).
    protocols: Option<Vec<String>>,
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo_server: {msg}");
            eprintln!("{USAGE}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut addr = None;
    let mut cert = None;
    let mut key = None;
    let mut token = None;
    let mut protocols = None;
    while let Some(a) = argv.next() {
        let mut value = |flag: &str, what: &str| {
            argv.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{flag} needs {what} argument"))
        };
        match a.as_str() {
            "--tls-cert" => cert = Some(value("--tls-cert", "a file")?),
            "--tls-key" => key = Some(value("--tls-key", "a file")?),
            "--token" => token = Some(value("--token", "a token")?),
            "--protocols" => {
                let list: Vec<String> = value("--protocols", "a P1,P2 list")?
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                if list.is_empty() {
                    return Err("--protocols needs at least one protocol".into());
                }
                protocols = Some(list);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            _ if addr.is_some() => return Err(format!("unexpected argument {a}")),
            _ => addr = Some(a),
        }
    }
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key as well".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert as well".into()),
    };
    Ok(Args {
        addr: addr.unwrap_or_else(|| "127.0.0.1:9001".into()),
        tls,
        token,
        protocols,
    })
}

/// The accept hook of `--token` and `--protocols`: 401 without the token, 400 without a
/// served subprotocol, else accept with the client's first served choice.
fn decide(req: &HandshakeRequest, token: Option<&str>, served: Option<&[String]>) -> Verdict {
    if let Some(token) = token {
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !bearer && req.query_param("token") != Some(token) {
            return Verdict::refuse(401, "missing or wrong token");
        }
    }
    let Some(served) = served else {
        return Verdict::accept();
    };
    match req.protocols().iter().find(|p| served.contains(p)) {
        Some(p) => Verdict::accept().protocol(p.as_str()),
        None if req.protocols().is_empty() => Verdict::refuse(
            400,
            format!("a subprotocol is required: one of {}", served.join(", ")),
        ),
        None => Verdict::refuse(
            400,
            format!(
                "no offered subprotocol is served ({} offered; served: {})",
                req.protocols().join(", "),
                served.join(", ")
            ),
        ),
    }
}

/// Echoes `m` to its connection, or closes the connection for a `close:CODE:REASON` text.
fn on_message(server: &ServerHandle<WSMessage>, m: &TaggedData<WSMessage>) {
    let command = match &m.data {
        WSMessage::Text(t) => t.strip_prefix("close:"),
        WSMessage::Binary(_) => None,
    };
    let (Some(command), Some(conn)) = (command, m.conn) else {
        server.on_next(m.reply(m.data.clone()));
        return;
    };
    let (code, reason) = command.split_once(':').unwrap_or((command, ""));
    let closed = match code.parse::<u16>() {
        Ok(code) => server.close(conn, code, reason).map_err(|e| e.to_string()),
        Err(_) => Err(format!("close code {code:?} is not a number")),
    };
    if let Err(e) = closed {
        server.on_next(m.reply(WSMessage::Text(format!("error: {e}"))));
    }
}

fn run(args: &Args) -> Result<(), rxplus::Error> {
    // The default heartbeat stays on: a peer that vanishes is closed, not held forever.
    let cfg = WSConfig::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20);
    let cfg = with_tls(cfg, args.tls.as_ref())?;
    let cfg = if args.token.is_some() || args.protocols.is_some() {
        let (token, served) = (args.token.clone(), args.protocols.clone());
        cfg.accept_hook(AcceptHook::new(move |req| {
            decide(req, token.as_deref(), served.as_deref())
        }))
    } else {
        cfg
    };
    let server = RxWSServer::<WSMessage>::bind_with_config(args.addr.as_str(), Raw, cfg)?;
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<WSMessage>| on_message(&echo, &m));
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.local_addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

#[cfg(feature = "tls")]
fn with_tls(cfg: WSConfig, tls: Option<&(String, String)>) -> Result<WSConfig, rxplus::Error> {
    Ok(match tls {
        Some((chain, key)) => cfg.tls_server(rxplus::tls::ServerTls::from_pem_files(chain, key)?),
        None => cfg,
    })
}

#[cfg(not(feature = "tls"))]
fn with_tls(cfg: WSConfig, tls: Option<&(String, String)>) -> Result<WSConfig, rxplus::Error> {
    match tls {
        Some(_) => {
            eprintln!("echo_server: --tls-cert/--tls-key need rxplus's `tls` feature");
            std::process::exit(1);
        }
        None => Ok(cfg),
    }
}
