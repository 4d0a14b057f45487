//! The public front end of every component, over real loopback sockets: closures without
//! annotations, the subscription contract, `send` handing the item back, the errors stream
//! (connect failures, undelivered items), state changes only, connection ids, user code never
//! under a lock, `Debug` everywhere.

mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rxplus::ws::{
    ConnId, ConnectionEventKind, ConnectionState, Datatype, Datatypes, RetryPolicy, RxWSClient,
    RxWSClientGroup, RxWSServer, TaggedData, Text, WSConfig,
};
use rxplus::{Error, FnObserver, Notification};
use support::*;

/// A port nothing listens on: bind port 0, note the port, close the listener.
fn free_port() -> u16 {
    let l = TcpListener::bind(ANY_PORT).unwrap();
    l.local_addr().unwrap().port()
}

/// Quick retries, no jitter: attempts follow each other within tens of milliseconds.
fn fast_retry() -> WSConfig {
    quiet().retry(
        RetryPolicy::default()
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50))
            .jitter(0.0),
    )
}

fn text_server() -> RxWSServer<String> {
    RxWSServer::<String>::bind_with_config(ANY_PORT, Text, quiet()).unwrap()
}

fn text_client(port: u16, path: &str) -> RxWSClient<String> {
    RxWSClient::<String>::with_config(local(port, path), Text, quiet()).unwrap()
}

/// Fails the test without running the components' teardown: after a deadlock, `Drop` (which
/// joins every thread) would hang the test instead of failing it.
fn fail_leaking<T>(leak: T, msg: String) -> ! {
    std::mem::forget(leak);
    panic!("{msg}");
}

/// Counts calls; the count is shared with the closure it hands out.
fn counter() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (c.clone(), c)
}

fn load(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

// 1. Closures without annotations.

#[test]
fn closures_need_no_type_annotations_and_work() {
    let server = text_server();
    let h = server.handle();
    server.subscribe(move |m| h.on_next(m.reply(m.data.clone())));
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    server.subscribe_events(move |e| ev.lock().push((e.kind, e.path)));
    let server_errors = Arc::new(Mutex::new(Vec::new()));
    let se = server_errors.clone();
    server.subscribe_errors(move |e| se.lock().push(e.to_string()));

    let port = server.local_addr().port();
    let client = text_client(port, "/echo");
    let states = Arc::new(Mutex::new(Vec::new()));
    let st = states.clone();
    client.subscribe_state(move |s| st.lock().push(s));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    client.subscribe(move |m| g.lock().push(m));
    let client_errors = Arc::new(Mutex::new(Vec::new()));
    let ce = client_errors.clone();
    client.subscribe_errors(move |e| ce.lock().push(e.to_string()));

    assert!(client.wait_connected(WAIT));
    client.send("hello".to_string()).unwrap();
    assert!(
        wait_until(WAIT, || got.lock().as_slice() == ["hello"]),
        "echo: {:?}",
        got.lock()
    );
    assert!(
        wait_until(WAIT, || states.lock().contains(&ConnectionState::Connected)),
        "{:?}",
        states.lock()
    );
    assert!(
        wait_until(WAIT, || events
            .lock()
            .contains(&(ConnectionEventKind::Opened, "/echo".to_string()))),
        "{:?}",
        events.lock()
    );

    // The group too: inbound, errors.
    let group = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let group_got = Arc::new(Mutex::new(Vec::new()));
    let gg = group_got.clone();
    group.subscribe(move |m| gg.lock().push((m.tag.to_string(), m.data)));
    let group_errors = Arc::new(Mutex::new(Vec::new()));
    let ge = group_errors.clone();
    group.subscribe_errors(move |e| ge.lock().push(e.to_string()));
    assert!(group.wait_connected("/g", WAIT).unwrap());
    group
        .send(TaggedData::new("/g", "to g".to_string()))
        .unwrap();
    assert!(
        wait_until(WAIT, || group_got.lock().as_slice()
            == [("/g".to_string(), "to g".to_string())]),
        "{:?}",
        group_got.lock()
    );
    assert!(
        server_errors.lock().is_empty(),
        "{:?}",
        server_errors.lock()
    );
    assert!(
        client_errors.lock().is_empty(),
        "{:?}",
        client_errors.lock()
    );
    assert!(group_errors.lock().is_empty(), "{:?}", group_errors.lock());
}

// 2. The subscription contract.

#[test]
fn subscriptions_last_until_unsubscribed_and_guards_unsubscribe_on_drop() {
    let server = text_server();
    let (ignored, i) = counter();
    let _ = server.subscribe(move |_| {
        i.fetch_add(1, Ordering::SeqCst);
    });
    let (bare, b) = counter();
    server.subscribe(move |_| {
        b.fetch_add(1, Ordering::SeqCst);
    });
    let (dropped, d) = counter();
    let sub = server.subscribe(move |_| {
        d.fetch_add(1, Ordering::SeqCst);
    });
    drop(sub); // dropping a Subscription keeps the subscriber
    let (stopped, s) = counter();
    let to_stop = server.subscribe(move |_| {
        s.fetch_add(1, Ordering::SeqCst);
    });
    let (guarded, g) = counter();
    let guard = server
        .subscribe(move |_| {
            g.fetch_add(1, Ordering::SeqCst);
        })
        .guard();
    assert!(guard.is_active());
    assert!(to_stop.is_active());

    let client = text_client(server.local_addr().port(), "/sub");
    assert!(client.wait_connected(WAIT));
    for n in 0..3 {
        client.send(format!("before {n}")).unwrap();
    }
    let all = [&ignored, &bare, &dropped, &stopped, &guarded];
    assert!(
        wait_until(WAIT, || all.iter().all(|c| load(c) == 3)),
        "{:?}",
        all.map(|c| load(c))
    );

    to_stop.unsubscribe();
    drop(guard);
    // Items from one connection are delivered one after another: once the still-subscribed
    // markers have seen the fence, every subscriber has had its chance at the items before it.
    for n in 0..2 {
        client.send(format!("after {n}")).unwrap();
    }
    client.send("fence".to_string()).unwrap();
    let markers = [&ignored, &bare, &dropped];
    assert!(
        wait_until(WAIT, || markers.iter().all(|c| load(c) == 6)),
        "ignored, bare, dropped: {:?}",
        markers.map(|c| load(c))
    );
    assert_eq!(load(&stopped), 3, "delivered after unsubscribe()");
    assert_eq!(load(&guarded), 3, "delivered after the guard was dropped");
}

// 3. `send` hands the item back.

#[test]
fn client_send_while_not_connected_hands_the_item_back() {
    let client =
        RxWSClient::<String>::with_config(local(free_port(), "/"), Text, fast_retry()).unwrap();
    let e = client.send("kept".to_string()).unwrap_err();
    assert!(matches!(e.error(), Error::NotConnected { .. }), "{e:?}");
    assert_eq!(e.into_item(), Some("kept".to_string()));
}

#[test]
fn server_send_without_connection_on_the_path_hands_the_item_back() {
    let server = text_server();
    let item = TaggedData::new("/nobody", "kept".to_string());
    let e = server.send(item.clone()).unwrap_err();
    assert!(matches!(e.error(), Error::NoConnection { .. }), "{e:?}");
    assert_eq!(e.into_item(), Some(item));
}

#[test]
fn server_send_to_a_gone_connection_id_hands_the_item_back() {
    let server = text_server();
    let port = server.local_addr().port();
    let first = text_client(port, "/p");
    assert!(first.wait_connected(WAIT));
    assert!(wait_until(WAIT, || server.connections("/p").len() == 1));
    let old = server.connections("/p")[0];
    // The other connection on the same path stays: the id, not the path, must decide.
    let second = text_client(port, "/p");
    let second_got = Arc::new(Mutex::new(Vec::new()));
    let sg = second_got.clone();
    second.subscribe(move |m| sg.lock().push(m));
    assert!(second.wait_connected(WAIT));
    assert!(wait_until(WAIT, || server.connections("/p").len() == 2));

    first.dispose();
    assert!(
        wait_until(WAIT, || server.connections("/p").len() == 1),
        "{:?}",
        server.connections("/p")
    );
    assert!(!server.connections("/p").contains(&old));

    let item = TaggedData::to_conn("/p", old, "late".to_string());
    let e = server.send(item.clone()).unwrap_err();
    assert!(matches!(e.error(), Error::NoConnection { .. }), "{e:?}");
    assert_eq!(e.into_item(), Some(item));

    server
        .send(TaggedData::new("/p", "after".to_string()))
        .unwrap();
    assert!(wait_until(WAIT, || !second_got.lock().is_empty()));
    assert_eq!(second_got.lock().as_slice(), ["after"]);
}

#[test]
fn send_after_dispose_is_already_closed_with_the_item() {
    fn check<T: PartialEq + std::fmt::Debug + Clone>(
        what: &str,
        item: T,
        send: impl FnOnce(T) -> Result<(), rxplus::SendError<T>>,
    ) {
        let e = send(item.clone()).expect_err(what);
        assert!(
            matches!(e.error(), Error::AlreadyClosed { .. }),
            "{what}: {e:?}"
        );
        assert_eq!(e.into_item(), Some(item), "{what}");
    }

    let server = text_server();
    let port = server.local_addr().port();
    let client = text_client(port, "/c");
    let group = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    assert!(client.wait_connected(WAIT));
    assert!(group.wait_connected("/g", WAIT).unwrap());

    client.dispose();
    check("client", "c".to_string(), |x| client.send(x));
    group.dispose();
    check("group", TaggedData::new("/g", "g".to_string()), |x| {
        group.send(x)
    });
    server.dispose();
    check("server", TaggedData::new("/c", "s".to_string()), |x| {
        server.send(x)
    });

    // Handles whose component is gone.
    let server = text_server();
    let port = server.local_addr().port();
    let server_handle = server.handle();
    let client_handle = text_client(port, "/c").handle();
    let group = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    let group_handle = group.handle();
    drop(group);
    drop(server);
    check("client handle", "c".to_string(), |x| client_handle.send(x));
    check(
        "group handle",
        TaggedData::new("/g", "g".to_string()),
        |x| group_handle.send(x),
    );
    check(
        "server handle",
        TaggedData::new("/c", "s".to_string()),
        |x| server_handle.send(x),
    );
}

// 4. Connection failures on the errors stream.

#[test]
fn connect_failures_report_attempt_and_cause_in_order() {
    let (tx, rx) = crossbeam_channel::unbounded();
    // Subscribed before the connection thread starts: attempt 1 cannot be missed.
    let client =
        RxWSClient::<String>::with_setup(local(free_port(), "/"), Text, fast_retry(), |c| {
            c.subscribe_errors(move |e| tx.send(e).unwrap());
        })
        .unwrap();
    for want in 1..=3u32 {
        let e = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no error for attempt {want}"));
        let Error::ConnectFailed {
            attempt, source, ..
        } = &e
        else {
            panic!("attempt {want}: {e:?}")
        };
        assert_eq!(*attempt, want, "{e}");
        // The field: an I/O error, connection refused.
        match &**source {
            Error::Io { source, .. } => {
                assert_eq!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{e:?}"
                )
            }
            other => panic!("attempt {want}: cause {other:?}"),
        }
        // The same cause through std::error::Error::source.
        let cause = std::error::Error::source(&e).expect("ConnectFailed without a source");
        // thiserror hands out the field itself: a Box<rxplus::Error>.
        let cause = cause.downcast_ref::<Box<Error>>().unwrap_or_else(|| {
            panic!("attempt {want}: source() is not the boxed Error: {cause:?}")
        });
        assert!(matches!(**cause, Error::Io { .. }), "{cause:?}");
    }
    client.dispose();
}

// 5. State changes only.

#[test]
fn state_stream_emits_only_changes_while_retrying() {
    let states = Arc::new(Mutex::new(Vec::new()));
    let st = states.clone();
    let client =
        RxWSClient::<String>::with_setup(local(free_port(), "/"), Text, fast_retry(), |c| {
            c.subscribe_state(move |s| st.lock().push(s));
        })
        .unwrap();
    assert!(
        wait_until(WAIT, || client.stats().connect_attempts >= 4),
        "{:?}",
        client.stats()
    );
    let seen = states.lock().clone();
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "repeated state: {seen:?}"
    );
    let count = |s| seen.iter().filter(|x| **x == s).count();
    assert_eq!(count(ConnectionState::Connecting), 1, "{seen:?}");
    assert_eq!(count(ConnectionState::Reconnecting), 1, "{seen:?}");
    assert_eq!(count(ConnectionState::Connected), 0, "{seen:?}");
    client.dispose();
    let seen = states.lock().clone();
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "repeated state: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&ConnectionState::Closed), "{seen:?}");
}

// 6. Undelivered items at completion.

#[test]
fn completion_reports_items_it_could_not_deliver() {
    #[derive(Debug, PartialEq)]
    enum Seen {
        Undelivered(usize),
        OtherError,
        Completed,
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let cfg = fast_retry()
        .buffer_while_disconnected(true)
        .handshake_timeout(Duration::from_millis(300));
    let client = RxWSClient::<String>::with_setup(local(free_port(), "/"), Text, cfg, |c| {
        c.subscribe_errors(move |e| {
            l1.lock().push(match e {
                Error::Undelivered { count, .. } => Seen::Undelivered(count),
                _ => Seen::OtherError,
            })
        });
        c.subscribe_observer(FnObserver::new(|_| {}).on_completed(move || {
            l2.lock().push(Seen::Completed);
        }));
    })
    .unwrap();
    for n in 0..5 {
        client.send(format!("item {n}")).unwrap();
    }
    assert_eq!(client.queued(), 5);
    client.on_completed();
    assert!(
        wait_until(WAIT, || log.lock().contains(&Seen::Completed)),
        "{:?}",
        log.lock()
    );
    let log = log.lock();
    let relevant: Vec<&Seen> = log.iter().filter(|s| **s != Seen::OtherError).collect();
    assert_eq!(
        relevant,
        [&Seen::Undelivered(5), &Seen::Completed],
        "{log:?}"
    );
}

// 7. Connection ids.

#[test]
fn conn_id_round_trips_through_its_text_form() {
    let server = echo_server::<String>(Text);
    let client = text_client(server.local_addr().port(), "/id");
    assert!(client.wait_connected(WAIT));
    let id = client.conn_id().expect("connected client without conn_id");
    assert_eq!(id.to_string().parse::<ConnId>().unwrap(), id);
    assert_eq!(
        id.as_uuid()
            .hyphenated()
            .to_string()
            .parse::<ConnId>()
            .unwrap(),
        id
    );
    assert!(wait_until(WAIT, || server.connections("/id").len() == 1));
    let server_side = server.connections("/id")[0];
    assert_eq!(
        server_side.to_string().parse::<ConnId>().unwrap(),
        server_side
    );
    assert!("not-an-id".parse::<ConnId>().is_err());
}

#[test]
fn client_conn_id_is_its_own_current_connection() {
    // Each side names a connection itself (ids are not exchanged in the handshake): the
    // client's id is set while connected, new after a reconnect, and gone once disposed.
    let server = text_server();
    let client = text_client(server.local_addr().port(), "/id");
    assert!(client.wait_connected(WAIT));
    let id = client.conn_id().expect("connected client without conn_id");
    assert_eq!(id.to_string().parse::<ConnId>().unwrap(), id);
    client.dispose();
    assert_eq!(client.conn_id(), None);
}

// 8. No user code under a lock.

#[test]
fn server_datatype_chooser_may_call_back_into_the_server() {
    type Server = RxWSServer<String>;
    let me: Arc<OnceLock<(Weak<Server>, rxplus::ws::ServerHandle<String>)>> =
        Arc::new(OnceLock::new());
    // What the chooser saw: connections on /x, and the result of its send.
    let seen = Arc::new(Mutex::new(Vec::<(usize, bool)>::new()));
    let (m, s) = (me.clone(), seen.clone());
    let chooser = Datatypes::per_path(move |path| -> Arc<dyn Datatype<String>> {
        if path == "/new" {
            if let Some((server, handle)) = m.get() {
                let on_x = server.upgrade().map_or(0, |s| s.connections("/x").len());
                let sent = handle
                    .send(TaggedData::new("/x", "from the chooser".to_string()))
                    .is_ok();
                s.lock().push((on_x, sent));
            }
        }
        Arc::new(Text)
    });
    let server = Arc::new(Server::bind_with_config(ANY_PORT, chooser, quiet()).unwrap());
    let h = server.handle();
    server.subscribe(move |m| h.on_next(m.reply(m.data.clone())));
    me.set((Arc::downgrade(&server), server.handle())).unwrap();
    let port = server.local_addr().port();

    let x = text_client(port, "/x");
    let x_got = Arc::new(Mutex::new(Vec::new()));
    let xg = x_got.clone();
    x.subscribe(move |m| xg.lock().push(m));
    assert!(x.wait_connected(WAIT));
    assert!(wait_until(WAIT, || server.connections("/x").len() == 1));

    let new = text_client(port, "/new");
    let new_got = Arc::new(Mutex::new(Vec::new()));
    let ng = new_got.clone();
    new.subscribe(move |m| ng.lock().push(m));
    let echoed = new.wait_connected(WAIT) && {
        new.send("ping".to_string()).unwrap();
        wait_until(WAIT, || new_got.lock().as_slice() == ["ping"])
    };
    if !echoed {
        fail_leaking(
            (server, x, new),
            format!(
                "no echo on /new within {WAIT:?}: the chooser's calls into the server \
                 deadlocked? chooser saw {:?}",
                seen.lock()
            ),
        );
    }
    assert_eq!(seen.lock().as_slice(), [(1, true)]);
    assert!(
        wait_until(WAIT, || x_got.lock().as_slice() == ["from the chooser"]),
        "{:?}",
        x_got.lock()
    );
}

#[test]
fn group_datatype_chooser_may_call_back_into_the_group_under_concurrent_open_path() {
    let server = text_server();
    let opened = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let o = opened.clone();
    server.subscribe_events(move |e| {
        if e.kind == ConnectionEventKind::Opened {
            *o.lock().entry(e.path).or_default() += 1;
        }
    });
    type Group = RxWSClientGroup<String>;
    let me: Arc<OnceLock<(Weak<Group>, rxplus::ws::GroupHandle<String>)>> =
        Arc::new(OnceLock::new());
    // Per chooser call: the path, whether paths() answered, and the send's outcome.
    type Call = (String, bool, Result<(), String>);
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let (m, c) = (me.clone(), calls.clone());
    let chooser = Datatypes::per_path(move |path| -> Arc<dyn Datatype<String>> {
        if path.starts_with("/new") {
            if let Some((group, handle)) = m.get() {
                let paths = group.upgrade().map(|g| g.paths());
                // Accepted, or refused because the new /side client is not connected yet
                // (buffering is off): either way the call returned.
                let sent = match handle.send(TaggedData::new("/side", format!("for {path}"))) {
                    Ok(()) => Ok(()),
                    Err(e) => match e.error() {
                        Error::NotConnected { .. } => Ok(()),
                        other => Err(other.to_string()),
                    },
                };
                c.lock().push((path.to_string(), paths.is_some(), sent));
            }
        }
        Arc::new(Text)
    });
    let group = Arc::new(
        Group::with_config(local(server.local_addr().port(), "/"), chooser, quiet()).unwrap(),
    );
    me.set((Arc::downgrade(&group), group.handle())).unwrap();

    let paths = ["/new0", "/new1", "/new2", "/new3"];
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let barrier = Arc::new(Barrier::new(8));
    for t in 0..8 {
        let (g, b, tx) = (group.clone(), barrier.clone(), done_tx.clone());
        let path = paths[t % 4];
        std::thread::spawn(move || {
            b.wait();
            let res = g.open_path(path);
            drop(g);
            tx.send(res.map_err(|e| e.to_string())).unwrap();
        });
    }
    for n in 0..8 {
        match done_rx.recv_timeout(WAIT) {
            Ok(res) => res.unwrap(),
            Err(_) => fail_leaking(
                (group, server),
                format!("{n} of 8 open_path calls returned within {WAIT:?}: deadlock?"),
            ),
        }
    }
    let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    want.push("/side".into());
    assert_eq!(group.paths(), want);
    assert_eq!(
        group
            .paths()
            .iter()
            .filter(|p| p.starts_with("/new"))
            .count(),
        4
    );
    // The chooser ran for every new path, and its calls into the group returned.
    let calls = calls.lock().clone();
    for p in paths {
        assert!(calls.iter().any(|c| c.0 == p), "{p}: {calls:?}");
    }
    assert!(calls.iter().all(|c| c.1 && c.2.is_ok()), "{calls:?}");
    // Exactly one connection per path reached the server.
    assert!(
        wait_until(WAIT, || want.iter().all(|p| opened.lock().contains_key(p))),
        "{:?}",
        opened.lock()
    );
    let opened = opened.lock().clone();
    for p in &want {
        assert_eq!(opened[p], 1, "{p}: {opened:?}");
    }
}

// 9. Debug.

#[test]
fn every_component_and_handle_is_debug() {
    fn names<T: std::fmt::Debug>(v: &T, name: &str) {
        let s = format!("{v:?}");
        assert!(s.contains(name), "{s:?} does not name {name}");
    }
    let server = text_server();
    let port = server.local_addr().port();
    let client = text_client(port, "/d");
    let group = RxWSClientGroup::<String>::with_config(local(port, "/"), Text, quiet()).unwrap();
    names(&server, "RxWSServer");
    names(&server.handle(), "ServerHandle");
    names(&client, "RxWSClient");
    names(&client.handle(), "ClientHandle");
    names(&group, "RxWSClientGroup");
    names(&group.handle(), "GroupHandle");
    let sub = server.subscribe(|_| {});
    names(&sub, "Subscription");
    let guard = sub.guard();
    names(&guard, "SubscriptionGuard");
    drop(guard);
    let e = server
        .send(TaggedData::new("/none", String::new()))
        .unwrap_err();
    names(&e, "SendError");
    names(e.error(), "NoConnection");
    names(&Datatypes::<String>::from(Text), "Datatypes");
    names(&FnObserver::new(|_: String| {}), "FnObserver");
    names(&Notification::<String>::Completed, "Completed");
    names(&client.stats(), "StatsSnapshot");
    names(&quiet(), "WSConfig");
    names(&RetryPolicy::default(), "RetryPolicy");
    names(&local(port, "/d"), "WSConnectionConfig");
    assert!(client.wait_connected(WAIT));
    names(&client.conn_id().unwrap(), "ConnId");
    names(&TaggedData::new("/d", 1u8), "TaggedData");
    names(&ConnectionState::Connected, "Connected");
}
