//! Stress: 16 threads x 5,000 on_next into one client and into one server path, while other
//! clients connect and disconnect. Stable connections get exact counts, in per-thread order.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use parking_lot::Mutex;
use rxplus::ws::{RxWSClient, RxWSServer, TaggedData, Text};
use rxplus::{Notification, OverflowStrategy};
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

/// Clients that connect, send and disconnect on `path` until `stop`.
struct Churn {
    stop: Arc<AtomicBool>,
    /// Cycles whose client connected.
    connected: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<usize>,
}

impl Churn {
    /// Starts churning and waits until a first client has connected (so the churn overlaps
    /// what the test does next).
    fn start(port: u16, path: &'static str) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let (st, co) = (stop.clone(), connected.clone());
        let thread = std::thread::spawn(move || {
            let mut cycles = 0;
            while !st.load(Ordering::SeqCst) {
                let c =
                    RxWSClient::<String>::with_config(local(port, path), Text, quiet()).unwrap();
                if c.wait_connected(WAIT) {
                    co.fetch_add(1, Ordering::SeqCst);
                }
                c.send("churn".into()).unwrap();
                c.dispose();
                cycles += 1;
            }
            cycles
        });
        assert!(
            wait_until(WAIT, || connected.load(Ordering::SeqCst) > 0),
            "no churning client connected"
        );
        Churn {
            stop,
            connected,
            thread,
        }
    }

    /// Stops; checks that every churning client connected; returns how many cycles ran.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let cycles = self.thread.join().unwrap();
        assert!(cycles > 0);
        assert_eq!(
            self.connected.load(Ordering::SeqCst),
            cycles,
            "churning clients that connected"
        );
        cycles
    }
}

#[test]
fn many_threads_into_one_client() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let got = Arc::new(Mutex::new(Vec::with_capacity(THREADS * PER_THREAD)));
    let g = got.clone();
    server.subscribe(move |m: TaggedData<String>| {
        if &*m.tag == "/stable" {
            g.lock().push(m.data)
        }
    });
    let port = server.local_addr().port();
    let churn = Churn::start(port, "/churn");
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
    churn.stop();
    check_per_thread_order(&got.lock());
    assert_eq!(client.stats().dropped, 0);
    assert_eq!(client.stats().messages_out, (THREADS * PER_THREAD) as u64);
}

#[test]
fn many_threads_into_one_server_path() {
    // Every message must reach every stable client: the producers wait for the slowest one
    // (`block`) instead of the server's default, which cuts a reader that falls behind.
    let cfg = quiet().outbound(1024, OverflowStrategy::Block);
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, cfg).unwrap();
    let port = server.local_addr().port();
    let stable: Vec<_> = (0..3)
        .map(|_| RxWSClient::<String>::with_config(local(port, "/room"), Text, quiet()).unwrap())
        .collect();
    let rxs: Vec<_> = stable.iter().map(|c| c.stream()).collect();
    assert!(wait_until(WAIT, || server.connections("/room").len() == 3));
    // Churning clients join and leave the same path while the broadcast runs.
    let churn = Churn::start(port, "/room");
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
    churn.stop();
}

#[test]
fn server_stats_count_what_live_and_ended_connections_received_exactly_once() {
    let server = RxWSServer::<String>::bind_with_config(any_port(), Text, quiet()).unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    server.subscribe(move |_: TaggedData<String>| {
        d.fetch_add(1, Ordering::SeqCst);
    });
    let port = server.local_addr().port();
    let clients: Vec<_> = (0..THREADS)
        .map(|_| RxWSClient::<String>::with_config(local(port, "/count"), Text, quiet()).unwrap())
        .collect();
    assert!(clients.iter().all(|c| c.wait_connected(WAIT)));
    let total = THREADS * PER_THREAD;
    let bytes: usize = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| format!("{t}:{i}").len()))
        .sum();
    let polling = AtomicBool::new(true);
    std::thread::scope(|s| {
        // Counts never go back, whatever connections end meanwhile.
        let poller = s.spawn(|| {
            let (mut last, mut polls) = (server.stats(), 0);
            while polling.load(Ordering::SeqCst) {
                let now = server.stats();
                assert!(
                    now.messages_in >= last.messages_in,
                    "{now:?} after {last:?}"
                );
                assert!(now.bytes_in >= last.bytes_in, "{now:?} after {last:?}");
                last = now;
                polls += 1;
            }
            polls
        });
        for (t, c) in clients.iter().enumerate() {
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    c.on_next(format!("{t}:{i}"));
                }
            });
        }
        assert!(
            wait_until(WAIT, || delivered.load(Ordering::SeqCst) == total),
            "{} of {total} delivered",
            delivered.load(Ordering::SeqCst)
        );
        // Half the connections end: their counts move into the server's totals.
        for c in clients.iter().step_by(2) {
            c.dispose();
        }
        assert!(wait_until(WAIT, || server.stats().connections_closed
            == (THREADS / 2) as u64));
        polling.store(false, Ordering::SeqCst);
        assert!(poller.join().unwrap() > 0);
    });
    let stats = server.stats();
    assert_eq!(stats.messages_in, total as u64);
    assert_eq!(stats.bytes_in, bytes as u64);
}
