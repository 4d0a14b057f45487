//! `rxplus::telemetry::install` (cargo feature `telemetry`): it bridges `log`, installs the
//! meter provider, refuses a second logger, and its guard flushes on drop. Its own process:
//! it installs the process's one `log` logger.
//!
//! Runs under the README's `cargo test --release --all-features` (and `.ci/run`).
#![cfg(feature = "telemetry")]

mod capture;
mod support;

use capture::{named, point, Otel};
use log::LevelFilter;
use rxplus::telemetry::{event, key, metric};
use rxplus::ws::{RxWSClient, RxWSServer, Text};
use rxplus::{Error, Notification};
use support::*;

#[test]
fn install_bridges_log_and_metrics_refuses_a_second_logger_and_flushes_on_drop() {
    let otel = Otel::new();
    let guard = rxplus::telemetry::install(otel.logger.clone(), otel.meter.clone()).unwrap();
    assert_eq!(log::max_level(), LevelFilter::Info);

    // `log` allows one logger per process: a second setup is a config error.
    let again = Otel::new();
    let second = rxplus::telemetry::install(again.logger.clone(), again.meter.clone());
    assert!(
        matches!(
            second,
            Err(Error::Config {
                field: "logger",
                ..
            })
        ),
        "{second:?}"
    );
    assert!(matches!(
        rxplus::telemetry::init_stdout(),
        Err(Error::Config {
            field: "logger",
            ..
        })
    ));

    let srv = "install-server";
    let server = echo_server_named(srv);
    let client =
        RxWSClient::<String>::with_config(local(server.local_addr().port(), "/i"), Text, quiet())
            .unwrap();
    let replies = client.stream();
    assert!(client.wait_connected(WAIT));
    for i in 0..3 {
        client.on_next(i.to_string());
    }
    for _ in 0..3 {
        assert!(matches!(
            replies.recv_timeout(WAIT),
            Ok(Notification::Next(_))
        ));
    }
    client.on_completed();
    // "Connection closed" is a connection's last step (after its counters).
    let closed = || !named(&otel.records_of(&[srv]), event::CONNECTION_CLOSED).is_empty();
    assert!(wait_until(WAIT, closed));

    // Dropping the guard exports the metrics once more and stops `log`.
    drop(guard);
    assert_eq!(log::max_level(), LevelFilter::Off);
    let pts = otel.last_points_of(&[srv]);
    let on_path = [(key::COMPONENT, srv), (key::PATH, "/i")];
    assert_eq!(point(&pts, metric::MESSAGES_IN, &on_path).value, 3.0);
    assert_eq!(point(&pts, metric::MESSAGES_OUT, &on_path).value, 3.0);
    let recs = otel.records_of(&[srv]);
    assert_eq!(named(&recs, event::CONNECTION_OPENED).len(), 1);
    assert_eq!(named(&recs, event::CONNECTION_CLOSED).len(), 1);
    // INFO: no per-message records.
    assert!(named(&recs, event::MESSAGE_RECEIVED).is_empty());
}

fn echo_server_named(name: &str) -> RxWSServer<String> {
    let s = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet().name(name)).unwrap();
    let h = s.handle();
    s.subscribe(move |m: rxplus::ws::TaggedData<String>| h.on_next(m.reply(m.data.clone())));
    s
}
