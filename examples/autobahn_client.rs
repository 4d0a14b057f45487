//! An Autobahn-protocol echo client on [`RxWSClient`], for conformance testing of the client
//! role against a fuzzing server (Autobahn|Testsuite `fuzzingserver`, or the `kosoku` runner).
//!
//! Protocol: read the case count from `/getCaseCount`; for each case connect to
//! `/runCase?case=N&agent=AGENT` and echo every message back with its kind (text stays text,
//! binary stays binary) until the server closes; finally connect to
//! `/updateReports?agent=AGENT` so the server writes its reports.
//!
//! Each case runs on exactly one connection: the client is built with `max_retries(Some(0))`
//! and a retry delay far longer than a case, and it is disposed as soon as its first connection
//! ends, so it never reconnects into the same case.
//!
//! Run: `cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 [AGENT]`
//! (default agent `rxplus`). Prints one line with the number of cases run; exits 1 if a
//! connection could not be made.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rxplus::ws::{
    ConnectionState, Raw, RetryPolicy, RxWSClient, WSConfig, WSConnectionConfig, WSMessage,
};
use rxplus::Notification;

/// Bound on one connection (a case, the count, the report update). The slowest cases take a
/// few seconds.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(base) = args.next() else {
        eprintln!("usage: autobahn_client ws://HOST:PORT [AGENT]");
        std::process::exit(2);
    };
    let agent = args.next().unwrap_or_else(|| "rxplus".into());
    match run(base.trim_end_matches('/'), &agent) {
        Ok(n) => println!("autobahn_client: ran {n} cases as agent {agent}"),
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            std::process::exit(1);
        }
    }
}

fn config() -> WSConfig {
    WSConfig::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20)
        .no_heartbeat()
        // Never reconnect: a failed first attempt ends the client (max_retries 0), and after a
        // drop the reconnect would wait far longer than we take to dispose.
        .retry(
            RetryPolicy::default()
                .initial_delay(Duration::from_secs(600))
                .max_delay(Duration::from_secs(600))
                .jitter(0.0)
                .max_retries(Some(0)),
        )
}

/// What one connection did.
struct Session {
    /// The first data message received.
    first: Option<WSMessage>,
    /// The connection was established.
    connected: bool,
    /// The connection ended by itself (rather than by our timeout).
    ended: bool,
}

/// Connects to `url`, echoes (if `echo`) until the server ends the connection, then disposes the
/// client so it cannot reconnect.
fn session(url: &str, echo: bool) -> Result<Session, String> {
    let conn = WSConnectionConfig::from_url(url).map_err(|e| e.to_string())?;
    let first: Arc<Mutex<Option<WSMessage>>> = Arc::new(Mutex::new(None));
    let f = first.clone();
    let mut states = None;
    // Subscribed before the client connects: the fuzzing server sends right after the
    // handshake, and a message that finds no subscriber is gone. The callback runs on the
    // connection's reader thread; replies leave in order, before the answer to the server's
    // close frame.
    let client = RxWSClient::<WSMessage>::with_setup(conn, Raw, config(), |c| {
        let h = c.handle();
        c.subscribe(move |m: WSMessage| {
            if let Ok(mut slot) = f.lock() {
                if slot.is_none() {
                    *slot = Some(m.clone());
                }
            }
            if echo {
                h.on_next(m);
            }
        });
        states = Some(c.state_stream());
    })
    .map_err(|e| format!("{url}: {e}"))?;
    let Some(states) = states else {
        return Err(format!("{url}: no state stream"));
    };
    let deadline = Instant::now() + SESSION_TIMEOUT;
    let mut ended = false;
    loop {
        // `connections_closed` is counted before the state leaves Connected, so any state
        // notification after the end sees it.
        let stats = client.stats();
        if stats.connections_closed >= 1 {
            ended = true;
            break;
        }
        match states.recv_deadline(deadline) {
            Ok(Notification::Next(ConnectionState::Closed)) | Ok(Notification::Completed) => {
                ended = true;
                break;
            }
            Ok(Notification::Error(_)) => {
                ended = true;
                break;
            }
            Ok(Notification::Next(_)) => {}
            Err(_) => break,
        }
    }
    let connected = client.stats().connections_opened >= 1;
    client.dispose();
    let first = first.lock().ok().and_then(|mut s| s.take());
    Ok(Session {
        first,
        connected,
        ended,
    })
}

fn run(base: &str, agent: &str) -> Result<u32, String> {
    let count = session(&format!("{base}/getCaseCount"), false)?;
    let n: u32 = match &count.first {
        Some(WSMessage::Text(s)) => s
            .trim()
            .parse()
            .map_err(|e| format!("case count {s:?}: {e}"))?,
        Some(WSMessage::Binary(b)) => return Err(format!("case count came as binary: {b:?}")),
        None if !count.connected => return Err(format!("cannot connect to {base}")),
        None => return Err("no case count received".into()),
    };
    let mut problems = Vec::new();
    for case in 1..=n {
        let s = session(&format!("{base}/runCase?case={case}&agent={agent}"), true)?;
        if !s.connected {
            problems.push(format!("case {case}: never connected"));
        } else if !s.ended {
            problems.push(format!("case {case}: still open after {SESSION_TIMEOUT:?}"));
        }
    }
    let upd = session(&format!("{base}/updateReports?agent={agent}"), false)?;
    if !upd.connected {
        problems.push("updateReports: never connected".into());
    }
    if problems.is_empty() {
        Ok(n)
    } else {
        Err(format!("ran {n} cases; {}", problems.join("; ")))
    }
}
