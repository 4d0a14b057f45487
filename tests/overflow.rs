//! Overflow policies that disconnect (`disconnect`, `buffer-k`), end to end: a peer that stops
//! reading fills the client's socket and queue; the next item closes the connection, the
//! `Overflow disconnect` WARN record names the policy, and the client reconnects and delivers
//! again. Also: a buffering client's completion waits (bounded) for a first connection.

mod capture;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capture::named;
use log::{Level, LevelFilter};
use rxplus::telemetry::event;
use rxplus::ws::{ConnectionEvent, ConnectionEventKind, RetryPolicy, RxWSClient, Text};
use rxplus::OverflowStrategy;
use support::*;

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
}

fn overflow_disconnects(strategy: OverflowStrategy, capacity: usize, name: &str) {
    let otel = capture::otel(LevelFilter::Info);
    let (server, got, gate) = gated_server();
    let opened = Arc::new(AtomicUsize::new(0));
    let o = opened.clone();
    server.subscribe_events(move |e: ConnectionEvent| {
        if e.kind == ConnectionEventKind::Opened {
            o.fetch_add(1, Ordering::SeqCst);
        }
    });
    let port = server.local_addr().port();
    let cfg = quiet()
        .name(name)
        .retry(fast_retry())
        .outbound(capacity, strategy);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    assert!(client.wait_connected(WAIT));
    // The server's reader blocks on the first message: the socket fills, then the queue, and
    // the policy disconnects. Large messages get there quickly.
    let pad = "x".repeat(64 << 10);
    let mut sent = 0;
    let disconnected = wait_until(WAIT, || {
        if client.send(pad.clone()).is_ok() {
            sent += 1;
        }
        client.stats().connections_closed >= 1
    });
    drop(gate); // before asserting: a failure must not leave the server's reader stuck
    assert!(
        disconnected,
        "{name}: never disconnected after {sent} sends"
    );
    let stats = client.stats();
    assert!(stats.overflow_dropped >= 1, "{name}: {stats:?}");
    let warns: Vec<_> = otel
        .records_of(&[name])
        .into_iter()
        .filter(|r| r.name == event::OVERFLOW_DISCONNECT)
        .collect();
    assert!(
        !warns.is_empty(),
        "{name}: no `{}` record",
        event::OVERFLOW_DISCONNECT
    );
    assert_eq!(warns[0].level, Level::Warn);
    assert_eq!(warns[0].attr("policy"), Some(strategy.name()));
    // It reconnects and delivers again.
    assert!(wait_until(WAIT, || client.is_connected()
        && client.stats().connections_opened >= 2));
    client.send("after".to_string()).unwrap();
    assert!(
        wait_until(WAIT, || got.lock().iter().any(|m| m == "after")),
        "{name}: nothing delivered after reconnecting"
    );
    assert!(opened.load(Ordering::SeqCst) >= 2);
    assert!(named(&otel.records_of(&[name]), event::CONNECTION_OPENED).len() >= 2);
}

#[test]
fn disconnect_policy_closes_warns_and_reconnects() {
    overflow_disconnects(OverflowStrategy::Disconnect, 0, "overflow-disconnect");
}

#[test]
fn buffer_k_policy_closes_warns_and_reconnects() {
    overflow_disconnects(OverflowStrategy::BufferK, 4, "overflow-buffer-k");
}

#[test]
fn a_buffering_clients_completion_waits_for_a_first_connection() {
    // Items queued before any server exists; completion is called while the client is still
    // retrying. It must wait (bounded by the handshake timeout) for the server that comes up,
    // deliver everything, then close.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let cfg = quiet().retry(fast_retry()).buffer_while_disconnected(true);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    for i in 0..100 {
        client.send(i.to_string()).unwrap();
    }
    let (server, got) = std::thread::scope(|s| {
        // The server comes up once the client has failed to connect at least twice, that is
        // while on_completed is (or soon will be) waiting.
        let starter = s.spawn(|| {
            assert!(wait_until(WAIT, || client.stats().connect_attempts >= 2));
            collecting_server(port)
        });
        client.on_completed();
        starter.join().unwrap()
    });
    assert!(
        wait_until(WAIT, || got.lock().len() == 100),
        "{} of 100 delivered",
        got.lock().len()
    );
    assert_eq!(
        *got.lock(),
        (0..100).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(client.stats().dropped, 0);
    server.dispose();
}
