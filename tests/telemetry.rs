//! Telemetry at DEBUG: the records and metric points a scripted scenario produces, with their
//! levels and attributes, over real loopback sockets. One OpenTelemetry capture per process
//! (`log` allows one logger); each test uses its own component names to find its records.
//! The INFO-level checks are in `tests/telemetry_levels.rs` (another process, another level).

mod capture;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use capture::{named, one, point, Otel, Rec};
use log::{Level, LevelFilter};
use parking_lot::Mutex;
use rxplus::telemetry::{event, key, metric};
use rxplus::ws::{
    ConnectionEvent, ConnectionEventKind, Json, RetryPolicy, RxWSClient, RxWSClientGroup,
    RxWSServer, TaggedData, Text,
};
use rxplus::OverflowStrategy;
use serde_json::Value;
use support::*;

fn otel() -> &'static Otel {
    capture::otel(LevelFilter::Debug)
}

/// A duration logged in milliseconds and recorded in seconds are the same measurement.
#[track_caller]
fn assert_same_duration(logged_ms: f64, recorded_s: f64) {
    assert!(logged_ms > 0.0, "{logged_ms}");
    assert!(
        (logged_ms / 1e3 - recorded_s).abs() <= 1e-9 * recorded_s.max(1.0),
        "logged {logged_ms} ms, recorded {recorded_s} s"
    );
}

fn states(records: &[Rec], component: &str) -> Vec<String> {
    named(records, event::CLIENT_STATE)
        .into_iter()
        .filter(|r| r.attr(key::COMPONENT) == Some(component))
        .map(|r| r.attr(key::STATE).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_scripted_scenario_is_logged_and_counted_step_by_step() {
    let otel = otel();
    let srv = "telemetry-scenario-server";
    let server =
        RxWSServer::<Value>::bind_with_config(any_port(), Json, quiet().name(srv)).unwrap();
    let addr = server.local_addr();
    // Items on /slow wait at a gate: that connection's reader stops, its socket fills up.
    let (gate, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    server.subscribe(move |m: TaggedData<Value>| {
        if &*m.tag == "/slow" {
            // Nothing is ever sent: this waits until the gate is dropped.
            while gate_rx.recv().is_ok() {}
        } else {
            g.lock().push(m.data);
        }
    });

    // Connect and exchange: five JSON messages and one that is not JSON.
    let client =
        RxWSClient::<String>::with_config(local(addr.port(), "/scenario"), Text, quiet()).unwrap();
    let cli = client.name().to_owned();
    assert!(client.wait_connected(WAIT));
    let mut sent: Vec<String> = (0..5).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    sent.push("not json".to_owned());
    for m in &sent {
        client.on_next(m.clone());
    }
    let bytes: usize = sent.iter().map(String::len).sum();
    assert!(wait_until(WAIT, || got.lock().len() == 5
        && server.stats().decode_errors == 1));

    let on_scenario = [(key::COMPONENT, srv), (key::PATH, "/scenario")];
    let pts = otel.points_of(&[srv]);
    assert_eq!(
        point(&pts, metric::CONNECTIONS_OPEN, &on_scenario).value,
        1.0
    );

    // Overflow: a drop-new client with room for one queued message, against the stalled path.
    let slow = RxWSClient::<String>::with_config(
        local(addr.port(), "/slow"),
        Text,
        quiet().outbound(1, OverflowStrategy::DropNew),
    )
    .unwrap();
    let slow_name = slow.name().to_owned();
    assert!(slow.wait_connected(WAIT));
    let pad = format!("\"{}\"", "x".repeat(64 << 10));
    assert!(wait_until(WAIT, || {
        slow.on_next(pad.clone());
        slow.stats().overflow_dropped > 0
    }));
    let overflow_dropped = slow.stats().overflow_dropped;
    drop(gate);

    // Disconnect.
    client.on_completed();
    slow.dispose();
    // "Connection closed" is a connection's last step (after its counters).
    let closed = || named(&otel.records_of(&[srv]), event::CONNECTION_CLOSED).len() == 2;
    assert!(wait_until(WAIT, closed));

    // ---- Records ----
    let recs = otel.records_of(&[srv, &cli, &slow_name]);
    let started = one(&recs, event::SERVER_STARTED, &[(key::COMPONENT, srv)]);
    assert_eq!(started.level, Level::Info);
    assert_eq!(started.attr(key::ADDR), Some(addr.to_string().as_str()));

    // Server side of the /scenario connection: handshake, open, close share one conn_id.
    let opened = one(&recs, event::CONNECTION_OPENED, &on_scenario);
    assert_eq!(opened.level, Level::Info);
    let conn_id = opened.attr(key::CONN_ID).unwrap().to_owned();
    assert_eq!(conn_id.len(), 32, "{conn_id}");
    let peer: SocketAddr = opened.attr(key::PEER).unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback());
    let on_conn = [
        (key::COMPONENT, srv),
        (key::CONN_ID, conn_id.as_str()),
        (key::PATH, "/scenario"),
    ];
    let hs = one(&recs, event::HANDSHAKE_COMPLETED, &on_conn);
    assert_eq!(hs.level, Level::Info);
    assert_eq!(hs.attr(key::PEER), opened.attr(key::PEER));
    let hs_ms: f64 = hs.attr(key::DURATION_MS).unwrap().parse().unwrap();
    let closed = one(&recs, event::CONNECTION_CLOSED, &on_conn);
    assert_eq!(closed.level, Level::Info);
    assert_eq!(closed.attr(key::PEER), opened.attr(key::PEER));

    // The decode error: WARN, with the connection, the path, the datatype and the error.
    let bad = one(&recs, event::DECODE_ERROR, &on_conn);
    assert_eq!(bad.level, Level::Warn);
    assert_eq!(bad.attr(key::DATATYPE), Some("json"));
    let reason = bad.attr(key::ERROR).unwrap_or_default();
    assert!(reason.starts_with("invalid JSON: "), "{reason}");

    // Per-message records at DEBUG: one per message received and per message sent.
    let received = named(&recs, event::MESSAGE_RECEIVED);
    let received: Vec<_> = received
        .iter()
        .filter(|r| r.attr(key::CONN_ID) == Some(&conn_id))
        .collect();
    assert_eq!(received.len(), sent.len());
    for r in &received {
        assert_eq!(r.level, Level::Debug);
        assert_eq!(r.attr(key::PATH), Some("/scenario"));
        assert_eq!(r.attr(key::COMPONENT), Some(srv));
    }
    let sends: Vec<_> = named(&recs, event::MESSAGE_SENT)
        .into_iter()
        .filter(|r| r.attr(key::COMPONENT) == Some(&cli))
        .collect();
    assert_eq!(sends.len(), sent.len());
    assert!(sends.iter().all(|r| r.level == Level::Debug));

    // Client side: handshake and open with the server's address, its states, and its close.
    let c_open = one(
        &recs,
        event::CONNECTION_OPENED,
        &[(key::COMPONENT, &cli), (key::PATH, "/scenario")],
    );
    assert_eq!(c_open.attr(key::PEER), Some(addr.to_string().as_str()));
    let c_conn = c_open.attr(key::CONN_ID).unwrap();
    one(
        &recs,
        event::HANDSHAKE_COMPLETED,
        &[(key::COMPONENT, &cli), (key::CONN_ID, c_conn)],
    );
    one(
        &recs,
        event::CONNECTION_CLOSED,
        &[(key::COMPONENT, &cli), (key::CONN_ID, c_conn)],
    );
    one(&recs, event::COMPLETING, &[(key::COMPONENT, &cli)]);
    assert_eq!(states(&recs, &cli), ["connecting", "connected", "closed"]);

    // Overflow drops: DEBUG, one per dropped message, with the policy.
    let drops: Vec<_> = named(&recs, event::OVERFLOW_DROP)
        .into_iter()
        .filter(|r| r.attr(key::COMPONENT) == Some(&slow_name))
        .collect();
    assert_eq!(drops.len() as u64, overflow_dropped);
    for r in &drops {
        assert_eq!(r.level, Level::Debug);
        assert_eq!(r.attr(key::POLICY), Some("drop-new"));
    }

    // ---- Metric points ----
    let pts = otel.points_of(&[srv, &cli, &slow_name]);
    let m_in = point(&pts, metric::MESSAGES_IN, &on_scenario);
    assert_eq!(
        (m_in.value, m_in.unit.as_str()),
        (sent.len() as f64, "{message}")
    );
    let b_in = point(&pts, metric::BYTES_IN, &on_scenario);
    assert_eq!((b_in.value, b_in.unit.as_str()), (bytes as f64, "By"));
    assert_eq!(point(&pts, metric::DECODE_ERRORS, &on_scenario).value, 1.0);
    let open = point(&pts, metric::CONNECTIONS_OPEN, &on_scenario);
    assert_eq!((open.value, open.unit.as_str()), (0.0, "{connection}"));
    let hs = point(
        &pts,
        metric::HANDSHAKE_DURATION,
        &[
            (key::COMPONENT, srv),
            (key::PATH, "/scenario"),
            (key::OUTCOME, "ok"),
        ],
    );
    assert_eq!((hs.count, hs.unit.as_str()), (1, "s"));
    // The record and the histogram time the same handshake.
    assert_same_duration(hs_ms, hs.value);
    // The server has no connect attempts.
    assert!(!pts
        .iter()
        .any(|p| p.name == metric::CONNECT_ATTEMPTS && p.attr(key::COMPONENT) == Some(srv)));

    let on_client = [(key::COMPONENT, cli.as_str()), (key::PATH, "/scenario")];
    assert_eq!(
        point(&pts, metric::MESSAGES_OUT, &on_client).value,
        sent.len() as f64
    );
    assert_eq!(
        point(&pts, metric::BYTES_OUT, &on_client).value,
        bytes as f64
    );
    let attempts = point(&pts, metric::CONNECT_ATTEMPTS, &on_client);
    assert_eq!((attempts.value, attempts.unit.as_str()), (1.0, "{attempt}"));
    let mut hs_ok = on_client.to_vec();
    hs_ok.push((key::OUTCOME, "ok"));
    assert_eq!(point(&pts, metric::HANDSHAKE_DURATION, &hs_ok).count, 1);

    let dropped = point(
        &pts,
        metric::DROPPED,
        &[
            (key::COMPONENT, &slow_name),
            (key::PATH, "/slow"),
            (key::REASON, "overflow"),
            (key::POLICY, "drop-new"),
        ],
    );
    assert_eq!(dropped.value, overflow_dropped as f64);
    assert_eq!(dropped.unit, "{message}");

    // The server's totals are the sum of its paths.
    let total = server.stats();
    let per_path: f64 = pts
        .iter()
        .filter(|p| p.name == metric::MESSAGES_IN && p.attr(key::COMPONENT) == Some(srv))
        .map(|p| p.value)
        .sum();
    assert_eq!(total.messages_in as f64, per_path);
    drop((client, slow, server));
}

#[test]
fn component_names_default_like_the_original() {
    let otel = otel();
    let server = RxWSServer::<String>::bind_with_config(ANY_PORT, Text, quiet()).unwrap();
    // Asked for port 0: the name carries the port bound.
    let port = server.local_addr().port();
    assert_eq!(server.name(), format!("RxWSServer:127.0.0.1:{port}"));
    let client = RxWSClient::<String>::with_config(local(port, "/chat"), Text, quiet()).unwrap();
    assert_eq!(
        client.name(),
        format!("RxWSClient:ws://127.0.0.1:{port}/chat")
    );
    let group = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    assert_eq!(
        group.name(),
        format!("RxWSClientGroup:ws://127.0.0.1:{port}")
    );
    assert!(group.wait_connected("/a", WAIT).unwrap());
    let child = format!("{}:/a", group.name());
    assert!(client.wait_connected(WAIT));

    let names = [server.name(), client.name(), group.name(), child.as_str()];
    let opened = |component: &str, path: &str| {
        otel.records_of(&names).iter().any(|r| {
            r.name == event::CONNECTION_OPENED
                && r.attr(key::COMPONENT) == Some(component)
                && r.attr(key::PATH) == Some(path)
        })
    };
    assert!(wait_until(WAIT, || opened(&child, "/a")
        && opened(client.name(), "/chat")));
    let recs = otel.records_of(&names);
    let addr = server.local_addr().to_string();
    one(
        &recs,
        event::SERVER_STARTED,
        &[(key::COMPONENT, server.name()), (key::ADDR, &addr)],
    );
    one(
        &recs,
        event::GROUP_PATH_OPENED,
        &[(key::COMPONENT, group.name()), (key::PATH, "/a")],
    );
    let pts = otel.points_of(&[child.as_str()]);
    point(
        &pts,
        metric::CONNECT_ATTEMPTS,
        &[(key::COMPONENT, &child), (key::PATH, "/a")],
    );
}

#[test]
fn failed_and_timed_out_handshakes_are_logged_and_timed() {
    let otel = otel();
    let srv = "telemetry-handshake-server";
    let cfg = quiet()
        .name(srv)
        .handshake_timeout(Duration::from_millis(300));
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    // A plain HTTP request gets 426.
    let mut http = TcpStream::connect(server.local_addr()).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    http.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 426"), "{resp}");
    // A peer that never sends its request times out.
    let idle = TcpStream::connect(server.local_addr()).unwrap();
    let timed_out = || !named(&otel.records_of(&[srv]), event::HANDSHAKE_TIMED_OUT).is_empty();
    assert!(wait_until(WAIT, timed_out));

    let recs = otel.records_of(&[srv]);
    let http_peer = http.local_addr().unwrap().to_string();
    let failed = one(
        &recs,
        event::HANDSHAKE_FAILED,
        &[(key::PEER, &http_peer), (key::STATUS, "426")],
    );
    assert_eq!(failed.level, Level::Info);
    let idle_peer = idle.local_addr().unwrap().to_string();
    let late = one(
        &recs,
        event::HANDSHAKE_TIMED_OUT,
        &[(key::PEER, &idle_peer)],
    );
    assert_eq!(late.level, Level::Info);
    let late_ms: f64 = late.attr(key::DURATION_MS).unwrap().parse().unwrap();
    // It waited for the 300 ms handshake timeout (less a timer tick).
    assert!(late_ms >= 250.0, "{late_ms}");
    let failed_ms: f64 = failed.attr(key::DURATION_MS).unwrap().parse().unwrap();

    // Timed, without a path (the peer's choice, not an attribute of failures).
    let pts = otel.points_of(&[srv]);
    for (outcome, logged_ms) in [("failed", failed_ms), ("timeout", late_ms)] {
        let p = point(
            &pts,
            metric::HANDSHAKE_DURATION,
            &[(key::COMPONENT, srv), (key::OUTCOME, outcome)],
        );
        assert_eq!(p.count, 1, "{outcome}");
        assert_eq!(p.attr(key::PATH), None);
        assert_same_duration(logged_ms, p.value);
    }
}

#[test]
fn connect_retries_are_logged_with_their_delay_and_counted() {
    let otel = otel();
    let port = {
        let s = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
        s.local_addr().port()
    };
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .jitter(0.0)
        .max_retries(Some(2));
    let client =
        RxWSClient::<String>::with_config(local(port, "/retry"), Text, quiet().retry(retry))
            .unwrap();
    let cli = client.name().to_owned();
    let gave_up = || !named(&otel.records_of(&[&cli]), event::RETRIES_EXHAUSTED).is_empty();
    assert!(wait_until(WAIT, gave_up));
    assert!(wait_until(WAIT, || states(&otel.records_of(&[&cli]), &cli)
        .last()
        == Some(&"closed".to_owned())));

    let recs = otel.records_of(&[&cli]);
    // Without jitter: 10 ms, then twice that.
    for (attempt, delay_ms) in [("1", "10"), ("2", "20")] {
        let r = one(&recs, event::CONNECT_RETRY, &[(key::ATTEMPT, attempt)]);
        assert_eq!(r.level, Level::Info);
        assert_eq!(r.attr(key::PATH), Some("/retry"));
        assert_eq!(r.attr(key::DELAY_MS), Some(delay_ms));
        let error = r.attr(key::ERROR).unwrap_or_default();
        assert!(error.contains("Connection refused"), "{error}");
    }
    let last = one(&recs, event::RETRIES_EXHAUSTED, &[(key::ATTEMPT, "3")]);
    assert_eq!(last.level, Level::Warn);
    // States are logged when they change (the state stream itself emits every attempt).
    assert_eq!(
        states(&recs, &cli),
        ["connecting", "reconnecting", "closed"]
    );

    let pts = otel.points_of(&[&cli]);
    let on_client = [(key::COMPONENT, cli.as_str()), (key::PATH, "/retry")];
    assert_eq!(point(&pts, metric::CONNECT_ATTEMPTS, &on_client).value, 3.0);
    let mut failed = on_client.to_vec();
    failed.push((key::OUTCOME, "failed"));
    assert_eq!(point(&pts, metric::HANDSHAKE_DURATION, &failed).count, 3);
}

#[test]
fn server_paths_beyond_the_limit_share_one_other_entry() {
    let otel = otel();
    let srv = "telemetry-paths-server";
    let server =
        RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().name(srv)).unwrap();
    // The id of a connection that is gone: replies to it are dropped and counted per path.
    let ids = Arc::new(Mutex::new(Vec::new()));
    let i = ids.clone();
    server.subscribe_events(move |e: ConnectionEvent| {
        if e.kind == ConnectionEventKind::Opened {
            i.lock().push(e.id)
        }
    });
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/"), Text, quiet())
            .unwrap();
    assert!(client.wait_connected(WAIT));
    client.dispose();
    assert!(wait_until(WAIT, || server.connection_count() == 0
        && ids.lock().len() == 1));
    let gone = ids.lock()[0];
    for i in 0..300 {
        server.on_next(TaggedData::to_conn(format!("/p{i}"), gone, "x".to_owned()));
    }
    assert_eq!(server.stats().dropped, 300);

    // "/" and /p0../p254 have their own counters (256); /p255../p299 share "_other".
    let pts = otel.points_of(&[srv]);
    let dropped: Vec<_> = pts
        .iter()
        .filter(|p| p.name == metric::DROPPED && p.attr(key::REASON) == Some("disconnected"))
        .collect();
    assert_eq!(dropped.len(), 257);
    let other = point(
        &pts,
        metric::DROPPED,
        &[(key::PATH, "_other"), (key::REASON, "disconnected")],
    );
    assert_eq!(other.value, 45.0);
    assert_eq!(
        point(
            &pts,
            metric::DROPPED,
            &[(key::PATH, "/p254"), (key::REASON, "disconnected")]
        )
        .value,
        1.0
    );
    let recs = otel.records_of(&[srv]);
    let limit = one(&recs, event::PATH_LIMIT, &[]);
    assert_eq!(limit.level, Level::Warn);
    assert_eq!(limit.attr(key::PATH), Some("/p255"));
    assert_eq!(limit.attr(key::LIMIT), Some("256"));
}
