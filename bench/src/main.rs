//! # rxplus-bench: rxplus next to raw tungstenite and tokio-tungstenite
//!
//! Measures, on loopback, the same workloads for rxplus (`RxWSServer`, `RxWSClient`), for a
//! raw tungstenite implementation (blocking, thread per connection: the simplest correct
//! design) and for tokio-tungstenite (multi-thread runtime, 2 workers):
//!
//! * w1: 64 B text messages client → server, msg/s (raw flushing per message and at the end;
//!   rxplus also with its OpenTelemetry setup installed, to show what telemetry costs);
//! * w2: 64 KiB binary messages client → server, MB/s;
//! * w3: echo round trip of 32 B, p50/p99/p99.9 µs (rxplus reactive and blocking callers);
//! * w4: broadcast to 100 clients on a path, deliveries/s and server peak RSS;
//! * w5: 1,000 idle connections, server RSS, threads, and `dispose` time;
//! * w6: 10,000 connections, idle then one broadcast to all: threads, descriptors and RSS per
//!   connection, broadcast time and `dispose` time;
//! * g1–g3: the gateway next to the WebSocket layer alone: one-way 64 B frames/s, echo round
//!   trip, and a connect storm of 200 dialers (time, threads, RSS);
//! * s1: scale-out, 2 instances × 50 clients through Redis next to 1 instance × 100 clients:
//!   fan-out deliveries/s and the delivery latency p50 (needs `redis-server`);
//! * w2-tls, w3-tls: w2 and w3 over `wss://` (TLS 1.3, rustls `ring`), next to raw tungstenite
//!   over `rustls::StreamOwned`.
//!
//! Run it with one command (about 3 minutes on 2 cores; `--quick` about 15 s):
//!
//! ```text
//! cargo run --release -p rxplus-bench -- [--quick] [--json FILE] [--svg FILE] [--markdown FILE]
//! ```
//!
//! Server and client run in separate processes (this binary, started again with the hidden
//! subcommands `server` and `client`), so the server's memory and threads can be read from
//! `/proc`. Every run starts fresh processes; the implementations alternate run by run. The
//! table gives median, min and max over the runs, and the ratio to raw tungstenite computed
//! per run pair (run i ÷ raw's run i), then its median, min and max.

mod child;
mod orchestrate;
mod otel;
mod peers;
mod procfs;
mod report;
mod workloads;

fn main() {
    // w5's 1,000 connections exceed a default limit of 1024; w6 asks for more where it needs
    // it (`procfs::ensure_nofile`).
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("rxplus-bench: warning: cannot raise RLIMIT_NOFILE: {e}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => child::server_main(&args[1..]),
        Some("client") => child::client_main(&args[1..]),
        _ => orchestrate::Options::parse(&args).and_then(orchestrate::run),
    };
    if let Err(e) = result {
        eprintln!("rxplus-bench: error: {e:#}");
        std::process::exit(1);
    }
}
