//! A line-based WebSocket client: each stdin line is sent as one text message, each received
//! message is printed as one stdout line (a binary message that is not UTF-8 as `[binary N
//! bytes] HEX`). `rxplus connect` (feature `cli`) is the same client with more flags. Connection states (`[Connected]`, ...) and failed
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

// The client is shared with `rxplus connect` (feature `cli`).
#[path = "../src/bin/rxplus/client.rs"]
// Flags this example does not take (`--broadcast`, `--json` ...) leave parts unused.
#[allow(dead_code)]
mod client;

use client::ConnectOpts;

const USAGE: &str = "usage: wscat [--buffer] [-H 'Name: value']... [--protocol P]... \
                     [--ca ROOT.pem] ws[s]://HOST:PORT/PATH";

fn main() {
    let mut opts = ConnectOpts::default();
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--buffer" => opts.buffer = true,
            "--ca" => match args.next() {
                Some(path) => opts.cas.push(path),
                None => usage("--ca needs a PEM file argument"),
            },
            "-H" | "--header" => match args.next().as_deref().and_then(client::parse_header) {
                Some(h) => opts.headers.push(h),
                None => usage(&format!("{a} needs a 'Name: value' argument")),
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
    opts.url = url;
    if let Err(e) = client::run("wscat", &opts) {
        eprintln!("wscat: {e}");
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("wscat: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2);
}
