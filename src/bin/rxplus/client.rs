//! The line client of `rxplus connect` and the `wscat` example: each stdin line is one message
//! out, each message in is one stdout line; connection states on stderr.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rxplus::ws::{
    CloseInfo, ConnectionState, Raw, RetryPolicy, RxWSClient, WSConfig, WSConnectionConfig,
    WSMessage,
};
use rxplus::FnObserver;

/// What the client does; every field has the `wscat` behaviour as its default.
#[derive(Debug, Default, Clone)]
pub struct ConnectOpts {
    /// `ws://` or `wss://` URL.
    pub url: String,
    /// Queue lines typed while disconnected instead of waiting up to 10 s for the first
    /// connection.
    pub buffer: bool,
    /// Extra PEM roots for `wss://`.
    pub cas: Vec<String>,
    /// Request headers, every attempt.
    pub headers: Vec<(String, String)>,
    /// Offered subprotocols, in order.
    pub protocols: Vec<String>,
    /// Send lines as binary messages.
    pub binary: bool,
    /// Lines out must be JSON; messages in are pretty-printed JSON.
    pub json: bool,
    /// Give up after this many failed attempts in a row (`None`: retry forever).
    pub retries: Option<u32>,
}

/// Parses a `Name: value` header argument.
pub fn parse_header(h: &str) -> Option<(String, String)> {
    let (name, value) = h.split_once(':')?;
    (!name.trim().is_empty()).then(|| (name.trim().to_owned(), value.trim().to_owned()))
}

/// Runs the client until stdin ends (exit 0 after a graceful close), the server closes the
/// connection (exit 0 for 1000, 3 otherwise) or the client gives up (exit 1). `prog` prefixes
/// the error lines.
pub fn run(prog: &'static str, opts: &ConnectOpts) -> Result<(), rxplus::Error> {
    let conn = WSConnectionConfig::from_url(&opts.url)?;
    let mut cfg = WSConfig::default()
        .buffer_while_disconnected(opts.buffer)
        .max_message_size(64 << 20);
    for (name, value) in &opts.headers {
        cfg = cfg.header(name.as_str(), value.as_str());
    }
    for p in &opts.protocols {
        cfg = cfg.subprotocol(p.as_str());
    }
    if opts.retries.is_some() {
        cfg = cfg.retry(RetryPolicy::default().max_retries(opts.retries));
    }
    let cfg = trust(prog, cfg, &opts.cas)?;
    let json = opts.json;
    let client = Arc::new(RxWSClient::<WSMessage>::with_config(conn, Raw, cfg)?);
    client.subscribe_observer(
        FnObserver::new(move |m: WSMessage| {
            let line = show(&m, json);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        })
        // The client ended by itself (a refused certificate, retries exhausted): nothing more
        // can be sent or received.
        .on_error(move |e| {
            eprintln!("{prog}: {e}");
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
    if !opts.buffer && !client.wait_connected(Duration::from_secs(10)) {
        wait_if_ended(prog, &client);
        eprintln!("{prog}: not connected after 10 s; lines are dropped until it connects");
    }
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(l) => {
                if json {
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(&l) {
                        eprintln!("{prog}: not sent, not JSON: {e}");
                        continue;
                    }
                }
                client.on_next(if opts.binary {
                    WSMessage::Binary(l.into_bytes())
                } else {
                    WSMessage::Text(l)
                });
            }
            Err(e) => {
                eprintln!("{prog}: stdin: {e}");
                break;
            }
        }
    }
    wait_if_ended(prog, &client);
    client.on_completed();
    Ok(())
}

/// One received message as printed: text as it is; binary as text when it is UTF-8, else as
/// `[binary N bytes] HEX`; with `json`, pretty-printed when it parses.
fn show(m: &WSMessage, json: bool) -> String {
    let text = match m {
        WSMessage::Text(t) => t.as_str(),
        WSMessage::Binary(b) => match std::str::from_utf8(b) {
            Ok(t) => t,
            Err(_) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                return format!("[binary {} bytes] {hex}", b.len());
            }
        },
    };
    if json {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            if let Ok(pretty) = serde_json::to_string_pretty(&v) {
                return pretty;
            }
        }
    }
    text.to_owned()
}

/// The client ended by itself (a refused handshake or certificate, retries exhausted): its
/// error handler prints the error and exits 1. Wait for that instead of going on (or exiting 0
/// at EOF first).
fn wait_if_ended(prog: &str, client: &RxWSClient<WSMessage>) {
    if client.connection_state() == ConnectionState::Closed {
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("{prog}: the client ended");
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
fn trust(_prog: &str, cfg: WSConfig, cas: &[String]) -> Result<WSConfig, rxplus::Error> {
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
fn trust(prog: &str, cfg: WSConfig, cas: &[String]) -> Result<WSConfig, rxplus::Error> {
    if !cas.is_empty() {
        eprintln!("{prog}: --ca needs rxplus's `tls` feature");
        std::process::exit(1);
    }
    Ok(cfg)
}
