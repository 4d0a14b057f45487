//! A line-based WebSocket client: each stdin line is sent as one text message, each received
//! message is printed as one stdout line. Connection states (`[Connected]`, ...) and failed
//! connection attempts (`[error] ...`) go to stderr. On stdin EOF it completes gracefully
//! (everything queued is sent) and exits 0.
//!
//! Run: `cargo run --release --example wscat -- [--buffer] [-H 'Name: value']... [--protocol
//! P]... [--ca ROOT.pem] URL`, where `URL` is `ws://HOST:PORT/PATH[?QUERY]` or
//! `wss://HOST:PORT/PATH[?QUERY]` (TLS; needs the `tls` feature, on by default). Flags and
//! `URL` may come in any order.
//!
//! * `--buffer`: lines typed while disconnected are queued and sent on (re)connect, instead of
//!   waiting up to 10 s for the first connection.
//! * `-H 'Name: value'` (or `--header`): send this request header with every handshake (e.g.
//!   `-H 'Authorization: Bearer s3cret'`). Repeatable.
//! * `--protocol P`: offer subprotocol `P` (`Sec-WebSocket-Protocol`), in the order given.
//!   Repeatable. The one the server chose is printed on stderr as `[protocol P]` after
//!   `[connected]`.
//! * `--ca ROOT.pem`: also trust the CA certificate(s) in this PEM file for `wss://`, on top of
//!   Mozilla's root certificates (`webpki-roots`); for a server whose certificate a private CA
//!   signed. Repeatable.
//!
//! When the server closes the connection with a close frame, wscat prints `[closed CODE
//! REASON]` on stderr (`[closed CODE]` for an empty reason) and exits: 0 for code 1000, 3 for
//! any other code (1001 when the server shuts down, an application's 4xxx ...). A connection
//! lost without a close frame is retried as before (`[reconnecting]`).
//!
//! A server certificate the client refuses (unknown issuer, expired, wrong name), or a
//! handshake the server refuses with a 4xx status other than 408 and 429 (`401` for a missing
//! token, `400`, `404` ...), ends the client: wscat prints `wscat: <error>` (naming the status)
//! and exits 1. A bad argument (an unknown flag, a flag without its value, a header without
//! `:`) prints a usage line and exits 2.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rxplus::ws::{CloseInfo, ConnectionState, RxWSClient, Text, WSConfig, WSConnectionConfig};
use rxplus::FnObserver;

const USAGE: &str = "usage: wscat [--buffer] [-H 'Name: value']... [--protocol P]... \
                     [--ca ROOT.pem] ws[s]://HOST:PORT/PATH";

/// The parsed command line.
#[derive(Default)]
struct Args {
    buffer: bool,
    cas: Vec<String>,
    headers: Vec<(String, String)>,
    protocols: Vec<String>,
}

fn main() {
    let mut opts = Args::default();
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--buffer" => opts.buffer = true,
            "--ca" => match args.next() {
                Some(path) => opts.cas.push(path),
                None => usage("--ca needs a PEM file argument"),
            },
            "-H" | "--header" => match args.next().as_deref().map(|h| h.split_once(':')) {
                Some(Some((name, value))) if !name.trim().is_empty() => opts
                    .headers
                    .push((name.trim().to_owned(), value.trim().to_owned())),
                _ => usage(&format!("{a} needs a 'Name: value' argument")),
            },
            "--protocol" => match args.next() {
                Some(p) if !p.starts_with('-') => opts.protocols.push(p),
                _ => usage("--protocol needs a protocol argument"),
            },
            flag if flag.starts_with('-') => usage(&format!("unknown flag {flag}")),
            _ if url.is_some() => usage(&format!("unexpected argument {a}")),
            _ => url = Some(a),
        }
    }
    let Some(url) = url else {
        usage("no URL");
    };
    if let Err(e) = run(&url, &opts) {
        eprintln!("wscat: {e}");
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("wscat: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn run(url: &str, args: &Args) -> Result<(), rxplus::Error> {
    let conn = WSConnectionConfig::from_url(url)?;
    let buffer = args.buffer;
    let mut cfg = WSConfig::default()
        .buffer_while_disconnected(buffer)
        .max_message_size(64 << 20);
    for (name, value) in &args.headers {
        cfg = cfg.header(name.as_str(), value.as_str());
    }
    for p in &args.protocols {
        cfg = cfg.subprotocol(p.as_str());
    }
    let cfg = trust(cfg, &args.cas)?;
    let client = Arc::new(RxWSClient::<String>::with_config(conn, Text, cfg)?);
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
    let weak = Arc::downgrade(&client);
    let connected = AtomicBool::new(false);
    client.subscribe_state(move |s| {
        eprintln!("[{s}]");
        if s == ConnectionState::Connected {
            connected.store(true, Ordering::Release);
            if let Some(p) = Weak::upgrade(&weak).and_then(|c| c.protocol()) {
                eprintln!("[protocol {p}]");
            }
        } else if connected.swap(false, Ordering::AcqRel) {
            // Leaving Connected: `last_close` already says how the connection ended.
            server_closed(Weak::upgrade(&weak).and_then(|c| c.last_close()));
        }
    });
    client.subscribe_errors(|e| eprintln!("[error] {e}"));
    // Without buffering, lines typed before the first connect would be dropped: wait for it.
    if !buffer && !client.wait_connected(Duration::from_secs(10)) {
        wait_if_ended(&client);
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
    wait_if_ended(&client);
    client.on_completed();
    Ok(())
}

/// The client ended by itself (a refused handshake or certificate, retries exhausted): its
/// error handler prints the error and exits 1. Wait for that instead of going on (or exiting 0
/// at EOF first).
fn wait_if_ended(client: &RxWSClient<String>) {
    if client.connection_state() == ConnectionState::Closed {
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("wscat: the client ended");
        std::process::exit(1);
    }
}

/// The server closed the connection with a close frame: print `[closed CODE REASON]` and exit
/// (0 for 1000, 3 for any other code). Anything else (our own close, a lost connection) goes on.
fn server_closed(close: Option<CloseInfo>) {
    let Some(CloseInfo::Closed {
        code,
        reason,
        by_peer: true,
    }) = close
    else {
        return;
    };
    if reason.is_empty() {
        eprintln!("[closed {code}]");
    } else {
        eprintln!("[closed {code} {reason}]");
    }
    let _ = std::io::stdout().flush();
    std::process::exit(if code == 1000 { 0 } else { 3 });
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
