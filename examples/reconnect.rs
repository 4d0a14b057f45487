//! A buffering client survives a server restart: every state change is printed; items sent
//! while the server is down are buffered (`buffer_while_disconnected`) and arrive, in order,
//! at the new server bound on the same port, before anything sent later.
//!
//! Run: `cargo run --release --example reconnect`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use rxplus::ws::{
    ConnectionState, RetryPolicy, RxWSClient, RxWSServer, Text, WSConfig, WSConnectionConfig,
};

/// A server that prints what it receives and forwards it to the returned receiver.
fn start_server(
    addr: &str,
    label: &'static str,
) -> Result<(RxWSServer<String>, Receiver<String>), rxplus::Error> {
    let server = RxWSServer::<String>::bind(addr, Text)?;
    let (tx, rx) = unbounded();
    server.subscribe(move |m| {
        println!("{label} <- {}", m.data);
        let _ = tx.send(m.data);
    });
    println!("{label} listening on {}", server.local_addr());
    Ok((server, rx))
}

/// Waits (bounded) until the client reports `want`.
fn wait_state(
    states: &Receiver<ConnectionState>,
    want: ConnectionState,
    timeout: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + timeout;
    loop {
        if states.recv_deadline(deadline)? == want {
            return Ok(());
        }
    }
}

/// Receives as many items as `expected` holds (each wait bounded) and checks them, in order.
fn expect_items(
    inbox: &Receiver<String>,
    expected: &[String],
    timeout: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    for want in expected {
        let got = inbox.recv_timeout(timeout)?;
        if &got != want {
            return Err(format!("expected {want:?}, got {got:?}").into());
        }
    }
    Ok(())
}

/// The client's current connection id, as the server sees it.
fn id(client: &RxWSClient<String>) -> String {
    client
        .conn_id()
        .map_or_else(|| "-".into(), |id| id.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(5);

    let (first, first_inbox) = start_server("127.0.0.1:0", "server #1")?;
    let port = first.local_addr().port();

    // Buffer while disconnected; retry quickly (50 ms, doubling, at most 200 ms apart).
    let cfg = WSConfig::default().buffer_while_disconnected(true).retry(
        RetryPolicy::default()
            .initial_delay(Duration::from_millis(50))
            .max_delay(Duration::from_millis(200)),
    );
    // Subscribed in `with_setup`, before the client starts: every state is seen, the first
    // included. Each failed attempt while the server is down is a non-fatal error: counted.
    let (state_tx, states) = unbounded();
    let failed = Arc::new(AtomicUsize::new(0));
    let count = failed.clone();
    let conn = WSConnectionConfig::new("127.0.0.1", port, "/feed")?;
    let client = RxWSClient::<String>::with_setup(conn, Text, cfg, |c| {
        c.subscribe_state(move |s| {
            println!("client state: {s}");
            let _ = state_tx.send(s);
        });
        c.subscribe_errors(move |e| {
            if matches!(e, rxplus::Error::ConnectFailed { .. }) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    })?;

    wait_state(&states, ConnectionState::Connected, timeout)?;
    println!("client connected, conn_id {}", id(&client));
    let before = vec!["before-1".to_string()];
    for item in &before {
        client.send(item.clone())?;
    }
    expect_items(&first_inbox, &before, timeout)?;

    // Stop the server (close handshake, listener closed): the client starts retrying.
    println!("stopping server #1");
    first.on_completed();
    wait_state(&states, ConnectionState::Reconnecting, timeout)?;

    // Sent while down: accepted and buffered.
    let while_down: Vec<String> = (1..=3).map(|i| format!("while-down-{i}")).collect();
    for item in &while_down {
        client.send(item.clone())?;
    }
    println!("client buffered {} items while down", client.queued());
    std::thread::sleep(Duration::from_millis(300)); // a few failed attempts meanwhile

    // A new server on the same port: the client reconnects and flushes its buffer first.
    let (second, second_inbox) = start_server(&format!("127.0.0.1:{port}"), "server #2")?;
    wait_state(&states, ConnectionState::Connected, timeout)?;
    println!("client reconnected, conn_id {}", id(&client));
    let after = vec!["after-1".to_string()];
    for item in &after {
        client.send(item.clone())?;
    }
    expect_items(&second_inbox, &while_down, timeout)?;
    expect_items(&second_inbox, &after, timeout)?;
    println!(
        "server #2 got the {} buffered items in order, then the newer one ({} failed connect attempts while down)",
        while_down.len(),
        failed.load(Ordering::Relaxed)
    );

    client.on_completed();
    second.on_completed();
    println!("done");
    Ok(())
}
