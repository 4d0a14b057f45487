//! The gateway's log records (the seed's table: event, level, attributes) and metric points,
//! captured through the OpenTelemetry bridge as `rxplus::telemetry::install` sets it up.

mod capture;
mod support;

use std::io::Write;
use std::net::TcpStream;

use capture::{one, point, Otel};
use log::{Level, LevelFilter};
use rxplus::gateway::{DefaultFrame, Framing, GatewayConfig, GatewayNode, NodeId, ResumeConfig};
use rxplus::telemetry::{event, key, metric};
use rxplus::tungstenite::{self, Message};
use rxplus::OverflowStrategy;
use support::*;

type Node = GatewayNode<DefaultFrame>;

fn otel() -> &'static Otel {
    capture::otel(LevelFilter::Info)
}

#[test]
fn the_seed_log_events_and_the_metrics() {
    let otel = otel();
    let node = Node::new(
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .name("gw")
            .overflow(OverflowStrategy::Disconnect, 0),
    )
    .unwrap();
    node.start().unwrap();
    let addr = node.local_addr().unwrap();
    let node_id = node.node_id().to_string();

    // A raw peer: handshake, one good frame, one bad frame.
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/").as_str(), sock).unwrap();
    let _hello = ws.read().unwrap();
    let peer_id = NodeId::random();
    ws.send(Message::Binary(
        DefaultFrame::create_hello_ack(peer_id, 1).encode().into(),
    ))
    .unwrap();
    ws.send(Message::Binary(DefaultFrame::data("ok").encode().into()))
        .unwrap();
    ws.send(Message::Binary(vec![1u8, 42].into())).unwrap();
    assert!(wait_until(WAIT, || node.stats().ws.decode_errors == 1));
    let conn = node.get_connected_peers()[0];
    let conn_s = conn.to_string();

    // The peer stops reading; under `disconnect` the node cuts the link with 4005.
    let payload = vec![0u8; 64 << 10];
    assert!(wait_until(WAIT, || {
        let _ = node.send_to(conn, DefaultFrame::data(payload.clone()));
        node.get_connection(conn).is_none()
    }));
    let _ = ws.get_mut().flush();
    node.stop();

    let recs = otel.records_of(&["gw"]);
    let started = one(&recs, event::GATEWAY_STARTED, &[(key::NODE_ID, &node_id)]);
    assert_eq!(started.level, Level::Info);
    assert_eq!(started.attr(key::ADDR), Some(addr.to_string().as_str()));
    assert_eq!(
        one(&recs, event::CONNECTION_OPENED, &[(key::CONN_ID, &conn_s)]).level,
        Level::Info
    );
    let hs = one(
        &recs,
        event::HANDSHAKE_COMPLETED,
        &[(key::CONN_ID, &conn_s)],
    );
    assert_eq!(hs.level, Level::Info);
    assert_eq!(
        hs.attr("remote_node_id"),
        Some(peer_id.to_string().as_str())
    );
    let decode = one(&recs, event::DECODE_ERROR, &[(key::CONN_ID, &conn_s)]);
    assert_eq!(decode.level, Level::Warn);
    assert!(decode
        .attr(key::ERROR)
        .is_some_and(|e| e.contains("unknown kind 42")));
    let overflow = one(
        &recs,
        event::OVERFLOW_DISCONNECT,
        &[(key::CONN_ID, &conn_s)],
    );
    assert_eq!(overflow.level, Level::Warn);
    let closed = one(&recs, event::CONNECTION_CLOSED, &[(key::CONN_ID, &conn_s)]);
    assert_eq!(closed.level, Level::Info);
    assert_eq!(closed.attr("cause"), Some("overflow (4005)"));
    one(&recs, event::GATEWAY_STOPPED, &[(key::NODE_ID, &node_id)]);

    let points = otel.points_of(&["gw"]);
    // Messages received: the good frame and the bad one (the HELLO exchange is not counted).
    assert_eq!(point(&points, metric::MESSAGES_IN, &[]).value, 2.0);
    assert_eq!(point(&points, metric::DECODE_ERRORS, &[]).value, 1.0);
    assert_eq!(point(&points, metric::CONNECTIONS_OPEN, &[]).value, 0.0);
    assert_eq!(point(&points, metric::GATEWAY_GAPS, &[]).value, 0.0);
    assert!(points.iter().any(|p| p.name == metric::HANDSHAKE_DURATION));
}

/// A resumable link cut once: `Connection interrupted` and `Connection resumed` on each side,
/// and the resume counters as metric points.
#[test]
fn a_resume_is_logged_and_counted() {
    let otel = otel();
    let cfg = |name: &str| {
        GatewayConfig::default()
            .host("127.0.0.1")
            .port(0)
            .name(name)
            .ws(quiet())
            .retry(
                rxplus::ws::RetryPolicy::default()
                    .initial_delay(std::time::Duration::from_millis(10))
                    .jitter(0.0),
            )
            .resume(ResumeConfig::enabled())
    };
    let a = Node::new(cfg("gw-ra")).unwrap();
    a.start().unwrap();
    let b = Node::new(cfg("gw-rb")).unwrap();
    let proxy = support::proxy::Proxy::start(a.local_addr().unwrap());
    let to_a = b.connect_to(&proxy.url()).unwrap();
    assert!(b.wait_connected(to_a, WAIT));
    assert!(wait_until(WAIT, || a.get_connected_peers().len() == 1));
    let to_b = a.get_connected_peers()[0];
    b.send_to(to_a, DefaultFrame::data("before")).unwrap();
    proxy.cut();
    assert!(wait_until(WAIT, || a.stats().resumes == 1 && b.stats().resumes == 1));
    assert!(wait_until(WAIT, || b
        .get_connection(to_a)
        .is_some_and(|c| c.queued == 0)));
    b.stop();
    a.stop();

    for (name, conn) in [("gw-ra", to_b), ("gw-rb", to_a)] {
        let recs = otel.records_of(&[name]);
        let conn = conn.to_string();
        // At least the cut's; the teardown through the proxy can add one (a stop whose close
        // frame the proxy drops is, to the other side, one more interruption).
        let interrupted = capture::named(&recs, event::GATEWAY_INTERRUPTED);
        assert!(
            interrupted
                .iter()
                .any(|r| r.attr(key::CONN_ID) == Some(conn.as_str()) && r.level == Level::Info),
            "{interrupted:?}"
        );
        let resumed = one(&recs, event::GATEWAY_RESUMED, &[(key::CONN_ID, &conn)]);
        assert_eq!(resumed.level, Level::Info);
        assert!(resumed.attr("replayed").is_some());
        let points = otel.points_of(&[name]);
        assert_eq!(point(&points, metric::GATEWAY_RESUMES, &[]).value, 1.0);
        assert_eq!(point(&points, metric::GATEWAY_RESUME_LOST, &[]).value, 0.0);
        assert_eq!(point(&points, metric::GATEWAY_DUPLICATES, &[]).value, 0.0);
        assert!(point(&points, metric::GATEWAY_REPLAYED, &[]).value >= 0.0);
    }
}
