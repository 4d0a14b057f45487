//! 200 start/dispose cycles of each component; the process's thread count must return to its
//! baseline. One test in this binary, so no other test's threads disturb the count.

mod support;

use rxplus::ws::{RxWSClient, RxWSClientGroup, RxWSServer, TaggedData, Text};
use support::*;

#[test]
fn thread_count_returns_to_baseline_after_many_cycles() {
    let base = thread_count();

    // Server alone, and a server with a live connection.
    for _ in 0..200 {
        let s = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
        s.dispose();
    }
    assert_eq!(
        wait_threads_at_most(base),
        base,
        "server cycles leaked threads"
    );

    let server = echo_server::<String>(Text);
    let port = server.local_addr().port();
    let with_server = thread_count();
    assert_eq!(with_server, base + 1, "one accept thread per idle server");

    // Clients: connect, exchange, dispose; half of them gracefully.
    for i in 0..200 {
        let c = RxWSClient::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        assert!(c.wait_connected(WAIT));
        if i == 0 {
            // Measured once: a connected client runs 2 threads, and the server 2 per connection.
            assert!(
                wait_until(WAIT, || thread_count() == with_server + 4),
                "{}",
                thread_count()
            );
        }
        c.on_next("x".into());
        if i % 2 == 0 {
            c.on_completed();
        } else {
            c.dispose();
        }
    }
    assert!(wait_until(WAIT, || server.connection_count() == 0));
    assert_eq!(
        wait_threads_at_most(with_server),
        with_server,
        "client cycles leaked threads"
    );

    // Groups with two paths.
    for _ in 0..200 {
        let g = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
        g.wait_connected("/a", WAIT).unwrap();
        g.on_next(TaggedData::new("/b", "y".to_string()));
        g.dispose();
    }
    assert!(wait_until(WAIT, || server.connection_count() == 0));
    assert_eq!(
        wait_threads_at_most(with_server),
        with_server,
        "group cycles leaked threads"
    );

    server.dispose();
    assert_eq!(
        wait_threads_at_most(base),
        base,
        "server dispose leaked threads"
    );
}
