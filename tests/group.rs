//! RxWSClientGroup and the shared-map races (BUG-1, BUG-2, BUG-6).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use parking_lot::Mutex;
use rxplus::ws::{
    ConnectionEventKind, Json, RxWSClient, RxWSClientGroup, RxWSServer, TaggedData, Text,
};
use rxplus::{Error, FnObserver, Notification};
use support::*;

#[test]
fn client_group_multiple_paths() {
    let server = echo_server::<String>(Text);
    let group = RxWSClientGroup::<String>::with_config(
        local(server.local_addr().port(), "/"),
        Text,
        quiet(),
    )
    .unwrap();
    let rx = group.stream();
    for p in ["/a", "/b", "/c"] {
        group.wait_connected(p, WAIT).unwrap();
    }
    for p in ["/a", "/b", "/c"] {
        for i in 0..10 {
            group.on_next(TaggedData::new(p, format!("{p}-{i}")));
        }
    }
    let mut per_path: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..30 {
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => {
                assert!(
                    m.data.starts_with(&*m.tag),
                    "{} arrived on {}",
                    m.data,
                    m.tag
                );
                per_path.entry(m.tag.to_string()).or_default().push(m.data);
            }
            other => panic!("{other:?}"),
        }
    }
    for p in ["/a", "/b", "/c"] {
        assert_eq!(
            per_path[p],
            (0..10).map(|i| format!("{p}-{i}")).collect::<Vec<_>>()
        );
    }
    assert_eq!(group.paths(), vec!["/a", "/b", "/c"]);
}

#[test]
fn client_group_ensure_client_thread_safety() {
    // BUG-2: 16 threads race to first use of the same 4 paths: exactly one client (and one
    // server connection) per path.
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let opened = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let o = opened.clone();
    server.subscribe_events(move |e: rxplus::ws::ConnectionEvent| {
        if e.kind == ConnectionEventKind::Opened {
            *o.lock().entry(e.path).or_default() += 1;
        }
    });
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    server.subscribe(move |_m: TaggedData<String>| {
        g.fetch_add(1, Ordering::SeqCst);
    });
    let cfg = quiet().buffer_while_disconnected(true);
    let group =
        RxWSClientGroup::<String>::with_config(local(server.local_addr().port(), "/"), Text, cfg)
            .unwrap();
    let barrier = Barrier::new(16);
    std::thread::scope(|s| {
        for t in 0..16 {
            let group = &group;
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..50 {
                    group.on_next(TaggedData::new(
                        format!("/p{}", (t + i) % 4),
                        format!("{t}:{i}"),
                    ));
                }
            });
        }
    });
    assert_eq!(group.paths().len(), 4);
    assert!(wait_until(WAIT, || got.load(Ordering::SeqCst) == 800));
    let opened = opened.lock().clone();
    assert_eq!(opened.len(), 4);
    assert!(opened.values().all(|n| *n == 1), "{opened:?}");
}

#[test]
fn group_child_names_and_completion_reach_every_child() {
    let server = echo_server::<String>(Text);
    let group = RxWSClientGroup::<String>::with_config(
        local(server.local_addr().port(), "/"),
        Text,
        quiet().name("grp"),
    )
    .unwrap();
    assert_eq!(group.name(), "grp");
    let completed = Arc::new(AtomicUsize::new(0));
    let c = completed.clone();
    group.subscribe_observer(
        FnObserver::new(|_: TaggedData<String>| {}).on_completed(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    );
    for p in ["/x", "/y"] {
        group.wait_connected(p, WAIT).unwrap();
    }
    assert!(wait_until(WAIT, || server.connection_count() == 2));
    group.on_completed();
    assert_eq!(completed.load(Ordering::SeqCst), 1);
    assert_eq!(group.thread_count(), 0);
    assert!(
        wait_until(WAIT, || server.connection_count() == 0),
        "every child closed"
    );
    assert_eq!(
        group.connection_state("/x"),
        Some(rxplus::ws::ConnectionState::Closed)
    );
}

#[test]
fn group_child_logs_under_its_name() {
    // Child names are `{group}:{path}`; visible through the error a child reports.
    let group =
        RxWSClientGroup::<String>::with_config(local(1, "/"), Text, quiet().name("g")).unwrap();
    group.open_path("/chat").unwrap();
    assert!(group.open_path("no-slash").is_err());
    // Once the first attempt has failed, the path's client refuses what it cannot send.
    assert!(wait_until(WAIT, || matches!(
        group.connection_state("/chat"),
        Some(rxplus::ws::ConnectionState::Reconnecting)
    )));
    // Not connected and not buffering: refused, and the item is handed back.
    let err = group
        .send(TaggedData::new("/chat", "x".into()))
        .unwrap_err();
    assert!(matches!(err.error(), Error::NotConnected { .. }), "{err}");
    assert_eq!(err.to_string(), "g:/chat: not connected: item not sent");
    assert_eq!(
        err.into_item().map(|t| (t.tag, t.data)),
        Some(("/chat".into(), "x".into()))
    );
    group.dispose();
    let err = group
        .send(TaggedData::new("/chat", "x".into()))
        .unwrap_err();
    assert!(matches!(err.error(), Error::AlreadyClosed { .. }), "{err}");
    assert_eq!(err.to_string(), "g: already closed");
}

#[test]
fn a_group_child_reports_errors_under_its_own_name() {
    // JSON has no representation for a map with non-string keys: the child's encode fails.
    type Odd = BTreeMap<(u8, u8), u8>;
    // Buffering, so the item gets as far as the encoder while not connected.
    let cfg = quiet().name("g").buffer_while_disconnected(true);
    let group = RxWSClientGroup::<Odd>::with_config(local(1, "/"), Json, cfg).unwrap();
    let err = group
        .send(TaggedData::new("/chat", Odd::from([((1, 2), 3)])))
        .unwrap_err();
    match err.error() {
        Error::Encode { ctx, datatype, .. } => {
            assert_eq!((&*ctx.component, *datatype), ("g:/chat", "json"))
        }
        other => panic!("not an encode error: {other}"),
    }
    assert!(
        err.into_item().is_none(),
        "an item the encoder consumed is gone"
    );
    assert_eq!(group.paths(), vec!["/chat"]);
    assert_eq!(group.stats().encode_errors, 1);
}

#[test]
fn server_path_channels_thread_safety() {
    // BUG-1 / BUG-6: connections to many paths open and close while 8 threads broadcast to
    // those paths. Stable connections must receive every broadcast exactly once.
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let stable: Vec<_> = (0..4)
        .map(|i| {
            RxWSClient::<String>::with_config(local(port, &format!("/s{i}")), Text, quiet())
                .unwrap()
        })
        .collect();
    let rxs: Vec<_> = stable.iter().map(|c| c.stream()).collect();
    assert!(wait_until(WAIT, || server.connection_count() == 4));
    let barrier = Barrier::new(8);
    let churned = std::thread::scope(|s| {
        // Churn: clients joining and leaving the same paths; each one must really connect.
        let churners: Vec<_> = (0..2)
            .map(|t| {
                s.spawn(move || {
                    let mut connected = 0;
                    for n in 0..40 {
                        let c = RxWSClient::<String>::with_config(
                            local(port, &format!("/s{}", (t + n) % 4)),
                            Text,
                            quiet(),
                        )
                        .unwrap();
                        if c.wait_connected(WAIT) {
                            connected += 1;
                        }
                        c.dispose();
                    }
                    connected
                })
            })
            .collect();
        for t in 0..8 {
            let server = &server;
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..250 {
                    server.on_next(TaggedData::new(format!("/s{}", i % 4), format!("{t}:{i}")));
                }
            });
        }
        churners
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<usize>>()
    });
    assert_eq!(churned, [40, 40], "churning clients that connected");
    // Duplicates would come before a marker broadcast now.
    for p in 0..4 {
        server.on_next(TaggedData::new(format!("/s{p}"), "end".to_string()));
    }
    for (p, rx) in rxs.iter().enumerate() {
        let per_thread = 250 / 4 + usize::from(p < 250 % 4);
        let mut got = Vec::new();
        while got.len() < 8 * per_thread {
            match rx.recv_timeout(WAIT) {
                Ok(Notification::Next(m)) => got.push(m),
                other => panic!("path /s{p}: after {} items: {other:?}", got.len()),
            }
        }
        match rx.recv_timeout(WAIT) {
            Ok(Notification::Next(m)) => assert_eq!(m, "end", "duplicates on /s{p}"),
            other => panic!("path /s{p}: no marker: {other:?}"),
        }
        // Per sender thread, order is preserved.
        for t in 0..8 {
            let seq: Vec<usize> = got
                .iter()
                .filter(|m| m.starts_with(&format!("{t}:")))
                .map(|m| m.split(':').nth(1).unwrap().parse().unwrap())
                .collect();
            assert_eq!(seq.len(), per_thread);
            assert!(seq.windows(2).all(|w| w[0] < w[1]));
        }
    }
    // Broadcasts that met a churning connection while it closed are counted as dropped; the
    // stable connections above got every one of theirs.
}

#[test]
fn a_paths_first_send_is_delivered_not_refused() {
    // The first item for a path creates its client; it waits for the first attempt instead of
    // being refused because the client was born a moment ago. Repeated: a race would show.
    let (server, got) = collecting_server(0);
    for round in 0..20 {
        let group = RxWSClientGroup::<String>::with_config(
            local(server.local_addr().port(), "/"),
            Text,
            quiet(),
        )
        .unwrap();
        let path = format!("/p{round}");
        group
            .send(TaggedData::new(path.as_str(), format!("first-{round}")))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            wait_until(WAIT, || got.lock().contains(&format!("first-{round}"))),
            "round {round}"
        );
        group.dispose();
    }
    // A path whose server is down: the sender does not wait; the held item is reported as
    // undelivered once the first attempt fails, even when that attempt (a refused port fails
    // at once) ended before the item arrived. Many new paths: each one races.
    let (group, undelivered) = group_to_a_dead_port();
    for round in 1..=50 {
        group
            .send(TaggedData::new(format!("/x{round}"), "x".into()))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            wait_until(WAIT, || undelivered.load(Ordering::SeqCst) == round),
            "round {round}: {} reported",
            undelivered.load(Ordering::SeqCst)
        );
    }
}

#[test]
fn a_server_set_up_before_accepting_sees_the_first_message_and_event() {
    for round in 0..20 {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let (s1, s2) = (seen.clone(), seen.clone());
        let server = RxWSServer::<String>::bind_with_setup(any_port(), Text, quiet(), |s| {
            s.subscribe(move |m: TaggedData<String>| s1.lock().push(m.data));
            s.subscribe_events(move |e| {
                if e.kind == ConnectionEventKind::Opened {
                    s2.lock().push("opened".into())
                }
            });
        })
        .unwrap();
        let client = RxWSClient::<String>::with_config(
            local(server.local_addr().port(), "/"),
            Text,
            quiet().buffer_while_disconnected(true),
        )
        .unwrap();
        client.send("hello".into()).unwrap();
        assert!(
            wait_until(WAIT, || seen.lock().len() == 2),
            "round {round}: {:?}",
            seen.lock()
        );
        assert_eq!(*seen.lock(), vec!["opened", "hello"], "round {round}");
    }
}

/// A group whose host refuses connections, and the items it reports `Undelivered`.
fn group_to_a_dead_port() -> (RxWSClientGroup<String>, Arc<AtomicUsize>) {
    let group = RxWSClientGroup::<String>::with_config(local(1, "/"), Text, quiet()).unwrap();
    let undelivered = Arc::new(AtomicUsize::new(0));
    let u = undelivered.clone();
    group.subscribe_errors(move |e| {
        if let Error::Undelivered { count, .. } = e {
            u.fetch_add(count, Ordering::SeqCst);
        }
    });
    (group, undelivered)
}

#[test]
fn items_held_for_a_failed_first_attempt_are_each_reported_once() {
    // Senders race the first attempt's failure: every item `send` accepted is reported as
    // undelivered, exactly once; the rest were refused with the item handed back.
    for round in 0..20 {
        let (group, undelivered) = group_to_a_dead_port();
        let accepted = AtomicUsize::new(0);
        let path = format!("/r{round}");
        std::thread::scope(|s| {
            for t in 0..4 {
                let (group, accepted, path) = (&group, &accepted, &path);
                s.spawn(move || {
                    for i in 0..50 {
                        match group.send(TaggedData::new(path.as_str(), format!("{t}-{i}"))) {
                            Ok(()) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                assert!(matches!(e.error(), Error::NotConnected { .. }), "{e}");
                                assert!(e.into_item().is_some());
                            }
                        }
                    }
                });
            }
        });
        let want = accepted.load(Ordering::SeqCst);
        assert!(
            wait_until(WAIT, || undelivered.load(Ordering::SeqCst) == want),
            "round {round}: accepted {want}, reported {}",
            undelivered.load(Ordering::SeqCst)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(undelivered.load(Ordering::SeqCst), want, "round {round}");
    }
}
