//! A line-based WebSocket client: each stdin line is sent as one text message, each received
//! message is printed as one stdout line. Connection states (`[Connected]`, ...) and failed
//! connection attempts (`[error] ...`) go to stderr. On stdin EOF it completes gracefully
//! (everything queued is sent) and exits 0.
//!
//! Run: `cargo run --release --example wscat -- [--buffer] [--ca ROOT.pem] URL`, where `URL` is
//! `ws://HOST:PORT/PATH` or `wss://HOST:PORT/PATH` (TLS; needs the `tls` feature, on by
//! default). Flags and `URL` may come in any order.
//!
//! * `--buffer`: lines typed while disconnected are queued and sent on (re)connect, instead of
//!   waiting up to 10 s for the first connection.
//! * `--ca ROOT.pem`: also trust the CA certificate(s) in this PEM file for `wss://`, on top of
//!   Mozilla's root certificates (`webpki-roots`); for a server whose certificate a private CA
//!   signed. Repeatable.
//!
//! A server certificate the client refuses (unknown issuer, expired, wrong name) ends the
//! client: wscat prints `wscat: <error>` and exits 1. A bad argument prints a usage line and
//! exits 2.

use std::io::{BufRead, Write};
use std::time::Duration;

use rxplus::ws::{RxWSClient, Text, WSConfig, WSConnectionConfig};
use rxplus::FnObserver;

const USAGE: &str = "usage: wscat [--buffer] [--ca ROOT.pem] ws[s]://HOST:PORT/PATH";

fn main() {
    let mut buffer = false;
    let mut cas = Vec::new();
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--buffer" => buffer = true,
            "--ca" => match args.next() {
                Some(path) => cas.push(path),
                None => usage("--ca needs a PEM file argument"),
            },
            flag if flag.starts_with("--") => usage(&format!("unknown flag {flag}")),
            _ if url.is_some() => usage(&format!("unexpected argument {a}")),
            _ => url = Some(a),
        }
    }
    let Some(url) = url else {
        usage("no URL");
    };
    if let Err(e) = run(&url, buffer, &cas) {
        eprintln!("wscat: {e}");
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("wscat: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn run(url: &str, buffer: bool, cas: &[String]) -> Result<(), rxplus::Error> {
    let conn = WSConnectionConfig::from_url(url)?;
    let cfg = WSConfig::default()
        .buffer_while_disconnected(buffer)
        .max_message_size(64 << 20);
    let cfg = trust(cfg, cas)?;
    let client = RxWSClient::<String>::with_config(conn, Text, cfg)?;
    client.subscribe_observer(
        FnObserver::new(|line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        })
        // The client ended by itself (a refused certificate, retries exhausted): nothing more
        // can be sent or received.
        .on_error(|e| {
            eprintln!("wscat: {e}");
            std::process::exit(1);
        }),
    );
    client.subscribe_state(|s| eprintln!("[{s}]"));
    client.subscribe_errors(|e| eprintln!("[error] {e}"));
    // Without buffering, lines typed before the first connect would be dropped: wait for it.
    if !buffer && !client.wait_connected(Duration::from_secs(10)) {
        eprintln!("wscat: not connected after 10 s; lines are dropped until it connects");
    }
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(l) => client.on_next(l),
            Err(e) => {
                eprintln!("wscat: stdin: {e}");
                break;
            }
        }
    }
    client.on_completed();
    Ok(())
}

/// The roots a `wss://` URL is checked against: Mozilla's, plus each `--ca` file.
#[cfg(feature = "tls")]
fn trust(cfg: WSConfig, cas: &[String]) -> Result<WSConfig, rxplus::Error> {
    if cas.is_empty() {
        return Ok(cfg);
    }
    let mut tls = rxplus::tls::ClientTls::webpki_roots()?;
    for ca in cas {
        tls = tls.add_root_pem_file(ca)?;
    }
    Ok(cfg.tls_client(tls))
}

#[cfg(not(feature = "tls"))]
fn trust(cfg: WSConfig, cas: &[String]) -> Result<WSConfig, rxplus::Error> {
    if !cas.is_empty() {
        eprintln!("wscat: --ca needs rxplus's `tls` feature");
        std::process::exit(1);
    }
    Ok(cfg)
}
