//! Scale-out through Redis (feature `redis`): path broadcasts reach the clients of every
//! server instance, exactly once, in each publisher's order; paths stay apart; a Redis restart
//! never stops local delivery and every lost message is counted; dispose joins the broker's
//! threads. Each test starts its own `redis-server` on a free port (`harness::redis`); the
//! tests take one lock, so thread counts see no other test's threads.
#![cfg(feature = "redis")]

mod harness;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use parking_lot::Mutex;
use rxplus::ws::broker::{RedisBroker, RedisConfig};
use rxplus::ws::{
    Binary, ConnectionState, Datatype, Datatypes, Raw, RetryPolicy, RxWSClient, RxWSServer,
    TaggedData, Text, WSConfig, WSMessage,
};
use rxplus::{Error, OverflowStrategy};

use harness::redis::RedisServer;
use support::{local, wait_until, WAIT};

/// One test at a time: the thread counts below count every `rxws*` thread of the process.
static SERIAL: StdMutex<()> = StdMutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn broker(redis: &RedisServer, capacity: usize) -> RedisBroker {
    broker_with(redis, |c| c.queue_capacity(capacity))
}

/// A broker with the tests' quick retries and polling, `tune` applied on top.
fn broker_with(redis: &RedisServer, tune: impl FnOnce(RedisConfig) -> RedisConfig) -> RedisBroker {
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .jitter(0.0);
    let cfg = RedisConfig::new(&redis.url())
        .unwrap()
        .retry(retry)
        .poll_interval(Duration::from_millis(20));
    RedisBroker::new(tune(cfg)).unwrap()
}

/// Room for every message of a test in each connection's queue: nothing is lost locally.
fn roomy() -> WSConfig {
    WSConfig::default()
        .no_heartbeat()
        .outbound(65_536, OverflowStrategy::DropOld)
        .outbound_max_bytes(64 << 20)
}

fn server<T: Clone + Send + 'static>(
    broker: &RedisBroker,
    datatype: impl Into<Datatypes<T>>,
) -> RxWSServer<T> {
    let s = RxWSServer::bind_with_config("127.0.0.1:0", datatype, roomy().broker(broker.clone()))
        .unwrap();
    assert!(
        broker.wait_connected(WAIT),
        "{} not connected",
        broker.name()
    );
    s
}

type Inbox<T> = Arc<Mutex<Vec<T>>>;

/// A client of `server` on `path` that keeps what it receives; returns once the server has
/// registered it.
fn client<T: Clone + Send + 'static, U: Clone + Send + 'static>(
    server: &RxWSServer<U>,
    path: &str,
    datatype: impl Datatype<T>,
) -> (RxWSClient<T>, Inbox<T>) {
    let inbox: Inbox<T> = Arc::default();
    let before = server.connections(path).len();
    let keep = inbox.clone();
    let c = RxWSClient::with_setup(
        local(server.local_addr().port(), path),
        datatype,
        WSConfig::default().no_heartbeat(),
        move |c| {
            c.subscribe(move |m| keep.lock().push(m));
        },
    )
    .unwrap();
    assert!(
        wait_until(WAIT, || server.connections(path).len() > before),
        "client on {path} not registered"
    );
    (c, inbox)
}

/// The numbers of the messages `tag-N` in `got`, in arrival order.
fn numbers(got: &[String], tag: &str) -> Vec<u64> {
    got.iter()
        .filter_map(|m| m.strip_prefix(tag)?.strip_prefix('-')?.parse().ok())
        .collect()
}

#[test]
fn two_instances_deliver_every_broadcast_exactly_once_in_publish_order() {
    let _one = serial();
    let redis = RedisServer::start();
    const N: u64 = 10_000;
    let (ba, bb) = (broker(&redis, 16_384), broker(&redis, 16_384));
    let (a, b) = (server::<String>(&ba, Text), server::<String>(&bb, Text));
    let (_ca, got_a) = client::<String, _>(&a, "/chat", Text);
    let (_cb, got_b) = client::<String, _>(&b, "/chat", Text);

    // Both instances broadcast at once, from two threads.
    std::thread::scope(|s| {
        for (srv, tag) in [(&a, "a"), (&b, "b")] {
            s.spawn(move || {
                for i in 0..N {
                    srv.send(TaggedData::new("/chat", format!("{tag}-{i}")))
                        .unwrap();
                }
                srv.send(TaggedData::new("/chat", format!("{tag}-end")))
                    .unwrap();
            });
        }
    });
    let total = 2 * (N as usize + 1);
    for (name, got) in [("A", &got_a), ("B", &got_b)] {
        let ok = wait_until(Duration::from_secs(60), || got.lock().len() >= total);
        let got = got.lock();
        assert!(ok, "client on {name}: {} of {total}", got.len());
        // The end markers come last from each publisher: anything more would be a duplicate.
        assert_eq!(got.len(), total, "client on {name}");
        let all: Vec<u64> = (0..N).collect();
        assert_eq!(numbers(&got, "a"), all, "client on {name}: A's order");
        assert_eq!(numbers(&got, "b"), all, "client on {name}: B's order");
    }
    for (name, br) in [("A", &ba), ("B", &bb)] {
        let st = br.stats();
        assert_eq!(
            (st.published, st.received),
            (N + 1, N + 1),
            "{name}: {st:?}"
        );
        assert_eq!(
            (st.dropped, st.lost, st.decode_errors),
            (0, 0, 0),
            "{name}: {st:?}"
        );
    }
    a.dispose();
    b.dispose();
}

#[test]
fn three_instances_thirty_clients_paths_stay_apart() {
    let _one = serial();
    let redis = RedisServer::start();
    const PER: u64 = 100;
    let paths = ["/a", "/b", "/c"];
    let brokers: Vec<_> = (0..3).map(|_| broker(&redis, 4096)).collect();
    let servers: Vec<_> = brokers.iter().map(|b| server::<String>(b, Text)).collect();
    // Client i on server i % 3, path (i / 3) % 3: every server has clients on every path.
    let clients: Vec<_> = (0..30)
        .map(|i| {
            let path = paths[(i / 3) % 3];
            let (c, inbox) = client::<String, _>(&servers[i % 3], path, Text);
            (path, c, inbox)
        })
        .collect();
    for (s, srv) in servers.iter().enumerate() {
        for path in paths {
            for k in 0..PER {
                srv.send(TaggedData::new(path, format!("{path}:s{s}-{k}")))
                    .unwrap();
            }
        }
    }
    for (i, (path, _, inbox)) in clients.iter().enumerate() {
        let want = 3 * PER as usize;
        let ok = wait_until(WAIT, || inbox.lock().len() >= want);
        let got = inbox.lock();
        assert!(ok, "client {i} on {path}: {} of {want}", got.len());
        assert_eq!(got.len(), want, "client {i} on {path}");
        assert!(
            got.iter().all(|m| m.starts_with(&format!("{path}:"))),
            "client {i} on {path} got another path's message"
        );
        for s in 0..3 {
            let tag = format!("{path}:s{s}");
            assert_eq!(
                numbers(&got, &tag),
                (0..PER).collect::<Vec<_>>(),
                "client {i}, server {s}"
            );
        }
    }
    for b in &brokers {
        let st = b.stats();
        assert_eq!(st.published, 3 * PER, "{st:?}");
        assert_eq!(st.received, 2 * 3 * PER, "{st:?}");
        assert_eq!((st.dropped, st.lost), (0, 0), "{st:?}");
    }
    drop(clients);
    for s in servers {
        s.dispose();
    }
}

#[test]
fn kinds_and_per_path_datatypes_cross_and_replies_stay_local() {
    let _one = serial();
    let redis = RedisServer::start();
    let per_path = || {
        Datatypes::<WSMessage>::per_path(|path| -> Arc<dyn Datatype<WSMessage>> {
            match path {
                "/text" => Arc::new(Text),
                "/bin" => Arc::new(Binary),
                _ => Arc::new(Raw),
            }
        })
    };
    let (ba, bb) = (broker(&redis, 1024), broker(&redis, 1024));
    let (a, b) = (server(&ba, per_path()), server(&bb, per_path()));
    // No client on A at all: A's broadcasts go to Redis only, encoded by A's datatype.
    let (_raw, got_raw) = client::<WSMessage, _>(&b, "/raw", Raw);
    let (_bin, got_bin) = client::<Vec<u8>, _>(&b, "/bin", Binary);
    let (_text, got_text) = client::<String, _>(&b, "/text", Text);
    a.send(TaggedData::new("/raw", WSMessage::Text("t".into())))
        .unwrap();
    a.send(TaggedData::new(
        "/raw",
        WSMessage::Binary(vec![0, 159, 255]),
    ))
    .unwrap();
    a.send(TaggedData::new("/bin", WSMessage::Binary(vec![1, 2, 3])))
        .unwrap();
    a.send(TaggedData::new("/text", WSMessage::Text("héllo".into())))
        .unwrap();
    // A's datatype refuses a binary item on /text: an encode error, nothing published.
    let refused = a.send(TaggedData::new("/text", WSMessage::Binary(vec![9])));
    assert!(
        matches!(
            refused.map_err(|e| e.into_error()),
            Err(Error::Encode { .. })
        ),
        "binary item on a text path"
    );
    assert!(wait_until(WAIT, || got_raw.lock().len() == 2
        && got_bin.lock().len() == 1
        && got_text.lock().len() == 1));
    assert_eq!(
        *got_raw.lock(),
        vec![
            WSMessage::Text("t".into()),
            WSMessage::Binary(vec![0, 159, 255])
        ]
    );
    assert_eq!(*got_bin.lock(), vec![vec![1u8, 2, 3]]);
    assert_eq!(*got_text.lock(), vec!["héllo".to_string()]);

    // A reply to one connection never crosses: B's own client on /raw asks, A's stay quiet.
    let (ca, got_a) = client::<WSMessage, _>(&a, "/raw", Raw);
    let echo = a.handle();
    a.subscribe(move |m: TaggedData<WSMessage>| echo.on_next(m.reply(m.data.clone())));
    ca.send(WSMessage::Text("just me".into())).unwrap();
    assert!(wait_until(WAIT, || got_a.lock().len() == 1));
    // A broadcast after the reply reaches B; had the reply crossed, it would arrive first.
    a.send(TaggedData::new("/raw", WSMessage::Text("after".into())))
        .unwrap();
    assert!(wait_until(WAIT, || got_raw.lock().len() == 3));
    assert_eq!(got_raw.lock()[2], WSMessage::Text("after".into()));
    assert_eq!(ba.stats().published, 5);
    a.dispose();
    b.dispose();
}

/// WARN records with their message, kept by a logger this test binary installs.
struct Warnings(Mutex<Vec<String>>);

impl log::Log for Warnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Warn {
            self.0.lock().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static WARNINGS: Warnings = Warnings(Mutex::new(Vec::new()));

#[test]
fn a_redis_restart_never_stops_local_delivery_and_every_loss_is_counted() {
    let _one = serial();
    if log::set_logger(&WARNINGS).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let mut redis = RedisServer::start();
    let (ba, bb) = (broker(&redis, 4096), broker(&redis, 4096));
    let states: Arc<Mutex<Vec<ConnectionState>>> = Arc::default();
    let s = states.clone();
    ba.subscribe_state(move |st| s.lock().push(st));
    let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
    let e = errors.clone();
    ba.subscribe_errors(move |err| e.lock().push(err));
    let (a, b) = (server::<String>(&ba, Text), server::<String>(&bb, Text));
    let (_ca, got_a) = client::<String, _>(&a, "/live", Text);
    let (_cb, got_b) = client::<String, _>(&b, "/live", Text);

    // A steady stream (one message a millisecond: pacing, not waiting); Redis is killed a third
    // of the way through and started again at two thirds.
    const STREAM: u64 = 1500;
    for i in 0..STREAM {
        if i == 500 {
            redis.stop();
        }
        if i == 1000 {
            redis.restart();
        }
        a.send(TaggedData::new("/live", format!("m-{i}"))).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Cross-instance delivery resumes once both brokers are back: the tail all arrives.
    assert!(
        ba.wait_connected(WAIT) && bb.wait_connected(WAIT),
        "reconnect"
    );
    const TAIL: u64 = 200;
    for i in STREAM..STREAM + TAIL {
        a.send(TaggedData::new("/live", format!("m-{i}"))).unwrap();
    }
    let last = format!("m-{}", STREAM + TAIL - 1);
    assert!(
        wait_until(WAIT, || got_b.lock().last() == Some(&last)),
        "tail not delivered across instances"
    );
    let total = STREAM + TAIL;
    // Local delivery never stopped: every message, in order.
    assert!(wait_until(WAIT, || got_a.lock().len() as u64 == total));
    assert_eq!(
        numbers(&got_a.lock(), "m"),
        (0..total).collect::<Vec<_>>(),
        "local client"
    );
    // Across: a strictly increasing subsequence, the whole tail included.
    let across = numbers(&got_b.lock(), "m");
    assert!(across.windows(2).all(|w| w[0] < w[1]), "order across");
    assert!(across.ends_with(&(STREAM..total).collect::<Vec<_>>()));
    let (sa, sb) = (ba.stats(), bb.stats());
    let lost = total - across.len() as u64;
    assert!(lost > 0, "Redis was down for 500 messages: {sa:?} {sb:?}");
    assert_eq!(
        sa.dropped + sb.lost,
        lost,
        "counted losses: A dropped {}, B found {} missing; {lost} never arrived",
        sa.dropped,
        sb.lost
    );
    assert_eq!(sb.received, across.len() as u64);
    assert_eq!(sa.published + sa.dropped, total, "{sa:?}");
    let states = states.lock().clone();
    let down = states
        .iter()
        .position(|s| *s == ConnectionState::Reconnecting)
        .expect("Reconnecting while Redis was down");
    assert!(
        states[down..].contains(&ConnectionState::Connected),
        "{states:?}"
    );
    assert!(errors
        .lock()
        .iter()
        .any(|e| matches!(e, Error::Broker { .. })));
    assert!(
        WARNINGS
            .0
            .lock()
            .iter()
            .any(|w| w.starts_with("Broker down; cross-instance messages dropped")),
        "a WARN record says the broker is down"
    );
    a.dispose();
    b.dispose();
}

/// A Redis that hangs with its connections open (SIGSTOP) is noticed by the subscribing
/// connection's `PING` and the brokers reconnect once it answers again; answered pings on a
/// quiet, healthy Redis break nothing.
#[test]
fn a_hung_redis_is_noticed_by_ping_and_delivery_resumes_after_it() {
    let _one = serial();
    let redis = RedisServer::start();
    let pinging = |r: &RedisServer| {
        broker_with(r, |c| {
            c.ping_interval(Some(Duration::from_millis(100)))
                .io_timeout(Duration::from_millis(300))
                .connect_timeout(Duration::from_millis(300))
        })
    };
    let (ba, bb) = (pinging(&redis), pinging(&redis));
    let states: Arc<Mutex<Vec<ConnectionState>>> = Arc::default();
    let s = states.clone();
    bb.subscribe_state(move |st| s.lock().push(st));
    let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
    let e = errors.clone();
    bb.subscribe_errors(move |err| e.lock().push(err));
    let (a, b) = (server::<String>(&ba, Text), server::<String>(&bb, Text));
    let (_ca, got_a) = client::<String, _>(&a, "/h", Text);
    let (_cb, got_b) = client::<String, _>(&b, "/h", Text);

    a.send(TaggedData::new("/h", "before".to_string())).unwrap();
    assert!(wait_until(WAIT, || got_b
        .lock()
        .contains(&"before".to_string())));
    // Quiet for five ping intervals: every PING answered, the connections stay up.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !states.lock().contains(&ConnectionState::Reconnecting),
        "an answered PING broke the connection: {:?} {:?}",
        states.lock(),
        errors.lock()
    );

    redis.pause();
    assert!(
        wait_until(WAIT, || states
            .lock()
            .contains(&ConnectionState::Reconnecting)),
        "a hung Redis went unnoticed: {:?}",
        states.lock()
    );
    assert!(
        errors
            .lock()
            .iter()
            .any(|e| matches!(e, Error::Broker { reason, .. } if reason.contains("PING"))),
        "{:?}",
        errors.lock()
    );
    redis.resume();
    assert!(
        ba.wait_connected(WAIT) && bb.wait_connected(WAIT),
        "reconnect after the hang"
    );
    a.send(TaggedData::new("/h", "after".to_string())).unwrap();
    assert!(
        wait_until(WAIT, || got_b.lock().contains(&"after".to_string())),
        "cross-instance delivery did not resume: {:?}",
        got_b.lock()
    );
    assert_eq!(*got_a.lock(), ["before", "after"], "local delivery");
    a.dispose();
    b.dispose();
}

#[test]
fn dispose_joins_the_broker_threads_over_100_cycles() {
    let _one = serial();
    let redis = RedisServer::start();
    let base = support::live_threads_named("rxws");
    let mut names: HashMap<String, usize> = HashMap::new();
    for i in 0..100 {
        let br = broker(&redis, 64);
        let s = server::<String>(&br, Text);
        assert_eq!(br.thread_count(), 2, "cycle {i}");
        for t in ["rxws-broker-pub", "rxws-broker-sub"] {
            *names.entry(t.into()).or_default() += usize::from(support::thread_sleeping(t));
        }
        s.dispose();
        assert_eq!(br.thread_count(), 0, "cycle {i}");
        assert_eq!(br.connection_state(), ConnectionState::Closed, "cycle {i}");
        assert_eq!(
            support::live_threads_named("rxws"),
            base,
            "cycle {i}: {}",
            support::thread_report()
        );
    }
    // The threads are named as documented (seen asleep, waiting on Redis or the queue).
    assert!(names.values().all(|n| *n > 0), "{names:?}");
}

#[test]
fn without_redis_local_delivery_goes_on_and_cross_instance_messages_are_dropped_and_counted() {
    let _one = serial();
    // A port nobody listens on: the broker keeps retrying, the server keeps serving.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let br = RedisBroker::new(
        RedisConfig::new(&format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .retry(RetryPolicy::default().initial_delay(Duration::from_millis(20))),
    )
    .unwrap();
    let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
    let e = errors.clone();
    br.subscribe_errors(move |err| e.lock().push(err));
    let s = RxWSServer::<String>::bind_with_config("127.0.0.1:0", Text, roomy().broker(br.clone()))
        .unwrap();
    let (_c, got) = client::<String, _>(&s, "/chat", Text);
    for i in 0..10 {
        s.send(TaggedData::new("/chat", format!("m-{i}"))).unwrap();
    }
    assert!(wait_until(WAIT, || got.lock().len() == 10));
    // No local connection on the path and no Redis: the send says why.
    let err = s
        .send(TaggedData::new("/nobody", "x".to_string()))
        .unwrap_err()
        .into_error();
    assert!(matches!(err, Error::Broker { .. }), "{err}");
    assert_eq!(br.stats().dropped, 11);
    assert_eq!(br.stats().published, 0);
    assert_eq!(br.connection_state(), ConnectionState::Connecting);
    assert!(wait_until(WAIT, || errors
        .lock()
        .iter()
        .any(|e| matches!(e, Error::ConnectFailed { .. }))));
    s.dispose();
    assert_eq!(br.thread_count(), 0);
}

#[test]
fn bad_broker_configs_are_errors_and_one_broker_serves_one_server() {
    let _one = serial();
    assert!(matches!(
        RedisConfig::new("http://127.0.0.1/"),
        Err(Error::InvalidUrl { .. })
    ));
    let cfg = RedisConfig::new("redis://127.0.0.1:1/").unwrap();
    for bad in [
        cfg.clone().queue_capacity(0),
        cfg.clone().max_batch(0),
        cfg.clone().poll_interval(Duration::ZERO),
        cfg.clone().ping_interval(Some(Duration::ZERO)),
        cfg.clone().retry(RetryPolicy::default().factor(0.5)),
    ] {
        assert!(matches!(RedisBroker::new(bad), Err(Error::Config { .. })));
    }
    let br = RedisBroker::new(cfg).unwrap();
    let first =
        RxWSServer::<String>::bind_with_config("127.0.0.1:0", Text, roomy().broker(br.clone()))
            .unwrap();
    let second =
        RxWSServer::<String>::bind_with_config("127.0.0.1:0", Text, roomy().broker(br.clone()));
    assert!(matches!(
        second,
        Err(Error::Config {
            field: "broker",
            ..
        })
    ));
    first.dispose();
    assert_eq!(br.thread_count(), 0);
}

#[test]
fn dispose_is_bounded_while_a_remote_delivery_waits_on_a_peer_that_stopped_reading() {
    let _one = serial();
    let redis = RedisServer::start();
    let (ba, bb) = (broker(&redis, 4096), broker(&redis, 4096));
    let a = server::<Vec<u8>>(&ba, Binary);
    // B blocks its broadcasters on a full connection (queue of 1): its subscriber thread
    // waits there once B's peer stops reading.
    let b = RxWSServer::<Vec<u8>>::bind_with_config(
        "127.0.0.1:0",
        Binary,
        WSConfig::default()
            .no_heartbeat()
            .outbound(1, OverflowStrategy::Block)
            .broker(bb.clone()),
    )
    .unwrap();
    assert!(bb.wait_connected(WAIT));
    // A peer on B that completes its handshake and never reads again.
    let sock = std::net::TcpStream::connect(b.local_addr()).unwrap();
    let url = format!("ws://{}/blob", b.local_addr());
    let (_ws, _) = rxplus::tungstenite::client(url.as_str(), sock).unwrap();
    assert!(wait_until(WAIT, || b.connections("/blob").len() == 1));
    // 32 MiB through Redis: far more than the socket buffers hold.
    let blob = vec![7u8; 256 << 10];
    for _ in 0..128 {
        a.send(TaggedData::new("/blob", blob.clone())).unwrap();
    }
    assert!(
        wait_until(WAIT, || bb.stats().received >= 5),
        "deliveries under way: {:?}",
        bb.stats()
    );
    let t = std::time::Instant::now();
    b.dispose();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "dispose took {:?}",
        t.elapsed()
    );
    assert_eq!(bb.thread_count(), 0);
    a.dispose();
}

#[test]
fn out_of_retries_the_broker_closes_and_the_server_serves_locally() {
    let _one = serial();
    let mut redis = RedisServer::start();
    let retry = RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(20))
        .max_retries(Some(3));
    let br = RedisBroker::new(
        RedisConfig::new(&redis.url())
            .unwrap()
            .retry(retry)
            .poll_interval(Duration::from_millis(20)),
    )
    .unwrap();
    let errors: Arc<Mutex<Vec<Error>>> = Arc::default();
    let e = errors.clone();
    br.subscribe_errors(move |err| e.lock().push(err));
    let s = server::<String>(&br, Text);
    let (_c, got) = client::<String, _>(&s, "/chat", Text);
    redis.stop();
    // Both connections end for good: the subscriber gives up, and the publisher with it.
    assert!(wait_until(WAIT, || br.connection_state() == ConnectionState::Closed));
    assert!(wait_until(WAIT, || br.thread_count() == 0));
    assert!(errors
        .lock()
        .iter()
        .any(|e| matches!(e, Error::RetriesExhausted { attempts: 4, .. })));
    let before = br.stats().dropped;
    for i in 0..5 {
        s.send(TaggedData::new("/chat", format!("m-{i}"))).unwrap();
    }
    assert!(wait_until(WAIT, || got.lock().len() == 5), "local delivery");
    assert_eq!(br.stats().dropped, before + 5);
    assert_eq!(br.stats().published, 0);
    s.dispose();
}
