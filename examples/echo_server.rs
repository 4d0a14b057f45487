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

// The server is shared with `rxplus serve` (feature `cli`).
#[path = "../src/bin/rxplus/server.rs"]
// Flags this example does not take (`--broadcast`, `--json` ...) leave parts unused.
#[allow(dead_code)]
mod server;

use server::{Mode, ServeOpts};

const USAGE: &str = "usage: echo_server [--token TOKEN] [--protocols P1,P2] \
                     [--tls-cert CHAIN.pem --tls-key KEY.pem] [ADDR]";

fn main() {
    let opts = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo_server: {msg}");
            eprintln!("{USAGE}");
            std::process::exit(1);
        }
    };
    if let Err(e) = server::run("echo_server", &opts) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<ServeOpts, String> {
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
                protocols = Some(server::parse_protocols(&value(
                    "--protocols",
                    "a P1,P2 list",
                )?)?)
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
    Ok(ServeOpts {
        addr: addr.unwrap_or_else(|| "127.0.0.1:9001".into()),
        tls: server::tls_pair(cert, key)?,
        token,
        protocols,
        mode: Mode::Echo,
    })
}
