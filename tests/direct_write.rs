//! The direct-write path: a sender writes on its own thread when the connection is idle and
//! queues otherwise. Order, counts and non-blocking behaviour must hold whichever path each
//! message takes, so these tests mix paced sends (direct) with bursts (queued).

mod support;

use std::time::Duration;

use rxplus::ws::{RxWSClient, StatsSnapshot, Text};
use rxplus::{Notification, OverflowStrategy};
use support::*;

/// Rounds of one paced message followed by a burst.
fn paced_and_burst(rounds: usize, burst: usize, mut send: impl FnMut(usize)) -> usize {
    let mut i = 0;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_micros(300));
        send(i);
        i += 1;
        for _ in 0..burst {
            send(i);
            i += 1;
        }
    }
    i
}

fn assert_in_sequence(got: &[String], n: usize) {
    assert_eq!(got.len(), n);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &i.to_string(), "gap or reorder at {i}");
    }
}

/// A client sends with `send` (which returns how many it sent) to a collecting server; every
/// message arrives once, in order, none dropped. Returns the client's stats.
fn client_sends_in_order(send: impl FnOnce(&RxWSClient<String>) -> usize) -> StatsSnapshot {
    let (server, got) = collecting_server(0);
    let port = server.local_addr().port();
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    assert!(client.wait_connected(WAIT));
    let n = send(&client);
    assert!(
        wait_until(WAIT, || got.lock().len() >= n),
        "{}",
        got.lock().len()
    );
    assert_in_sequence(&got.lock(), n);
    let stats = client.stats();
    assert_eq!(stats.messages_out, n as u64);
    assert_eq!(stats.dropped, 0);
    client.dispose();
    server.dispose();
    stats
}

#[test]
fn client_sends_keep_order_across_direct_and_queued_writes() {
    for _ in 0..3 {
        let stats =
            client_sends_in_order(|c| paced_and_burst(40, 300, |i| c.on_next(i.to_string())));
        // The paced messages find the connection idle and take the direct path.
        assert!(stats.direct_writes > 0, "no send took the direct path");
    }
}

/// One long burst: the sender frames into the buffer, sends full batches itself and takes
/// back what the writer thread queued meanwhile; every message arrives once, in order.
#[test]
fn a_long_burst_keeps_order_whichever_thread_writes() {
    for _ in 0..3 {
        client_sends_in_order(|c| {
            let n = 100_000;
            for i in 0..n {
                c.on_next(i.to_string());
            }
            n
        });
    }
}

#[test]
fn server_replies_from_the_reader_thread_keep_order() {
    // Every reply is sent from the server's reader thread (a subscriber); the client paces
    // and bursts, so replies take both paths.
    let server = echo_server::<String>(Text);
    let port = server.local_addr().port();
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let rx = client.stream();
    assert!(client.wait_connected(WAIT));
    let n = paced_and_burst(30, 200, |i| client.on_next(i.to_string()));
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => got.push(m),
            other => panic!("after {}: {other:?}", got.len()),
        }
    }
    assert_in_sequence(&got, n);
    // The counter is updated after the bytes leave, so it may trail the last echo briefly.
    assert!(wait_until(WAIT, || server.stats().messages_out >= n as u64));
    let stats = server.stats();
    assert_eq!(stats.messages_out, n as u64);
    assert!(stats.direct_writes > 0, "no reply took the direct path");
    assert!(
        client.stats().direct_writes > 0,
        "no send took the direct path"
    );
}

#[test]
fn a_stalled_peer_never_blocks_a_drop_new_sender() {
    // The server stops reading, so the socket fills: direct writes must not block the caller,
    // the rest is queued (64) or dropped and counted. Once the server reads again, every
    // accepted message arrives, in order.
    let (server, got, gate) = gated_server();
    let port = server.local_addr().port();
    let cfg = quiet().outbound(64, OverflowStrategy::DropNew);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    assert!(client.wait_connected(WAIT));
    let n = 3_000;
    let pad = "x".repeat(8192);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let c = client.handle();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            c.on_next(format!("{i:06}{pad}"));
            // Paced, so each send finds the writer idle and writes directly until the
            // socket is full.
            std::thread::sleep(Duration::from_micros(100));
        }
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(WAIT).is_err() {
        drop(gate); // lets the server's reader, and so teardown, go on
        panic!("sender blocked on a stalled peer");
    }
    sender.join().unwrap();
    let dropped = client.stats().dropped;
    assert!(dropped > 0, "the socket and queue should have filled");
    assert!(
        client.stats().direct_writes > 0,
        "paced sends should write directly"
    );
    drop(gate);
    let expected = n - dropped as usize;
    assert!(
        wait_until(WAIT, || got.lock().len() >= expected),
        "{} < {expected}",
        got.lock().len()
    );
    let got = got.lock();
    assert_eq!(got.len(), expected);
    let ids: Vec<usize> = got.iter().map(|m| m[..6].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "reordered");
}

#[test]
fn disconnect_policy_accepts_sends_while_the_writer_is_idle() {
    // `disconnect` holds nothing: a paced sender always finds the connection idle and writes
    // directly, so nothing is dropped and the connection stays up.
    let (server, got) = collecting_server(0);
    let port = server.local_addr().port();
    let cfg = quiet().outbound(0, OverflowStrategy::Disconnect);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    assert!(client.wait_connected(WAIT));
    let n = 50;
    for i in 0..n {
        client.on_next(i.to_string());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(wait_until(WAIT, || got.lock().len() >= n));
    assert_in_sequence(&got.lock(), n);
    assert_eq!(client.stats().dropped, 0);
    assert_eq!(client.stats().connections_opened, 1);
    // With nothing to queue into, every message took the direct path.
    assert_eq!(client.stats().direct_writes, n as u64);
}
