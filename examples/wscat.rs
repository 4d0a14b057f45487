//! A line-based WebSocket client: each stdin line is sent as one text message, each received
//! message is printed as one stdout line. Connection states go to stderr. On stdin EOF it
//! completes gracefully (everything queued is sent) and exits 0.
//!
//! Run: `cargo run --release --example wscat -- [--buffer] ws://127.0.0.1:9001/path`

use std::io::{BufRead, Write};
use std::time::Duration;

use rxplus::ws::{RxWSClient, Text, WSConfig, WSConnectionConfig};

fn main() {
    let mut buffer = false;
    let mut url = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--buffer" => buffer = true,
            _ => url = Some(a),
        }
    }
    let Some(url) = url else {
        eprintln!("usage: wscat [--buffer] ws://HOST:PORT/PATH");
        std::process::exit(2);
    };
    if let Err(e) = run(&url, buffer) {
        eprintln!("wscat: {e}");
        std::process::exit(1);
    }
}

fn run(url: &str, buffer: bool) -> Result<(), rxplus::Error> {
    let conn = WSConnectionConfig::from_url(url)?;
    let cfg = WSConfig::default()
        .buffer_while_disconnected(buffer)
        .max_message_size(64 << 20);
    let client = RxWSClient::<String>::with_config(conn, Text, cfg)?;
    client.subscribe(|line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
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
