//! Shutdown and delivery under concurrency: terminal notifications on `stream()` receivers,
//! dispose bounded whatever is buffered, `wait_connected` in constant memory, and unsubscribe
//! waiting for a callback in flight.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use rxplus::ws::{RxWSClient, RxWSClientGroup, RxWSServer, TaggedData, Text};
use rxplus::Notification;
use support::*;

/// The documented bound of `dispose()` ("about 2 s, even with unresponsive peers"), with room
/// for a loaded 2-core machine. The common case is milliseconds; the benchmark measures it.
const DISPOSE_BOUND: Duration = Duration::from_secs(3);

/// Reads a disposed component's receiver to its end: every notification, then disconnection.
/// Returns the items and the terminal notifications, in order; fails on an item after a
/// terminal notification or a receiver that never ends.
fn read_to_end<T>(rx: &Receiver<Notification<T>>, what: &str) -> (usize, usize) {
    let (mut items, mut terminals) = (0, 0);
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(_)) => {
                assert_eq!(
                    terminals, 0,
                    "{what}: an item after the terminal notification"
                );
                items += 1;
            }
            Ok(Notification::Completed) | Ok(Notification::Error(_)) => terminals += 1,
            Err(RecvTimeoutError::Disconnected) => return (items, terminals),
            Err(RecvTimeoutError::Timeout) => panic!("{what}: the receiver never ended"),
        }
    }
}

#[test]
fn every_stream_receiver_gets_exactly_one_terminal_notification_on_dispose() {
    let server = echo_server::<String>(Text);
    let port = server.local_addr().port();
    let mut echoed = 0;
    for i in 0..1_000 {
        let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        let rx = client.stream();
        if i % 4 == 0 {
            // Items in flight while it is disposed.
            assert!(client.wait_connected(WAIT));
            for n in 0..5 {
                client.on_next(n.to_string());
            }
        }
        client.dispose();
        let (items, terminals) = read_to_end(&rx, &format!("client, round {i}"));
        assert_eq!(terminals, 1, "client, round {i}");
        echoed += items;
    }
    // Some echoes made it before the disposes (not all: dispose cuts delivery short).
    assert!(echoed > 0);

    for i in 0..1_000 {
        let s = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
        let rx = s.stream();
        if i % 10 == 0 {
            let c =
                RxWSClient::<String>::with_config(local(s.local_addr().port(), "/"), Text, quiet())
                    .unwrap();
            assert!(c.wait_connected(WAIT));
            for n in 0..5 {
                c.on_next(n.to_string());
            }
            s.dispose();
            c.dispose();
        } else {
            s.dispose();
        }
        let (_, terminals) = read_to_end(&rx, &format!("server, round {i}"));
        assert_eq!(terminals, 1, "server, round {i}");
    }

    for i in 0..1_000 {
        let g = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        let rx = g.stream();
        if i % 10 == 0 {
            assert!(g.wait_connected("/g", WAIT).unwrap());
            g.on_next(TaggedData::new("/g", "x".to_string()));
        }
        g.dispose();
        let (_, terminals) = read_to_end(&rx, &format!("group, round {i}"));
        assert_eq!(terminals, 1, "group, round {i}");
    }
}

/// Four clients flood a server; returns them once every message is on its way.
fn flood(port: u16, clients: usize, each: usize) -> Vec<RxWSClient<String>> {
    let cs: Vec<_> = (0..clients)
        .map(|_| RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap())
        .collect();
    for c in &cs {
        assert!(c.wait_connected(WAIT));
    }
    std::thread::scope(|s| {
        for c in &cs {
            s.spawn(move || {
                for n in 0..each {
                    c.send(format!("{n}")).unwrap();
                }
            });
        }
    });
    cs
}

#[test]
fn dispose_from_a_callback_delivers_nothing_more_and_is_bounded() {
    for round in 0..3 {
        let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
        let port = server.local_addr().port();
        let h = server.handle();
        let disposing = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let took = Arc::new(Mutex::new(None::<Duration>));
        // The first callback holds every delivery back until the flood is in flight.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (d, a, c, t) = (
            disposing.clone(),
            after.clone(),
            calls.clone(),
            took.clone(),
        );
        server.subscribe(move |_m: TaggedData<String>| {
            if d.load(Ordering::SeqCst) {
                a.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                let _ = release_rx.recv();
            }
            if n == 50 {
                d.store(true, Ordering::SeqCst);
                let start = Instant::now();
                h.dispose();
                *t.lock() = Some(start.elapsed());
            }
        });
        // Another thread disposes too, as soon as the callback has begun: it waits for the
        // same shutdown and must return within the same bound.
        let (d2, h2) = (disposing.clone(), server.handle());
        let other = std::thread::spawn(move || {
            assert!(wait_until(WAIT, || d2.load(Ordering::SeqCst)));
            let start = Instant::now();
            h2.dispose();
            start.elapsed()
        });
        let _clients = flood(port, 4, 2_000);
        drop(release_tx);
        assert!(wait_until(WAIT, || took.lock().is_some()), "round {round}");
        let took = took.lock().unwrap();
        let other = other.join().unwrap();
        assert_eq!(
            after.load(Ordering::SeqCst),
            0,
            "round {round}: callbacks ran after dispose began"
        );
        assert!(took < DISPOSE_BOUND, "round {round}: dispose took {took:?}");
        assert!(
            other < DISPOSE_BOUND,
            "round {round}: the concurrent dispose took {other:?}"
        );
        // Every thread is joined but the one that disposed from its callback: it cannot join
        // itself, and leaves the registry as its callback returns (a moment after `took` is
        // set: 1 failure in CI with an exact check here).
        assert!(
            wait_until(WAIT, || server.thread_count() == 0),
            "round {round}: {} threads left",
            server.thread_count()
        );
    }
}

#[test]
fn dispose_with_a_slow_subscriber_and_thousands_in_flight_is_bounded() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let disposing = Arc::new(AtomicBool::new(false));
    let started_after = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (d, a, c) = (disposing.clone(), started_after.clone(), calls.clone());
    server.subscribe(move |_m: TaggedData<String>| {
        if d.load(Ordering::SeqCst) {
            a.fetch_add(1, Ordering::SeqCst);
        }
        c.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
    });
    let _clients = flood(port, 3, 1_000);
    assert!(wait_until(WAIT, || calls.load(Ordering::SeqCst) >= 20));
    // A second thread drops its handle's target concurrently: dispose and Drop share the bound.
    let h = server.handle();
    let (d2, concurrent) = (
        disposing.clone(),
        std::thread::spawn(move || {
            let start = Instant::now();
            h.dispose();
            start.elapsed()
        }),
    );
    d2.store(true, Ordering::SeqCst);
    let start = Instant::now();
    drop(server);
    let took = start.elapsed();
    let calls_at_return = calls.load(Ordering::SeqCst);
    let concurrent = concurrent.join().unwrap();
    // One delivery may have passed its last check just as dispose began; none after that.
    assert!(
        started_after.load(Ordering::SeqCst) <= 1,
        "{} callbacks started after dispose began",
        started_after.load(Ordering::SeqCst)
    );
    assert!(calls_at_return < 3_000, "everything was delivered anyway");
    assert!(took < DISPOSE_BOUND, "drop took {took:?}");
    assert!(
        concurrent < DISPOSE_BOUND,
        "concurrent dispose took {concurrent:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), calls_at_return);
}

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn wait_connected_holds_nothing_between_calls() {
    let server = echo_server::<String>(Text);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    for _ in 0..1_000 {
        assert!(client.wait_connected(WAIT));
    }
    let before = rss();
    for _ in 0..100_000 {
        assert!(client.wait_connected(WAIT));
    }
    let grown = rss().saturating_sub(before);
    // A subscription per call (a 1,024-slot channel each) grew this by gigabytes.
    assert!(
        grown < 8 << 20,
        "RSS grew by {grown} bytes over 100,000 calls"
    );
    // State changes still reach everyone, and the dispose is prompt.
    let states = client.state_stream();
    let start = Instant::now();
    client.dispose();
    assert!(start.elapsed() < DISPOSE_BOUND, "{:?}", start.elapsed());
    let mut last = None;
    while let Ok(Notification::Next(s)) = states.recv_timeout(WAIT) {
        last = Some(s);
    }
    assert_eq!(last, Some(rxplus::ws::ConnectionState::Closed));
}

#[test]
fn no_callback_runs_once_unsubscribe_returns() {
    // The server streams to the client without pause; the client has a slow subscriber and a
    // counting one behind it. When `unsubscribe` returns, the slow callback is not running, and
    // the items the counting subscriber sees afterwards never reach the dropped one.
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let stop = Arc::new(AtomicBool::new(false));
    let (st, h) = (stop.clone(), server.handle());
    let pump = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            h.on_next(TaggedData::new("/", "tick".to_string()));
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    for round in 0..20 {
        let client = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        let inside = Arc::new(AtomicBool::new(false));
        let slow_calls = Arc::new(AtomicUsize::new(0));
        let (i, n) = (inside.clone(), slow_calls.clone());
        let sub = client.subscribe(move |_m: String| {
            i.store(true, Ordering::SeqCst);
            n.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(300));
            i.store(false, Ordering::SeqCst);
        });
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        client.subscribe(move |_m: String| {
            s.fetch_add(1, Ordering::SeqCst);
        });
        assert!(wait_until(WAIT, || slow_calls.load(Ordering::SeqCst) >= 5));
        sub.unsubscribe();
        assert!(
            !inside.load(Ordering::SeqCst),
            "round {round}: a callback was still running"
        );
        let calls = slow_calls.load(Ordering::SeqCst);
        let seen_at_drop = seen.load(Ordering::SeqCst);
        assert!(wait_until(WAIT, || seen.load(Ordering::SeqCst) >= seen_at_drop + 20));
        assert_eq!(
            slow_calls.load(Ordering::SeqCst),
            calls,
            "round {round}: a callback started after unsubscribe returned"
        );
        client.dispose();
    }
    stop.store(true, Ordering::SeqCst);
    pump.join().unwrap();
}
