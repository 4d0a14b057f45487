//! Measures echo round trips through a WebSocket echo server with an `RxWSClient`.
//!
//! Run: `cargo run --release --example echo_rtt -- ws://127.0.0.1:9001/ [N]` against
//! `cargo run --release --example echo_server`. Prints p50/p99/p99.9 in microseconds.
//! (Figures, not assertions: the benchmark crate compares them with raw tungstenite.)

use std::time::{Duration, Instant};

use rxplus::ws::{RxWSClient, Text, WSConfig, WSConnectionConfig};
use rxplus::Notification;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001/".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    if let Err(e) = run(&url, n) {
        eprintln!("echo_rtt: {e}");
        std::process::exit(1);
    }
}

fn run(url: &str, n: usize) -> Result<(), rxplus::Error> {
    let client = RxWSClient::<String>::with_config(
        WSConnectionConfig::from_url(url)?,
        Text,
        WSConfig::default().no_heartbeat(),
    )?;
    let rx = client.stream();
    if !client.wait_connected(Duration::from_secs(5)) {
        eprintln!("echo_rtt: not connected");
        std::process::exit(1);
    }
    let msg = "x".repeat(32);
    let mut samples = Vec::with_capacity(n);
    for i in 0..(n + 1_000) {
        let t = Instant::now();
        client.on_next(msg.clone());
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Notification::Next(_)) => {}
            other => {
                eprintln!("echo_rtt: {other:?}");
                std::process::exit(1);
            }
        }
        if i >= 1_000 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let q = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    println!("echo round trip, 32 B text, {n} samples after 1000 warm-up: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us", q(0.5), q(0.99), q(0.999));
    client.on_completed();
    Ok(())
}
