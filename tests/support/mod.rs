//! Helpers shared by the integration tests: thread counts, waits, small servers.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rxplus::ws::{RxWSServer, TaggedData, WSConfig, WSConnectionConfig};

pub mod proxy;

pub const WAIT: Duration = Duration::from_secs(10);

/// Threads of this process now (Linux: /proc/self/task).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of this process that are alive and not exiting, read once (no polling): a thread
/// whose join has returned may still be listed in /proc for a moment while the kernel finishes
/// its exit, but it is past `PF_EXITING`. A thread that was never joined is still running user
/// code and is counted. Read right after `dispose()` returns, this proves dispose joined.
pub fn live_threads() -> usize {
    live_threads_named("")
}

/// [`live_threads`] whose name starts with `prefix` (`rxws`: every thread the crate starts),
/// for tests whose binary runs other threads meanwhile.
pub fn live_threads_named(prefix: &str) -> usize {
    const PF_EXITING: u64 = 0x4;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false; // gone already
            };
            // `stat` holds the name in parentheses (`comm`, at most 15 bytes).
            let name = stat
                .find('(')
                .and_then(|i| stat.rfind(')').map(|j| &stat[i + 1..j.max(i + 1)]))
                .unwrap_or("");
            if !name.starts_with(prefix) {
                return false;
            }
            // Fields after the parenthesised name: state ppid pgrp session tty tpgid flags …
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            let flags: u64 = after
                .split_whitespace()
                .nth(6)
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            flags & PF_EXITING == 0
        })
        .count()
}

/// Every thread of this process: name, state and kernel flags (for failure messages).
pub fn thread_report() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return String::new();
    };
    let mut out = Vec::new();
    for e in dir.filter_map(|e| e.ok()) {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        let f: Vec<&str> = after.split_whitespace().collect();
        out.push(format!(
            "{}[{} flags {:#x}]",
            comm.trim(),
            f.first().unwrap_or(&"?"),
            f.get(6).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        ));
    }
    out.join(", ")
}

/// True when a thread of this process whose name starts with `prefix` is asleep (state `S`:
/// blocked in a read, a futex, a poll). Lets a test wait for "blocked" without sleeping.
pub fn thread_sleeping(prefix: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    dir.filter_map(|e| e.ok()).any(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .next();
        comm.starts_with(prefix) && state == Some("S")
    })
}

/// Polls `cond` until true or `timeout`; returns the last value. Only for test assertions.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the process's thread count is at most `n` (threads exiting after join are
/// already gone; this only absorbs test-harness threads finishing).
pub fn wait_threads_at_most(n: usize) -> usize {
    wait_until(Duration::from_secs(5), || thread_count() <= n);
    thread_count()
}

pub fn local(port: u16, path: &str) -> WSConnectionConfig {
    WSConnectionConfig::new("127.0.0.1", port, path).unwrap()
}

/// The address a test server binds: loopback, any free port.
pub const ANY_PORT: &str = "127.0.0.1:0";

pub fn any_port() -> &'static str {
    ANY_PORT
}

pub fn quiet() -> WSConfig {
    WSConfig::default().no_heartbeat()
}

/// An echo server of `T`: replies to the originating connection.
pub fn echo_server<T: Clone + Send + 'static>(
    datatype: impl Into<rxplus::ws::Datatypes<T>>,
) -> RxWSServer<T> {
    let s = RxWSServer::<T>::bind_with_config(any_port(), datatype, quiet()).unwrap();
    let h = s.handle();
    s.subscribe(move |m: TaggedData<T>| h.on_next(m.reply(m.data.clone())));
    s
}

/// A text server on `port` (0: any) whose subscriber collects what arrives.
pub fn collecting_server(
    port: u16,
) -> (
    RxWSServer<String>,
    std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
) {
    let server = RxWSServer::<String>::bind_with_config(
        &format!("127.0.0.1:{port}"),
        rxplus::ws::Text,
        quiet(),
    )
    .unwrap();
    let got = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let g = got.clone();
    server.subscribe(move |m: TaggedData<String>| g.lock().push(m.data));
    (server, got)
}

/// A text server whose subscriber stops reading until the returned gate sender is dropped,
/// then collects what arrives. Drop the gate before asserting, so a failing test does not
/// leave the server's reader stuck (and the test hung in teardown).
pub fn gated_server() -> (
    RxWSServer<String>,
    std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    crossbeam_channel::Sender<()>,
) {
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let server =
        RxWSServer::<String>::bind_with_config(any_port(), rxplus::ws::Text, quiet()).unwrap();
    let got = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let g = got.clone();
    server.subscribe(move |m: TaggedData<String>| {
        let _ = gate_rx.recv(); // returns once the gate sender is dropped
        g.lock().push(m.data);
    });
    (server, got, gate_tx)
}

static RXWS_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Panics so far on the library's own threads (`rxws-*`, `rxgw-*`): a panic there kills a
/// connection's thread, not the test. Installs a counting hook on first use.
pub fn rxws_panics() -> usize {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("rxws-") || n.starts_with("rxgw-"))
            {
                RXWS_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info)
        }));
    });
    RXWS_PANICS.load(std::sync::atomic::Ordering::SeqCst)
}
