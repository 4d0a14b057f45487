//! Stress: 16 threads x 5,000 on_next into one client and into one server path, while other
//! clients connect and disconnect. Stable connections get exact counts, in per-thread order.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use parking_lot::Mutex;
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text};
use rxplus::Notification;
use support::*;

const THREADS: usize = 16;
const PER_THREAD: usize = 5_000;

fn check_per_thread_order(got: &[String]) {
    let mut last = vec![None::<usize>; THREADS];
    for m in got {
        let (t, i) = m.split_once(':').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert!(last[t].is_none_or(|l| l < i), "thread {t} out of order");
        last[t] = Some(i);
    }
}

/// Clients that connect and disconnect on `path` until `stop`.
fn churn(port: u16, path: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let c = RxWSClient::<String>::with_config(local(port, path), Text, quiet()).unwrap();
            c.wait_connected(WAIT);
            c.on_next("churn".into());
            c.dispose();
            n += 1;
        }
        n
    })
}

#[test]
fn many_threads_into_one_client() {
    let server = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    let got = Arc::new(Mutex::new(Vec::with_capacity(THREADS * PER_THREAD)));
    let g = got.clone();
    server
        .subscribe(move |m: TaggedData<String>| {
            if &*m.tag == "/stable" {
                g.lock().push(m.data)
            }
        })
        .detach();
    let port = server.local_addr().port();
    let stop = Arc::new(AtomicBool::new(false));
    let churner = churn(port, "/churn", stop.clone());
    let client = RxWSClient::<String>::with_config(local(port, "/stable"), Text, quiet()).unwrap();
    assert!(client.wait_connected(WAIT));
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (client, barrier) = (&client, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    client.on_next(format!("{t}:{i}"));
                }
            });
        }
    });
    assert!(
        wait_until(WAIT, || got.lock().len() == THREADS * PER_THREAD),
        "{}",
        got.lock().len()
    );
    stop.store(true, Ordering::SeqCst);
    assert!(churner.join().unwrap() > 0);
    check_per_thread_order(&got.lock());
    assert_eq!(client.stats().dropped, 0);
    assert_eq!(client.stats().messages_out, (THREADS * PER_THREAD) as u64);
}

#[test]
fn many_threads_into_one_server_path() {
    let server = RxWSServer::<String>::with_config(any_port(), Text, quiet()).unwrap();
    let port = server.local_addr().port();
    let stable: Vec<_> = (0..3)
        .map(|_| RxWSClient::<String>::with_config(local(port, "/room"), Text, quiet()).unwrap())
        .collect();
    let rxs: Vec<_> = stable.iter().map(|c| c.stream()).collect();
    assert!(wait_until(WAIT, || server.connections("/room").len() == 3));
    let stop = Arc::new(AtomicBool::new(false));
    // Churning clients join and leave the same path while the broadcast runs.
    let churner = churn(port, "/room", stop.clone());
    let barrier = Barrier::new(THREADS);
    let readers: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(THREADS * PER_THREAD);
                while got.len() < THREADS * PER_THREAD {
                    match rx.recv_timeout(WAIT) {
                        Ok(Notification::Next(m)) => {
                            if m != "churn" {
                                got.push(m)
                            }
                        }
                        other => panic!("after {}: {other:?}", got.len()),
                    }
                }
                got
            })
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (server, barrier) = (&server, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..PER_THREAD {
                    server.on_next(TaggedData::new("/room", format!("{t}:{i}")));
                }
            });
        }
    });
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(got.len(), THREADS * PER_THREAD);
        check_per_thread_order(&got);
    }
    stop.store(true, Ordering::SeqCst);
    churner.join().unwrap();
}
