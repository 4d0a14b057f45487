//! Telemetry at INFO (its own process: `log`'s level is process-wide): nothing is logged per
//! message, so the records of a connection do not grow with the number of messages it carries
//! or drops. DEBUG records are checked in `tests/telemetry.rs`.

mod capture;
mod support;

use capture::{named, Otel};
use log::{Level, LevelFilter};
use rxplus::telemetry::{event, key};
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text};
use rxplus::{Notification, OverflowStrategy};
use support::*;

fn otel() -> &'static Otel {
    capture::otel(LevelFilter::Info)
}

const PER_MESSAGE: [&str; 4] = [
    event::MESSAGE_RECEIVED,
    event::MESSAGE_SENT,
    event::OVERFLOW_DROP,
    event::MESSAGE_DROPPED,
];

#[test]
fn at_info_the_records_do_not_grow_with_messages_or_drops() {
    let otel = otel();
    let srv = "levels-server";
    let server =
        RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().name(srv)).unwrap();
    // Echo, except on /slow, whose items wait at a gate (its socket fills up).
    let (gate, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let h = server.handle();
    server.subscribe(move |m: TaggedData<String>| {
        if &*m.tag == "/slow" {
            // Nothing is ever sent: this waits until the gate is dropped.
            while gate_rx.recv().is_ok() {}
        } else {
            h.on_next(m.reply(m.data.clone()));
        }
    });
    let port = server.local_addr().port();
    let client = RxWSClient::<String>::with_config(local(port, "/echo"), Text, quiet()).unwrap();
    let cli = client.name().to_owned();
    let replies = client.stream();
    assert!(client.wait_connected(WAIT));
    let exchange = |n: usize| {
        for i in 0..n {
            client.on_next(i.to_string());
        }
        for _ in 0..n {
            match replies.recv_timeout(WAIT) {
                Ok(Notification::Next(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    };

    // The replies come through the reader, which starts after the open records are logged.
    exchange(10);
    let after_10 = otel.records_of(&[srv, &cli]);
    exchange(1_000);
    let after_1010 = otel.records_of(&[srv, &cli]);
    assert_eq!(
        after_10.len(),
        after_1010.len(),
        "records grew with messages: {:#?}",
        &after_1010[after_10.len()..]
    );
    for name in [event::CONNECTION_OPENED, event::HANDSHAKE_COMPLETED] {
        assert_eq!(
            named(&after_1010, name).len(),
            2,
            "{name}: server and client"
        );
    }

    // Overflow drops: a drop-new client with room for one queued message, stalled peer.
    let slow = RxWSClient::<String>::with_config(
        local(port, "/slow"),
        Text,
        quiet().outbound(1, OverflowStrategy::DropNew),
    )
    .unwrap();
    let slow_name = slow.name().to_owned();
    assert!(slow.wait_connected(WAIT));
    let connected = || {
        otel.records_of(&[&slow_name])
            .iter()
            .any(|r| r.name == event::CLIENT_STATE && r.attr(key::STATE) == Some("connected"))
    };
    assert!(wait_until(WAIT, connected));
    let before_drops = otel.records_of(&[&slow_name]).len();
    let pad = "x".repeat(64 << 10);
    assert!(wait_until(WAIT, || {
        slow.on_next(pad.clone());
        slow.stats().overflow_dropped > 100
    }));
    assert_eq!(otel.records_of(&[&slow_name]).len(), before_drops);
    drop(gate);

    // Nothing below INFO reached the logger, and no per-message event at all.
    client.on_completed();
    slow.dispose();
    // "Connection closed" is a connection's last step: two on the server, one per client.
    let closed = || {
        named(
            &otel.records_of(&[srv, &cli, &slow_name]),
            event::CONNECTION_CLOSED,
        )
        .len()
            == 4
    };
    assert!(wait_until(WAIT, closed));
    let all = otel.records_of(&[srv, &cli, &slow_name]);
    assert!(all.iter().all(|r| r.level <= Level::Info), "{all:#?}");
    for name in PER_MESSAGE {
        assert!(named(&all, name).is_empty(), "{name} logged at INFO");
    }
}
