//! The gateway layer over loopback: handshake, refusals with their close codes, ordering,
//! decode errors, duplicates, redial after a restart, overflow policies with a stalled peer.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rxplus::gateway::{
    ConnectionState, DefaultFrame, Direction, DisconnectCause, DuplicatePolicy, Framing,
    GatewayConfig, GatewayEvent, GatewayNode, NodeId, TaggedFrame,
};
use rxplus::tungstenite::{self, Message};
use rxplus::ws::ConnId;
use rxplus::{Error, OverflowStrategy};
use support::*;

type Node = GatewayNode<DefaultFrame>;

fn cfg() -> GatewayConfig {
    GatewayConfig::default().host("127.0.0.1").port(0)
}

fn node(cfg: GatewayConfig) -> Node {
    let n = Node::new(cfg).unwrap();
    n.start().unwrap();
    n
}

fn url(n: &Node) -> String {
    format!("ws://{}/", n.local_addr().unwrap())
}

/// Every event a node emits, in order.
fn record(n: &Node) -> Arc<Mutex<Vec<GatewayEvent>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    n.subscribe_events(move |e| g.lock().push(e));
    got
}

fn disconnects(events: &Mutex<Vec<GatewayEvent>>, id: ConnId) -> Vec<DisconnectCause> {
    events
        .lock()
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::Disconnected { conn_id, cause, .. } if *conn_id == id => {
                Some(cause.clone())
            }
            _ => None,
        })
        .collect()
}

/// Waits for a flow-control window without sleeping (a sleep per frame would dominate).
fn spin_until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "window never opened");
        std::thread::yield_now();
    }
}

fn text(f: &TaggedFrame<DefaultFrame>) -> String {
    String::from_utf8_lossy(f.frame.payload().map(|p| &p[..]).unwrap_or(b"")).into_owned()
}

/// A raw WebSocket peer dialing `n`: it reads the node's HELLO and returns it.
fn raw_peer(n: &Node) -> (tungstenite::WebSocket<TcpStream>, DefaultFrame) {
    let sock = TcpStream::connect(n.local_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, _) = tungstenite::client(url(n).as_str(), sock).unwrap();
    let hello = match ws.read().unwrap() {
        Message::Binary(b) => DefaultFrame::decode(&b).unwrap(),
        other => panic!("expected HELLO, got {other:?}"),
    };
    (ws, hello)
}

fn send_raw(ws: &mut tungstenite::WebSocket<TcpStream>, f: &DefaultFrame) {
    ws.send(Message::Binary(f.encode().into())).unwrap();
}

/// Reads until a close frame; returns its code.
fn close_code_of(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// A node dialing `b` with a quick redial policy, connected, and then interrupted by `b`'s stop:
/// (the dialer, its events, the connection id, `b`'s port).
fn interrupted_link(b: Node) -> (Node, Arc<Mutex<Vec<GatewayEvent>>>, ConnId, u16) {
    let port = b.local_addr().unwrap().port();
    let a = Node::new(
        cfg().retry(
            rxplus::ws::RetryPolicy::default()
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(50)),
        ),
    )
    .unwrap();
    let events = record(&a);
    let id = a.connect_to(&url(&b)).unwrap();
    assert!(a.wait_connected(id, WAIT));
    b.stop();
    assert!(wait_until(WAIT, || events
        .lock()
        .contains(&GatewayEvent::Interrupted { conn_id: id })));
    (a, events, id, port)
}

#[test]
fn three_nodes_in_a_ring_each_see_two_peers_with_the_right_ids() {
    let nodes: Vec<Node> = (0..3).map(|_| node(cfg())).collect();
    let mut dialed = Vec::new();
    for i in 0..3 {
        let next = &nodes[(i + 1) % 3];
        dialed.push(nodes[i].connect_to(&url(next)).unwrap());
    }
    for (i, id) in dialed.iter().enumerate() {
        assert!(nodes[i].wait_connected(*id, WAIT), "node {i}");
    }
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            wait_until(WAIT, || n.get_connected_peers().len() == 2),
            "node {i}"
        );
        let remotes: HashSet<NodeId> = n
            .get_connected_peers()
            .into_iter()
            .filter_map(|c| n.get_connection(c)?.remote_node_id)
            .collect();
        let want: HashSet<NodeId> = [nodes[(i + 1) % 3].node_id(), nodes[(i + 2) % 3].node_id()]
            .into_iter()
            .collect();
        assert_eq!(remotes, want, "node {i}");
        let out = n.get_connection(dialed[i]).unwrap();
        assert_eq!(out.direction, Direction::Outbound);
        assert_eq!(out.state, ConnectionState::Connected);
        assert_eq!(out.remote_node_id, Some(nodes[(i + 1) % 3].node_id()));
    }
    // A frame around the ring, hop by hop.
    let rx: Vec<_> = nodes.iter().map(|n| n.stream()).collect();
    for i in 0..3 {
        nodes[i]
            .send_to(dialed[i], DefaultFrame::data(format!("from {i}")))
            .unwrap();
        let got = rx[(i + 1) % 3]
            .recv_timeout(WAIT)
            .unwrap()
            .into_item()
            .unwrap();
        assert_eq!(text(&got), format!("from {i}"));
        let back = nodes[(i + 1) % 3].get_connection(got.conn_id).unwrap();
        assert_eq!(back.direction, Direction::Inbound);
        assert_eq!(back.remote_node_id, Some(nodes[i].node_id()));
    }
}

#[test]
fn ten_thousand_frames_each_way_arrive_in_order() {
    const N: usize = 10_000;
    let a = node(cfg());
    let b = node(cfg());
    let (ra, rb) = (a.stream(), b.stream());
    let ab = b.connect_to(&url(&a)).unwrap();
    assert!(b.wait_connected(ab, WAIT));
    let ba = loop {
        if let Some(id) = a.get_connected_peers().first() {
            break *id;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The consumers keep up; each sender keeps at most 500 frames in flight, half the default
    // `drop-old` size, so nothing may be dropped or reordered.
    let (got_a, got_b) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let sender = |n: &Node, to: ConnId, peer_got: &AtomicUsize| {
        for i in 0..N {
            spin_until(|| i - peer_got.load(Ordering::SeqCst) < 500);
            n.send_to(to, DefaultFrame::data(i.to_string())).unwrap();
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| sender(&a, ba, &got_b));
        s.spawn(|| sender(&b, ab, &got_a));
        for (rx, who, got) in [(&ra, "a", &got_a), (&rb, "b", &got_b)] {
            s.spawn(move || {
                for i in 0..N {
                    let f = rx.recv_timeout(WAIT).unwrap().into_item().unwrap();
                    assert_eq!(text(&f), i.to_string(), "{who}");
                    got.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(a.stats().ws.dropped, 0);
    assert_eq!(b.stats().ws.overflow_dropped, 0);
}

#[test]
fn a_frame_that_fails_to_decode_is_dropped_and_the_next_delivered() {
    let n = node(cfg());
    let errors = Arc::new(AtomicUsize::new(0));
    let e = errors.clone();
    n.subscribe_errors(move |err| {
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        e.fetch_add(1, Ordering::SeqCst);
    });
    let rx = n.stream();
    let (mut ws, hello) = raw_peer(&n);
    assert!(hello.is_hello());
    assert_eq!(hello.get_hello_node_id(), Some(n.node_id()));
    // A frame before the handshake completes never reaches the stream.
    send_raw(&mut ws, &DefaultFrame::data("too early"));
    send_raw(
        &mut ws,
        &DefaultFrame::create_hello_ack(NodeId::random(), 1),
    );
    send_raw(&mut ws, &DefaultFrame::data("one"));
    ws.send(Message::Binary(vec![1u8, 9, 9].into())).unwrap();
    ws.send(Message::Binary(vec![7u8].into())).unwrap();
    send_raw(&mut ws, &DefaultFrame::data("two"));
    let got: Vec<String> = (0..2)
        .map(|_| text(&rx.recv_timeout(WAIT).unwrap().into_item().unwrap()))
        .collect();
    assert_eq!(got, ["one", "two"]);
    assert_eq!(n.stats().ws.decode_errors, 2);
    assert_eq!(n.stats().early_frames, 1);
    assert!(wait_until(WAIT, || errors.load(Ordering::SeqCst) == 2));
    assert_eq!(n.get_connected_peers().len(), 1, "the link stays up");
}

#[test]
fn a_peer_that_never_acks_is_closed_with_4001_after_the_timeout() {
    let n = node(cfg().handshake_timeout(Duration::from_millis(300)));
    let events = record(&n);
    let started = Instant::now();
    let (mut ws, _hello) = raw_peer(&n);
    assert_eq!(close_code_of(&mut ws), Some(4001));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(wait_until(WAIT, || n.connections().is_empty()));
    let causes: Vec<_> = events
        .lock()
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::Disconnected { cause, .. } => Some(cause.clone()),
            GatewayEvent::Connected { .. } => panic!("never connected"),
            _ => None,
        })
        .collect();
    assert_eq!(causes, [DisconnectCause::HandshakeTimeout]);
}

#[test]
fn a_silent_acceptor_is_closed_with_4001_by_the_dialer() {
    // A plain WebSocket server that never sends HELLO.
    let server = rxplus::ws::RxWSServer::<rxplus::ws::WSMessage>::bind_with_config(
        "127.0.0.1:0",
        rxplus::ws::Raw,
        quiet(),
    )
    .unwrap();
    let n = Node::new(cfg().handshake_timeout(Duration::from_millis(300))).unwrap();
    let events = record(&n);
    let id = n
        .connect_to(&format!("ws://{}/", server.local_addr()))
        .unwrap();
    assert!(wait_until(WAIT, || !disconnects(&events, id).is_empty()));
    assert_eq!(
        disconnects(&events, id),
        [DisconnectCause::HandshakeTimeout]
    );
    assert!(n.get_connection(id).is_none());
}

#[test]
fn a_version_below_the_minimum_is_refused_with_4002() {
    let a = node(cfg().versions(3, 2));
    let b = Node::new(cfg().versions(1, 1)).unwrap();
    let (ea, eb) = (record(&a), record(&b));
    let id = b.connect_to(&url(&a)).unwrap();
    assert!(wait_until(WAIT, || !disconnects(&eb, id).is_empty()));
    assert_eq!(
        disconnects(&eb, id),
        [DisconnectCause::Refused {
            code: 4002,
            reason: "protocol version not supported".into()
        }]
    );
    assert!(wait_until(WAIT, || ea.lock().len() == 1));
    assert!(matches!(
        &ea.lock()[0],
        GatewayEvent::Disconnected { cause: DisconnectCause::Version { version: 1, min: 2 }, remote_node_id, .. }
            if *remote_node_id == Some(b.node_id())
    ));
    // The other way round: the dialer refuses the acceptor's HELLO and sends no ACK.
    let c = node(cfg().versions(1, 1));
    let d = Node::new(cfg().versions(2, 2)).unwrap();
    let ed = record(&d);
    let id = d.connect_to(&url(&c)).unwrap();
    assert!(wait_until(WAIT, || !disconnects(&ed, id).is_empty()));
    assert_eq!(
        disconnects(&ed, id),
        [DisconnectCause::Version { version: 1, min: 2 }]
    );
}

#[test]
fn a_node_dialing_itself_is_refused_with_4003() {
    let a = node(cfg());
    let events = record(&a);
    let id = a.connect_to(&url(&a)).unwrap();
    assert!(wait_until(WAIT, || events.lock().len() == 2));
    assert_eq!(disconnects(&events, id), [DisconnectCause::SelfConnection]);
    assert!(events.lock().iter().all(|e| matches!(
        e,
        GatewayEvent::Disconnected {
            cause: DisconnectCause::SelfConnection | DisconnectCause::Refused { code: 4003, .. },
            ..
        }
    )));
    assert!(a.connections().is_empty());
}

#[test]
fn simultaneous_dial_under_keep_one_leaves_exactly_one_link() {
    for round in 0..50 {
        let keep = || cfg().duplicates(DuplicatePolicy::KeepOne);
        let a = node(keep());
        let b = node(keep());
        let (ua, ub) = (url(&a), url(&b));
        let go = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                a.connect_to(&ub).unwrap();
            });
            s.spawn(|| {
                go.wait();
                b.connect_to(&ua).unwrap();
            });
        });
        // Settled: one connected link on each side, and no link still handshaking.
        let settled = |n: &Node| {
            let c = n.connections();
            c.len() == 1 && c[0].state == ConnectionState::Connected
        };
        assert!(
            wait_until(WAIT, || settled(&a) && settled(&b)),
            "round {round}: a {:?} / b {:?}",
            a.connections(),
            b.connections()
        );
        let (la, lb) = (&a.connections()[0], &b.connections()[0]);
        assert_eq!(la.remote_node_id, Some(b.node_id()));
        assert_eq!(lb.remote_node_id, Some(a.node_id()));
        // The survivor is the link dialed by the lower node id, seen from both ends.
        let a_lower = a.node_id() < b.node_id();
        assert_eq!(
            la.direction == Direction::Outbound,
            a_lower,
            "round {round}"
        );
        assert_eq!(lb.direction == Direction::Inbound, a_lower, "round {round}");
        // And it carries frames.
        let rx = b.stream();
        a.send_to(la.conn_id, DefaultFrame::data("x")).unwrap();
        assert_eq!(
            text(&rx.recv_timeout(WAIT).unwrap().into_item().unwrap()),
            "x"
        );
    }
}

#[test]
fn a_restarted_peer_is_redialed_under_the_same_id_and_queued_frames_follow() {
    let b = node(cfg());
    let first_remote = b.node_id();
    let (a, events, id, port) = interrupted_link(b);
    assert_ne!(
        a.get_connection(id).unwrap().state,
        ConnectionState::Connected
    );
    // Frames sent while interrupted wait, in order.
    for i in 0..5 {
        a.send_to(id, DefaultFrame::data(format!("q{i}"))).unwrap();
    }
    assert_eq!(a.get_connection(id).unwrap().queued, 5);
    let b2 = Node::new(cfg().port(port)).unwrap();
    let rx = b2.stream();
    b2.start().unwrap();
    assert!(a.wait_connected(id, WAIT));
    let got: Vec<String> = (0..5)
        .map(|_| text(&rx.recv_timeout(WAIT).unwrap().into_item().unwrap()))
        .collect();
    assert_eq!(got, ["q0", "q1", "q2", "q3", "q4"]);
    let ev = events.lock().clone();
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| match e {
            GatewayEvent::Connected { conn_id, .. } if *conn_id == id => "connected",
            GatewayEvent::Interrupted { conn_id } if *conn_id == id => "interrupted",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["connected", "interrupted", "connected"]);
    assert!(
        matches!(ev[2], GatewayEvent::Connected { remote_node_id, .. } if remote_node_id == b2.node_id() && remote_node_id != first_remote)
    );
    assert!(disconnects(&events, id).is_empty());
}

#[test]
fn sending_to_an_unknown_or_unconnected_id_is_an_error() {
    let a = Node::new(cfg()).unwrap();
    let unknown = ConnId::new();
    let err = a.send_to(unknown, DefaultFrame::data("x")).unwrap_err();
    assert!(matches!(err, Error::NoConnection { .. }), "{err}");
    // Dialing a port nobody listens on: the id exists, but is not connected.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let id = a.connect_to(&format!("ws://127.0.0.1:{port}/")).unwrap();
    let err = a.send_to(id, DefaultFrame::data("x")).unwrap_err();
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
    // send() hands the frame back.
    let err = a
        .send(TaggedFrame::new(unknown, DefaultFrame::data("back")))
        .unwrap_err();
    let back = err.into_item().unwrap();
    assert_eq!(back.frame.payload().map(|p| &p[..]), Some(&b"back"[..]));
    assert_eq!(a.stats().send_errors, 3);
    assert!(a.disconnect(unknown).is_err());
    a.disconnect(id).unwrap();
    assert!(a.get_connection(id).is_none() || wait_until(WAIT, || a.get_connection(id).is_none()));
}

#[test]
fn disconnect_ends_a_link_once_on_both_sides() {
    let a = node(cfg());
    let b = Node::new(cfg()).unwrap();
    let (ea, eb) = (record(&a), record(&b));
    let id = b.connect_to(&url(&a)).unwrap();
    assert!(b.wait_connected(id, WAIT));
    assert!(wait_until(WAIT, || a.get_connected_peers().len() == 1));
    let aid = a.get_connected_peers()[0];
    b.disconnect(id).unwrap();
    assert!(wait_until(WAIT, || !disconnects(&eb, id).is_empty()
        && !disconnects(&ea, aid).is_empty()));
    assert_eq!(disconnects(&eb, id), [DisconnectCause::Local]);
    assert!(matches!(
        disconnects(&ea, aid)[..],
        [DisconnectCause::Closed {
            code: Some(1000),
            ..
        }]
    ));
    assert!(a.connections().is_empty() && b.connections().is_empty());
    // Nothing more arrives for either id.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(disconnects(&eb, id).len(), 1);
    assert_eq!(disconnects(&ea, aid).len(), 1);
}

/// A peer that completes the handshake and then never reads: its socket buffers fill, then its
/// queue on the node.
fn stalled_peer(n: &Node) -> (tungstenite::WebSocket<TcpStream>, ConnId) {
    let before: HashSet<ConnId> = n.get_connected_peers().into_iter().collect();
    let (mut ws, _) = raw_peer(n);
    send_raw(
        &mut ws,
        &DefaultFrame::create_hello_ack(NodeId::random(), 1),
    );
    let mut id = None;
    assert!(wait_until(WAIT, || {
        id = n
            .get_connected_peers()
            .into_iter()
            .find(|c| !before.contains(c));
        id.is_some()
    }));
    (ws, id.unwrap())
}

fn stalled_consumer_under(strategy: OverflowStrategy) {
    const SIZE: usize = 64;
    let n = node(cfg().overflow(strategy, SIZE));
    let events = record(&n);
    // A healthy peer next to the stalled one.
    let healthy = Node::new(cfg()).unwrap();
    let rx = healthy.stream();
    let hid = healthy.connect_to(&url(&n)).unwrap();
    assert!(healthy.wait_connected(hid, WAIT));
    // The acceptor is connected once HELLO_ACK has arrived, a moment after the dialer.
    assert!(wait_until(WAIT, || n.get_connected_peers().len() == 1));
    let (_stalled_ws, sid) = stalled_peer(&n);
    let nid = *n.get_connected_peers().iter().find(|c| **c != sid).unwrap();
    // The healthy peer's consumer keeps up on its own thread, and the sender keeps at most 32
    // frames in flight to it: any frame the healthy link loses or refuses is the stalled
    // peer's doing.
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let consumer = std::thread::spawn(move || {
        for i in 0..2_000 {
            let f = rx.recv_timeout(WAIT).unwrap().into_item().unwrap();
            assert_eq!(text(&f), format!("h{i}"));
            r.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Under `disconnect` (zero tolerance) a frame that finds the link busy at all ends it, so
    // the healthy link gets one frame in flight at a time there.
    let window = if strategy == OverflowStrategy::Disconnect {
        1
    } else {
        32
    };
    let payload = bytes::Bytes::from(vec![0u8; 16 << 10]);
    let mut refused = 0;
    let started = Instant::now();
    for i in 0..2_000 {
        if n.send_to(sid, DefaultFrame::data(payload.clone())).is_err() {
            refused += 1;
        }
        spin_until(|| i - received.load(Ordering::SeqCst) < window);
        n.send_to(nid, DefaultFrame::data(format!("h{i}"))).unwrap();
    }
    consumer.join().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    let s = n.stats();
    match strategy {
        OverflowStrategy::DropOld => {
            assert_eq!(refused, 0, "{:?}", events.lock());
            assert!(s.ws.overflow_dropped > 0, "{s:?}");
            assert_eq!(
                n.get_connection(sid).unwrap().state,
                ConnectionState::Connected
            );
        }
        OverflowStrategy::DropNew => {
            assert!(refused > 0);
            assert!(s.ws.overflow_dropped > 0, "{s:?}");
            assert_eq!(
                n.get_connection(sid).unwrap().state,
                ConnectionState::Connected
            );
        }
        _ => {
            assert!(refused > 0);
            assert!(wait_until(WAIT, || !disconnects(&events, sid).is_empty()));
            assert_eq!(disconnects(&events, sid), [DisconnectCause::Overflow]);
            assert!(n.get_connection(sid).is_none());
        }
    }
    assert!(disconnects(&events, nid).is_empty());
}

#[test]
fn a_stalled_peer_under_drop_old_loses_old_frames_and_others_keep_their_rate() {
    stalled_consumer_under(OverflowStrategy::DropOld);
}

#[test]
fn a_stalled_peer_under_drop_new_refuses_new_frames_and_others_keep_their_rate() {
    stalled_consumer_under(OverflowStrategy::DropNew);
}

#[test]
fn a_stalled_peer_under_buffer_k_is_disconnected_with_4005() {
    stalled_consumer_under(OverflowStrategy::BufferK);
}

#[test]
fn a_stalled_peer_under_disconnect_is_disconnected_with_4005() {
    stalled_consumer_under(OverflowStrategy::Disconnect);
}

#[test]
fn stream_sequence_gaps_are_reported() {
    let a = node(cfg());
    let b = Node::new(cfg()).unwrap();
    let events = record(&a);
    let id = b.connect_to(&url(&a)).unwrap();
    assert!(b.wait_connected(id, WAIT));
    let s = [7u8; 16];
    for seq in [0u32, 1, 2, 5, 3, 6] {
        b.send_to(id, DefaultFrame::on_stream(s, seq, "x")).unwrap();
    }
    let rx_done = a.stream();
    b.send_to(id, DefaultFrame::data("end")).unwrap();
    loop {
        let f = rx_done.recv_timeout(WAIT).unwrap().into_item().unwrap();
        if text(&f) == "end" {
            break;
        }
    }
    let gaps: Vec<(u32, u32, u32)> = events
        .lock()
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::Gap {
                first, count, seq, ..
            } => Some((*first, *count, *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [(3, 2, 5)]);
    assert_eq!(a.stats().gaps, 2);
    let aid = a.get_connected_peers()[0];
    let conn = a.get_connection(aid).unwrap();
    assert_eq!(conn.streams.len(), 1);
    assert_eq!(conn.streams[0].next_seq, 7);
}

#[test]
fn stop_from_an_event_callback_returns_and_emits_each_disconnect_once() {
    let a = node(cfg());
    let b = Node::new(cfg()).unwrap();
    let h = b.handle();
    let stopped = Arc::new(AtomicUsize::new(0));
    let s = stopped.clone();
    b.subscribe_events(move |e| {
        if matches!(e, GatewayEvent::Connected { .. }) {
            h.dispose();
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    let eb = record(&b);
    let id = b.connect_to(&url(&a)).unwrap();
    assert!(wait_until(WAIT, || stopped.load(Ordering::SeqCst) == 1));
    assert!(wait_until(WAIT, || b.thread_count() == 0));
    assert!(wait_until(WAIT, || disconnects(&eb, id).len() == 1));
    assert_eq!(disconnects(&eb, id), [DisconnectCause::Stopped]);
    assert!(b.connect_to(&url(&a)).is_err());
}

#[test]
fn a_peer_trickling_bytes_cannot_stretch_the_handshake_deadline() {
    let n = node(cfg().handshake_timeout(Duration::from_millis(500)));
    let events = record(&n);
    let (mut ws, _hello) = raw_peer(&n);
    let started = Instant::now();
    // The header of a masked binary frame of 1,000 bytes, then one byte every 100 ms: each
    // read makes progress, none completes the frame.
    ws.get_mut()
        .write_all(&[0x82, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4])
        .unwrap();
    let trickle = ws.get_ref().try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut s = trickle;
        for _ in 0..40 {
            if s.write_all(&[0]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(wait_until(WAIT, || !events.lock().is_empty()));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(matches!(
        events.lock()[0],
        GatewayEvent::Disconnected {
            cause: DisconnectCause::HandshakeTimeout,
            ..
        }
    ));
    assert_eq!(close_code_of(&mut ws), Some(4001));
    let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
    t.join().unwrap();
}

#[test]
fn stop_from_an_event_callback_with_other_links_returns() {
    let a = node(cfg());
    let b = Node::new(cfg()).unwrap();
    let h = b.handle();
    let connected = Arc::new(AtomicUsize::new(0));
    let c = connected.clone();
    b.subscribe_events(move |e| {
        if matches!(e, GatewayEvent::Connected { .. }) && c.fetch_add(1, Ordering::SeqCst) == 2 {
            h.dispose(); // the third link's thread stops the node; two others are live
        }
    });
    let eb = record(&b);
    let ids: Vec<ConnId> = (0..3).map(|_| b.connect_to(&url(&a)).unwrap()).collect();
    assert!(
        wait_until(WAIT, || b.thread_count() == 0),
        "stop from a callback did not finish: {} threads",
        b.thread_count()
    );
    for id in ids {
        assert!(wait_until(WAIT, || disconnects(&eb, id).len() == 1));
        assert_eq!(disconnects(&eb, id), [DisconnectCause::Stopped]);
    }
}

#[test]
fn an_unread_events_receiver_does_not_hold_stop_up() {
    let a = node(cfg());
    let b = Node::new(cfg().ws(quiet().stream_capacity(1))).unwrap();
    let _unread = b.events();
    for _ in 0..3 {
        b.connect_to(&url(&a)).unwrap();
    }
    assert!(wait_until(WAIT, || a.get_connected_peers().len() == 3));
    let started = Instant::now();
    b.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.thread_count(), 0);
}

#[test]
fn frames_waiting_through_a_redial_go_first_in_order_within_the_byte_bound() {
    let (a, _events, id, port) = interrupted_link(node(cfg()));
    // 500 frames of 16 KiB wait: 8 MB, over the 1 MiB bound, so drop-old keeps the newest.
    let pad = "x".repeat(16 << 10);
    for i in 0..500 {
        a.send_to(id, DefaultFrame::data(format!("q{i:04}:{pad}")))
            .unwrap();
    }
    let queued = a.get_connection(id).unwrap().queued;
    assert!((1..=64).contains(&queued), "{queued}");
    let b2 = Node::new(cfg().port(port)).unwrap();
    let rx = b2.stream();
    b2.start().unwrap();
    assert!(a.wait_connected(id, WAIT));
    assert_eq!(a.get_connection(id).unwrap().queued, 0);
    a.send_to(id, DefaultFrame::data("marker")).unwrap();
    let mut got = Vec::new();
    loop {
        let t = text(&rx.recv_timeout(WAIT).unwrap().into_item().unwrap());
        if t == "marker" {
            break;
        }
        got.push(t[1..5].parse::<usize>().unwrap());
    }
    assert_eq!(got.len(), queued, "every waiting frame before the marker");
    assert_eq!(*got.last().unwrap(), 499);
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {got:?}"
    );
}

#[test]
fn stop_does_not_wait_for_a_connect_that_never_completes() {
    // A listener that never accepts, with a backlog of one, filled: further SYNs are dropped,
    // so a connect to it hangs until its timeout.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<_> = (0..4)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.connect_timeout(&addr.into(), Duration::from_millis(200))
                .ok()
                .map(|_| s)
        })
        .collect();
    let n = Node::new(cfg().handshake_timeout(Duration::from_secs(30))).unwrap();
    let events = record(&n);
    let id = n.connect_to(&format!("ws://{addr}/")).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the dialer is inside its connect
    let started = Instant::now();
    n.stop();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(n.thread_count(), 0);
    assert_eq!(disconnects(&events, id), [DisconnectCause::Stopped]);
}
