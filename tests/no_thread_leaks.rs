//! Start/dispose cycles of each component: right after `dispose()` (or `on_completed()`)
//! returns, the process's live OS threads are back at their baseline, read once, without
//! polling, so a dispose that does not join its threads fails here. The peers are thread-less
//! (raw tungstenite on the test thread) or one long-lived thread counted in the baseline, so
//! nothing else in the process starts or ends threads meanwhile. One test in this binary.

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rxplus::tungstenite;
use rxplus::ws::{RxWSClient, RxWSClientGroup, RxWSServer, TaggedData, Text};
use support::*;

/// A WebSocket peer on one thread: serves connections one after another, echoing until each
/// ends (it answers close frames, so graceful completion finishes at once).
fn sequential_peer(stop: Arc<AtomicBool>) -> (u16, std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let t = std::thread::spawn(move || {
        for sock in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(sock) = sock else { continue };
            let _ = sock.set_read_timeout(Some(WAIT));
            // A client disposed mid-handshake leaves a dead socket: skip it.
            let Ok(mut ws) = tungstenite::accept(sock) else {
                continue;
            };
            s.fetch_add(1, Ordering::SeqCst);
            while let Ok(m) = ws.read() {
                if m.is_text() && ws.send(m).is_err() {
                    break;
                }
            }
        }
    });
    (port, t, served)
}

/// A WebSocket connection made on the calling thread (no threads of its own).
fn raw_client(port: u16, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let url = format!("ws://127.0.0.1:{port}{path}");
    tungstenite::client::client(url.as_str(), sock).unwrap().0
}

#[test]
fn threads_are_joined_when_dispose_returns() {
    let stop = Arc::new(AtomicBool::new(false));
    let (peer_port, peer, served) = sequential_peer(stop.clone());
    let base = live_threads();

    // Server alone.
    for i in 0..100 {
        let s = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
        s.dispose();
        assert_eq!(
            live_threads(),
            base,
            "server cycle {i}: not joined: {}",
            thread_report()
        );
    }

    // Servers with live connections (raw peers on this thread), disposed or completed.
    // (The raw peers never answer a close frame: completion waits its close timeout.)
    let cfg = quiet().close_timeout(Duration::from_millis(50));
    for i in 0..40 {
        let s = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg.clone()).unwrap();
        let h = s.handle();
        s.subscribe(move |m: TaggedData<String>| h.on_next(m.reply(m.data.clone())));
        let port = s.local_addr().port();
        let mut peers: Vec<_> = (0..3).map(|_| raw_client(port, "/p")).collect();
        for p in &mut peers {
            p.send(tungstenite::Message::text("x")).unwrap();
            assert_eq!(p.read().unwrap(), tungstenite::Message::text("x"));
        }
        // Accept, the timer, and a reader per connection (no writer while nothing waits).
        assert_eq!(live_threads(), base + 5, "server cycle {i}");
        if i % 10 == 1 {
            s.on_completed();
        } else {
            s.dispose();
        }
        assert_eq!(
            live_threads(),
            base,
            "server cycle {i}: not joined: {}",
            thread_report()
        );
    }

    // Clients: connect, exchange, end; half of them gracefully.
    for i in 0..100 {
        let c = RxWSClient::<String>::with_config(local(peer_port, "/"), Text, quiet()).unwrap();
        let rx = c.stream();
        assert!(c.wait_connected(WAIT));
        c.send("x".into()).unwrap();
        assert!(matches!(
            rx.recv_timeout(WAIT),
            Ok(rxplus::Notification::Next(m)) if m == "x"
        ));
        // The connection thread only: the send went out directly, no writer started.
        assert_eq!(
            live_threads(),
            base + 1,
            "client cycle {i}: the connection thread"
        );
        if i % 2 == 0 {
            c.on_completed();
        } else {
            c.dispose();
        }
        assert_eq!(
            live_threads(),
            base,
            "client cycle {i}: not joined: {}",
            thread_report()
        );
    }

    // Groups with two paths (the peer serves one at a time: the second may still be
    // handshaking when the group is disposed).
    for i in 0..50 {
        let g =
            RxWSClientGroup::<String>::with_config(local(peer_port, "/"), Text, quiet()).unwrap();
        assert!(g.wait_connected("/a", WAIT).unwrap());
        g.on_next(TaggedData::new("/b", "y".to_string()));
        g.dispose();
        assert_eq!(
            live_threads(),
            base,
            "group cycle {i}: not joined: {}",
            thread_report()
        );
    }
    assert!(served.load(Ordering::SeqCst) >= 150);

    stop.store(true, Ordering::SeqCst);
    let _wake =
        TcpStream::connect_timeout(&([127, 0, 0, 1], peer_port).into(), Duration::from_secs(1));
    peer.join().unwrap();
}
