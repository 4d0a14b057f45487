use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::Barrier;
use std::thread;

fn counter() -> (Arc<AtomicUsize>, impl Fn(u32) + Send + Sync + 'static) {
    let c = Arc::new(AtomicUsize::new(0));
    let c2 = c.clone();
    (c, move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn fan_out_unsubscribe_and_guards() {
    let s = Subject::<u32>::new("t", 8);
    let (a, fa) = counter();
    let (b, fb) = counter();
    let (c, fc) = counter();
    let sa = s.subscribe(Box::new(fa));
    // Dropping a Subscription keeps the subscriber; a guard ends it.
    drop(s.subscribe(Box::new(fb)));
    let gc = s.subscribe(Box::new(fc)).guard();
    s.next(1);
    sa.unsubscribe();
    drop(gc);
    assert_eq!(c.load(Ordering::SeqCst), 1);
    s.next(2);
    assert_eq!(a.load(Ordering::SeqCst), 1);
    assert_eq!(b.load(Ordering::SeqCst), 2);
}

#[test]
fn terminal_rules() {
    let s = Subject::<u32>::new("t", 8);
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let l2 = log.clone();
    s.subscribe(Box::new(
        FnObserver::new(move |v: u32| l.lock().push(format!("next {v}")))
            .on_completed(move || l2.lock().push("done".into())),
    ));
    s.next(1);
    assert!(s.terminate(Notification::Completed));
    assert!(!s.terminate(Notification::Completed));
    s.next(2);
    assert_eq!(*log.lock(), vec!["next 1".to_string(), "done".into()]);
    // A late subscriber gets the terminal notification at once.
    let late = Arc::new(AtomicBool::new(false));
    let l = late.clone();
    let sub = s.subscribe(Box::new(
        FnObserver::new(|_: u32| {}).on_completed(move || l.store(true, Ordering::SeqCst)),
    ));
    assert!(late.load(Ordering::SeqCst));
    assert!(!sub.is_active());
}

#[test]
fn callbacks_for_one_subscriber_never_overlap() {
    let s = Subject::<u32>::new("t", 8);
    let inside = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let (i, t) = (inside.clone(), total.clone());
    s.subscribe(Box::new(move |_| {
        assert!(!i.swap(true, Ordering::SeqCst), "overlapping callbacks");
        t.fetch_add(1, Ordering::SeqCst);
        i.store(false, Ordering::SeqCst);
    }));
    let barrier = Barrier::new(8);
    thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                barrier.wait();
                for n in 0..2_000 {
                    s.next(n);
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::SeqCst), 16_000);
}

#[test]
fn replaying_subject_gives_current_first_and_never_duplicates() {
    let s = Subject::<u32>::replaying("t", 0, 8);
    s.next(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let v = seen.clone();
    let _sub = s.subscribe(Box::new(move |x| v.lock().push(x)));
    s.next(2);
    assert_eq!(*seen.lock(), vec![1, 2]);
}

#[test]
fn channel_stream_sees_items_and_completion_and_dropped_receiver_is_removed() {
    let s = Subject::<u32>::new("t", 8);
    let rx = s.stream();
    s.next(7);
    let rx2 = s.stream();
    drop(rx2);
    s.next(8); // finds rx2 gone and removes it
    assert_eq!(s.subs.load().len(), 1);
    s.terminate(Notification::Completed);
    let got: Vec<_> = rx.try_iter().collect();
    assert!(matches!(
        got[..],
        [
            Notification::Next(7),
            Notification::Next(8),
            Notification::Completed
        ]
    ));
}

#[test]
fn panicking_subscriber_is_cut_off_others_continue() {
    let s = Subject::<u32>::new("t", 8);
    s.subscribe(Box::new(|_| panic!("boom")));
    let (c, f) = counter();
    s.subscribe(Box::new(f));
    s.next(1);
    s.next(2);
    assert_eq!(c.load(Ordering::SeqCst), 2);
    assert_eq!(s.subs.load().len(), 1);
}

#[test]
fn unsubscribe_from_inside_callback() {
    let s = Subject::<u32>::new("t", 8);
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::new(Mutex::new(None));
    let (c, f) = counter();
    let sl = slot.clone();
    let sub = s.subscribe(Box::new(move |v| {
        f(v);
        if let Some(sub) = sl.lock().take() {
            sub.unsubscribe();
        }
    }));
    *slot.lock() = Some(sub);
    s.next(1);
    s.next(2);
    assert_eq!(c.load(Ordering::SeqCst), 1);
}

#[test]
fn a_stream_gets_its_terminal_notification_after_abort_every_time() {
    for _ in 0..1_000 {
        let s = Subject::<u32>::new("t", 2);
        let rx = s.stream();
        s.next(1);
        s.next(2); // the receiver is full now
        s.abort();
        s.next(3); // aborted: never delivered
        let reader = thread::spawn(move || rx.iter().collect::<Vec<_>>());
        assert!(s.terminate(Notification::Completed));
        drop(s);
        let got = reader.join().unwrap();
        assert!(
            matches!(
                got[..],
                [
                    Notification::Next(1),
                    Notification::Next(2),
                    Notification::Completed
                ]
            ),
            "{got:?}"
        );
    }
}

#[test]
fn no_callback_starts_or_runs_once_unsubscribe_returns() {
    for _ in 0..50 {
        let s = Subject::<u32>::new("t", 8);
        let inside = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let (i, c) = (inside.clone(), calls.clone());
        let sub = s.subscribe(Box::new(move |_| {
            i.store(true, Ordering::SeqCst);
            c.fetch_add(1, Ordering::SeqCst);
            std::hint::spin_loop();
            i.store(false, Ordering::SeqCst);
        }));
        let stop = AtomicBool::new(false);
        let emitted = AtomicUsize::new(0);
        thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        s.next(1);
                        emitted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            while calls.load(Ordering::SeqCst) < 10 {
                thread::yield_now();
            }
            sub.unsubscribe();
            assert!(
                !inside.load(Ordering::SeqCst),
                "a callback was still running"
            );
            let (at_drop, emitted_at_drop) =
                (calls.load(Ordering::SeqCst), emitted.load(Ordering::SeqCst));
            while emitted.load(Ordering::SeqCst) < emitted_at_drop + 100 {
                thread::yield_now();
            }
            stop.store(true, Ordering::SeqCst);
            assert_eq!(calls.load(Ordering::SeqCst), at_drop, "a callback started");
        });
    }
}

/// A closure's captured state, to see when the subject lets go of the closure.
fn held() -> (Arc<()>, impl Fn(u32) + Send + Sync + 'static) {
    let marker = Arc::new(());
    let m = marker.clone();
    (marker, move |_| {
        let _ = &m;
    })
}

fn released(marker: &Arc<()>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(marker) > 1 {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn a_cached_emitter_sees_each_subscribe_and_unsubscribe_at_its_next_item() {
    let s = Subject::<u32>::new("t", 8);
    let mut cache = SubsCache::default();
    let (a, fa) = counter();
    let sa = s.subscribe(Box::new(fa));
    s.next_cached(1, &mut cache);
    let (b, fb) = counter();
    let sb = s.subscribe(Box::new(fb));
    s.next_cached(2, &mut cache);
    sa.unsubscribe();
    s.next_cached(3, &mut cache);
    assert_eq!(a.load(Ordering::SeqCst), 2);
    assert_eq!(b.load(Ordering::SeqCst), 2);
    sb.unsubscribe();
    s.next_cached(4, &mut cache);
    assert_eq!(b.load(Ordering::SeqCst), 2);
}

#[test]
fn an_idle_cached_emitter_holds_no_callback_once_unsubscribed_or_terminated() {
    let s = Subject::<u32>::new("t", 8);
    let (m1, f1) = held();
    let (m2, f2) = held();
    let sub = s.subscribe(Box::new(f1));
    s.subscribe(Box::new(f2));
    // The emitter's cache keeps the snapshot holding both entries, and it emits no more.
    let mut cache = SubsCache::default();
    s.next_cached(1, &mut cache);
    sub.unsubscribe();
    assert!(released(&m1), "an unsubscribed callback is still held");
    assert_eq!(Arc::strong_count(&m2), 2);
    s.terminate(Notification::Completed);
    assert!(released(&m2), "a terminated subject still holds a callback");
    drop(cache);
}

#[test]
fn cached_emitters_racing_unsubscribes_run_no_callback_after_and_hold_none() {
    for _ in 0..20 {
        let s = Subject::<u32>::new("t", 8);
        // 0: emit; 1: stay idle, caches kept; 2: end.
        let phase = AtomicUsize::new(0);
        let calls = Arc::new(AtomicUsize::new(0));
        thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    let mut cache = SubsCache::default();
                    while phase.load(Ordering::SeqCst) == 0 {
                        s.next_cached(1, &mut cache);
                    }
                    while phase.load(Ordering::SeqCst) == 1 {
                        thread::yield_now();
                    }
                });
            }
            let mut markers = Vec::new();
            for _ in 0..20 {
                let marker = Arc::new(());
                let (m, c) = (marker.clone(), calls.clone());
                let gone = Arc::new(AtomicBool::new(false));
                let g = gone.clone();
                let sub = s.subscribe(Box::new(move |_| {
                    let _ = &m;
                    assert!(
                        !g.load(Ordering::SeqCst),
                        "a callback ran after unsubscribe"
                    );
                    c.fetch_add(1, Ordering::SeqCst);
                }));
                let at = calls.load(Ordering::SeqCst);
                while calls.load(Ordering::SeqCst) < at + 10 {
                    thread::yield_now();
                }
                sub.unsubscribe();
                gone.store(true, Ordering::SeqCst);
                markers.push(marker);
            }
            phase.store(1, Ordering::SeqCst);
            for m in &markers {
                assert!(released(m), "an unsubscribed callback is still held");
            }
            phase.store(2, Ordering::SeqCst);
        });
    }
}

#[test]
fn a_callback_whose_drop_unsubscribes_another_is_dropped_outside_every_lock() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let t = thread::spawn(move || {
        let s = Subject::<u32>::new("t", 8);
        let (b, fb) = counter();
        let inner = s.subscribe(Box::new(fb)).guard();
        // A's closure owns B's guard: dropping A unsubscribes B, on the dropping thread.
        let sa = s.subscribe(Box::new(move |_| {
            let _ = &inner;
        }));
        s.next(1);
        sa.unsubscribe();
        s.next(2);
        let _ = tx.send(b.load(Ordering::SeqCst));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(1),
        "unsubscribing deadlocked"
    );
    t.join().unwrap();
}
