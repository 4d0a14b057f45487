//! Gateway connection churn and shutdown: nothing left in either table, every thread joined.
//! One test per binary: it counts the process's threads.

mod support;

use std::time::Duration;

use rxplus::gateway::{DefaultFrame, GatewayConfig, GatewayNode};
use support::*;

type Node = GatewayNode<DefaultFrame>;

fn cfg() -> GatewayConfig {
    GatewayConfig::default().host("127.0.0.1").port(0)
}

#[test]
fn five_hundred_connect_disconnect_cycles_leave_nothing_behind() {
    let baseline = live_threads();
    let a = Node::new(cfg()).unwrap();
    a.start().unwrap();
    let b = Node::new(cfg()).unwrap();
    let url = format!("ws://{}/", a.local_addr().unwrap());
    let with_a = live_threads();
    for cycle in 0..500 {
        let id = b.connect_to(&url).unwrap();
        assert!(b.wait_connected(id, WAIT), "cycle {cycle}");
        b.send_to(id, DefaultFrame::data("ping")).unwrap();
        b.disconnect(id).unwrap();
        assert!(
            wait_until(WAIT, || b.connections().is_empty()
                && a.connections().is_empty()),
            "cycle {cycle}: a {:?} b {:?}",
            a.connections(),
            b.connections()
        );
    }
    // Only the accept and timer threads are left: every link's reader and writer exited.
    assert!(
        wait_until(WAIT, || a.thread_count() == 2 && b.thread_count() == 1),
        "a {} b {}",
        a.thread_count(),
        b.thread_count()
    );
    // Each node's timer thread started with its first link and stays until stop.
    assert!(
        wait_until(Duration::from_secs(5), || live_threads() <= with_a + 2),
        "{}",
        thread_report()
    );
    let s = a.stats();
    assert_eq!(s.ws.connections_opened, 500);
    assert_eq!(s.ws.connections_closed, 500);
    assert_eq!(s.connections, 0);

    // stop() joins: right after it returns, no thread of either node is alive.
    let id = b.connect_to(&url).unwrap();
    assert!(b.wait_connected(id, WAIT));
    a.stop();
    b.stop();
    assert_eq!(live_threads(), baseline, "{}", thread_report());
    assert_eq!(a.thread_count() + b.thread_count(), 0);
}
