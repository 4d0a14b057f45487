//! RxWSClient: reconnects, buffering, retries, states, graceful completion.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rxplus::ws::{
    ConnectionEvent, ConnectionEventKind, ConnectionState, RetryPolicy, RxWSClient, RxWSServer,
    TaggedData, Text, WsConfig,
};
use rxplus::{Error, FnObserver, Notification, OverflowStrategy};
use support::*;

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
}

/// A free port: bind a server, note its port, drop it.
fn free_port() -> u16 {
    let s = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    s.local_addr().port()
}

#[test]
fn client_buffering_disabled_drops_and_counts_while_disconnected() {
    let port = free_port();
    let client =
        RxWSClient::<String>::with_config(local(port, "/"), Text, quiet().retry(fast_retry()))
            .unwrap();
    for i in 0..25 {
        client.on_next(format!("lost {i}"));
    }
    assert_eq!(client.stats().dropped, 25);
    let (_server, got) = collecting_server(port);
    assert!(client.wait_connected(WAIT));
    for i in 0..10 {
        client.on_next(format!("kept {i}"));
    }
    assert!(wait_until(WAIT, || got.lock().len() == 10));
    std::thread::sleep(Duration::from_millis(100));
    let got = got.lock().clone();
    assert_eq!(
        got,
        (0..10).map(|i| format!("kept {i}")).collect::<Vec<_>>()
    );
    assert_eq!(client.stats().dropped, 25);
}

#[test]
fn client_buffering_enabled_delivers_in_order_after_connect() {
    let port = free_port();
    let cfg = quiet().retry(fast_retry()).buffer_while_disconnected(true);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    for i in 0..500 {
        client.on_next(format!("{i}"));
    }
    assert_eq!(client.queued(), 500);
    let (_server, got) = collecting_server(port);
    assert!(client.wait_connected(WAIT));
    for i in 500..600 {
        client.on_next(format!("{i}"));
    }
    assert!(wait_until(WAIT, || got.lock().len() == 600));
    assert_eq!(
        *got.lock(),
        (0..600).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(client.stats().dropped, 0);
}

#[test]
fn disconnect_buffer_is_bounded_with_its_policy() {
    let port = free_port();
    let cfg = quiet()
        .retry(fast_retry())
        .buffer_while_disconnected(true)
        .outbound(10, OverflowStrategy::DropOld);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    for i in 0..25 {
        client.on_next(i.to_string());
    }
    assert_eq!(client.queued(), 10);
    assert_eq!(client.stats().dropped, 15);
    let (_server, got) = collecting_server(port);
    assert!(wait_until(WAIT, || got.lock().len() == 10));
    assert_eq!(
        *got.lock(),
        (15..25).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn client_reconnect_after_server_restart() {
    let (server, got1) = collecting_server(0);
    let port = server.local_addr().port();
    let client =
        RxWSClient::<String>::with_config(local(port, "/"), Text, quiet().retry(fast_retry()))
            .unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let s = states.clone();
    client.subscribe_state(move |st| s.lock().push(st)).detach();
    assert!(client.wait_connected(WAIT));
    client.on_next("before".into());
    assert!(wait_until(WAIT, || got1.lock().len() == 1));
    server.dispose();
    assert!(wait_until(WAIT, || !client.is_connected()));
    let (_server2, got2) = collecting_server(port);
    assert!(client.wait_connected(WAIT));
    client.on_next("after".into());
    assert!(wait_until(WAIT, || got2.lock().len() == 1));
    assert_eq!(got2.lock()[0], "after");
    let mut st = states.lock().clone();
    if st[0] == ConnectionState::Disconnected {
        st.remove(0); // replayed initial state
    }
    assert_eq!(
        st[..3],
        [
            ConnectionState::Connecting,
            ConnectionState::Connected,
            ConnectionState::Disconnected
        ][..]
    );
    assert!(st.contains(&ConnectionState::Reconnecting));
    assert_eq!(st.last(), Some(&ConnectionState::Connected));
    assert!(client.stats().connections_opened >= 2);
}

#[test]
fn queued_items_survive_a_broken_connection_with_buffering() {
    // The server stops reading, so the client's queue fills; then the connection breaks.
    // Everything still queued at that moment must reach the next server, in order.
    let gate = crossbeam_channel::bounded::<()>(0);
    let server = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let gate_rx = gate.1.clone();
    server
        .subscribe(move |_m: TaggedData<String>| {
            let _ = gate_rx.recv(); // blocks until the test drops the sender
        })
        .detach();
    let cfg = quiet()
        .retry(fast_retry())
        .buffer_while_disconnected(true)
        .outbound(100_000, OverflowStrategy::DropNew)
        .outbound_max_bytes(64 << 20);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    assert!(client.wait_connected(WAIT));
    let n = 30_000;
    let pad = "x".repeat(1000);
    for i in 0..n {
        client.on_next(format!("{i:06}{pad}"));
    }
    assert!(
        wait_until(WAIT, || client.queued() > 1000),
        "queue should back up"
    );
    let disposer = std::thread::spawn(move || server.dispose());
    drop(gate);
    disposer.join().unwrap();
    assert!(wait_until(WAIT, || !client.is_connected()));
    // Accepted but not written when the connection broke.
    let queued_at_break = client.queued();
    assert!(queued_at_break > 0);
    let (_server2, got) = collecting_server(port);
    assert!(wait_until(WAIT, || got
        .lock()
        .last()
        .is_some_and(|m| m.starts_with(&format!("{:06}", n - 1)))));
    let got = got.lock().clone();
    let ids: Vec<usize> = got.iter().map(|m| m[..6].parse().unwrap()).collect();
    assert!(
        ids.len() >= queued_at_break,
        "{} < {queued_at_break}",
        ids.len()
    );
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or reorder after reconnect");
    }
    assert_eq!(client.stats().dropped, 0);
}

#[test]
fn max_retries_exhausted_is_an_error_and_a_terminal_state() {
    let port = free_port();
    let cfg = quiet().retry(fast_retry().max_retries(Some(2)));
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    let err = Arc::new(Mutex::new(None::<Error>));
    let e = err.clone();
    client
        .subscribe(FnObserver::new(|_: String| {}).on_error(move |x| *e.lock() = Some(x)))
        .detach();
    let states = client.state_stream();
    assert!(wait_until(WAIT, || err.lock().is_some()));
    assert!(matches!(
        err.lock().clone(),
        Some(Error::RetriesExhausted { attempts: 3, .. })
    ));
    let mut last = None;
    while let Ok(Notification::Next(s)) = states.recv_timeout(Duration::from_millis(200)) {
        last = Some(s);
    }
    assert_eq!(last, Some(ConnectionState::Closed));
    assert_eq!(client.stats().connect_attempts, 3);
    // A late subscriber gets the terminal error at once.
    let late = Arc::new(AtomicUsize::new(0));
    let l = late.clone();
    let _sub = client.subscribe(FnObserver::new(|_: String| {}).on_error(move |_| {
        l.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(late.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_url_fails_at_once_and_is_never_retried() {
    let t = Instant::now();
    for url in [
        "http://127.0.0.1:1/",
        "ws//nope",
        "wss://127.0.0.1/",
        "ws://127.0.0.1:70000/",
    ] {
        let err = RxWSClient::<String>::connect(url, Text).err().unwrap();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
    }
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn connection_state_replays_current_state_to_new_subscribers() {
    let server = echo_server::<String>(Text);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    let first = Arc::new(Mutex::new(Vec::new()));
    let f = first.clone();
    let _s = client.subscribe_state(move |s| f.lock().push(s));
    assert_eq!(*first.lock(), vec![ConnectionState::Connected]);
}

#[test]
fn client_on_completed_stops_loop_and_threads() {
    // BUG-3: completion must end the reconnect loop, not just close the socket.
    let server = echo_server::<String>(Text);
    let client = RxWSClient::<String>::with_config(
        local(server.local_addr().port(), "/"),
        Text,
        quiet().retry(fast_retry()),
    )
    .unwrap();
    assert!(client.wait_connected(WAIT));
    assert!(
        wait_until(WAIT, || client.thread_count() == 2),
        "connection thread + writer"
    );
    client.on_completed();
    assert_eq!(client.thread_count(), 0);
    let attempts = client.stats().connect_attempts;
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        client.stats().connect_attempts,
        attempts,
        "no reconnect after completion"
    );
    assert!(wait_until(WAIT, || server.connection_count() == 0));
    // Items after completion are refused with a clear error.
    assert!(matches!(
        client.send("late".into()),
        Err(Error::AlreadyClosed { .. })
    ));
}

#[test]
fn graceful_completion_flushes_everything_queued() {
    let (server, got) = collecting_server(0);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    for i in 0..5_000 {
        client.on_next(i.to_string());
    }
    client.on_completed();
    assert!(wait_until(WAIT, || got.lock().len() == 5_000));
    assert_eq!(
        *got.lock(),
        (0..5_000).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn server_close_reaches_client_as_normal_close_and_reconnect() {
    let server = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let client =
        RxWSClient::<String>::with_config(local(port, "/"), Text, quiet().retry(fast_retry()))
            .unwrap();
    assert!(client.wait_connected(WAIT));
    server.on_completed();
    assert!(wait_until(WAIT, || !client.is_connected()));
    assert_eq!(client.stats().connections_closed, 1);
    let _ = WsConfig::default();
}

#[test]
fn the_outbound_byte_budget_holds_back_a_fast_producer_of_large_messages() {
    // The server stops reading; 8 KiB messages with a 64 KiB budget: the producer blocks
    // (the default `block` policy) long before the 1,024-message count bound, and never more
    // than the budget waits in the queue. Once the server reads again, all arrive in order.
    let (server, got, gate) = gated_server();
    let port = server.local_addr().port();
    let cfg = quiet().outbound_max_bytes(64 << 10);
    let client = RxWSClient::<String>::with_config(local(port, "/"), Text, cfg).unwrap();
    assert!(client.wait_connected(WAIT));
    let n = 2_000;
    let pad = "x".repeat(8 << 10);
    let sent = Arc::new(AtomicUsize::new(0));
    let (c, s) = (client.handle(), sent.clone());
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            c.on_next(format!("{i:06}{pad}"));
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The socket buffers fill, then the budget: the producer stops short of n.
    let mut stalled_at = 0;
    assert!(wait_until(WAIT, || {
        let now = sent.load(Ordering::SeqCst);
        let same = now == stalled_at && now > 0;
        stalled_at = now;
        std::thread::sleep(Duration::from_millis(50));
        same
    }));
    let queued = client.queued();
    drop(gate); // before asserting: a failure must not leave the server's reader stuck
    assert!(stalled_at < n, "the producer was never held back");
    // At most 8 messages (64 KiB) plus one admitted into an empty queue.
    assert!(queued <= 9, "{queued} queued");
    producer.join().unwrap();
    assert!(
        wait_until(WAIT, || got.lock().len() == n),
        "{}",
        got.lock().len()
    );
    let ids: Vec<usize> = got.lock().iter().map(|m| m[..6].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "gap or reorder");
    assert_eq!(client.stats().dropped, 0);
}

#[test]
fn with_setup_subscribers_see_what_the_server_sends_right_after_the_handshake() {
    // The server greets each connection the moment it opens. Subscribed in `with_setup`, the
    // client gets every greeting: 30 fresh clients, 30 greetings, none lost to the race
    // between connecting and subscribing.
    let server = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    let h = server.handle();
    server
        .subscribe_events(move |e: ConnectionEvent| {
            if e.kind == ConnectionEventKind::Opened {
                h.on_next(TaggedData::to_conn(
                    e.path.as_str(),
                    e.id,
                    "hello".to_string(),
                ));
            }
        })
        .detach();
    let port = server.local_addr().port();
    let greeted = Arc::new(AtomicUsize::new(0));
    for _ in 0..30 {
        let g = greeted.clone();
        let before = greeted.load(Ordering::SeqCst);
        let client = RxWSClient::<String>::with_setup(local(port, "/"), Text, quiet(), move |c| {
            c.subscribe(move |m: String| {
                assert_eq!(m, "hello");
                g.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
        })
        .unwrap();
        assert!(wait_until(WAIT, || greeted.load(Ordering::SeqCst) == before + 1));
        client.dispose();
    }
    assert_eq!(greeted.load(Ordering::SeqCst), 30);
}
