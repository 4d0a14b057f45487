//! An echo server: every message goes back to exactly the connection it came from, text as
//! text and binary as binary. Used by the conformance suite (Autobahn fuzzingclient).
//!
//! Run: `cargo run --release --example echo_server -- [ADDR]` (default `127.0.0.1:9001`; port 0
//! picks a free port). Prints `listening on <addr>` once ready, then runs until killed.

use std::io::Write;

use rxplus::ws::{Raw, RxWSServer, TaggedData, WSConfig, WSMessage};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    if let Err(e) = run(&addr) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &str) -> Result<(), rxplus::Error> {
    // The default heartbeat stays on: a peer that vanishes is closed, not held forever.
    let cfg = WSConfig::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20);
    let server = RxWSServer::<WSMessage>::bind_with_config(addr, Raw, cfg)?;
    let echo = server.handle();
    server.subscribe(move |m: TaggedData<WSMessage>| echo.on_next(m.reply(m.data.clone())));
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.local_addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
