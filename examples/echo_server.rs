//! An echo server: every message goes back to exactly the connection it came from, text as
//! text and binary as binary. Used by the conformance suite (Autobahn fuzzingclient) and the
//! interop tests.
//!
//! Run: `cargo run --release --example echo_server -- [--tls-cert CHAIN.pem --tls-key KEY.pem]
//! [ADDR]` (default `127.0.0.1:9001`; port 0 picks a free port). Flags and `ADDR` may come in
//! any order.
//!
//! * `--tls-cert CHAIN.pem --tls-key KEY.pem`: serve `wss://` only (TLS, rustls), presenting
//!   the PEM certificate chain (leaf first) and its PEM private key. Both or neither: one
//!   without the other is an error. Needs the `tls` feature (on by default).
//!
//! Prints `listening on <addr>` on stdout once ready, then runs until killed. Any error (an
//! unknown flag, `--tls-cert` without `--tls-key` or the reverse, a certificate or key that
//! cannot be read or used, an address that cannot be bound) prints `echo_server: <error>` on
//! stderr (with the usage line for a bad argument) and exits 1.

use std::io::Write;

use rxplus::ws::{Raw, RxWSServer, TaggedData, WSConfig, WSMessage};

const USAGE: &str = "usage: echo_server [--tls-cert CHAIN.pem --tls-key KEY.pem] [ADDR]";

/// The parsed command line.
struct Args {
    addr: String,
    /// `(chain, key)` PEM file paths: serve wss://.
    tls: Option<(String, String)>,
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
    while let Some(a) = argv.next() {
        let mut value = |flag: &str| {
            argv.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{flag} needs a file argument"))
        };
        match a.as_str() {
            "--tls-cert" => cert = Some(value("--tls-cert")?),
            "--tls-key" => key = Some(value("--tls-key")?),
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
    })
}

fn run(args: &Args) -> Result<(), rxplus::Error> {
    // The default heartbeat stays on: a peer that vanishes is closed, not held forever.
    let cfg = WSConfig::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20);
    let cfg = with_tls(cfg, args.tls.as_ref())?;
    let server = RxWSServer::<WSMessage>::bind_with_config(args.addr.as_str(), Raw, cfg)?;
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<WSMessage>| echo.on_next(m.reply(m.data.clone())));
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
